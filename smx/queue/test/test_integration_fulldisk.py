# -*- test-case-name: smx.queue.test.test_integration_fulldisk -*-
"""
Integration tests, end to end: C{twistd -n smx} (through the harness
L{smx.test.mta}) with its queue directory on a real 20 MB tmpfs (root
only) that fills while deferred mail is queued, and C{smx mailq} reading
the queue files of a running QMGR whose control socket it cannot use.
The next hop is a closed loopback port, so every message is deferred
(4xx) and retried every second.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict

from twisted.internet import defer
from twisted.trial.unittest import SkipTest, TestCase

from smx.queue.test.tmpfs import fill, mountTmpfs
from smx.test.mta import (
    MTA,
    SWAKS,
    configuration,
    freePort,
    missing,
    swaks,
    tempDirectory,
    until,
)


def deferringConfiguration(port: int, qmgr: str = "") -> str:
    """
    An smx.conf relaying remote.test to a closed port (every attempt is a
    temporary failure, retried every second), with a checkpoint of DEFEDB
    every second.
    """
    text = configuration(
        port,
        smtpc="remote_port = %d;" % (freePort("127.0.0.2"),),
        qmgr=qmgr,
        retry="1s",
    )
    old = 'DEFEDB { base_directory = "defedb"; }'
    assert old in text
    return text.replace(
        old,
        'DEFEDB { base_directory = "defedb"; delay_between_2_checkpoints = 1s; '
        "KBytes_written_for_checkpointing = 0; }",
    )


class _Base(TestCase):
    def need(self, *programs: str) -> None:
        reason = missing(*programs)
        if reason:
            raise SkipTest(reason)

    def startMTA(self, directory: str, qmgr: str = "") -> MTA:
        mta = MTA(self, directory)
        mta.write(
            deferringConfiguration(mta.port, qmgr),
            mt="localhost lmtp:\nremote.test [127.0.0.2]\n",
            aliases="alice: local:\n",
            access="cltaddr:127.0.0.1 relay\n",
        )
        mta.start()
        self.mta = mta
        return mta

    def assertTrueOrLog(self, ok: bool, what: str) -> None:
        if not ok:
            self.fail("%s; smx's log:\n%s" % (what, self.mta.log()))

    @defer.inlineCallbacks
    def send(self, marker: str) -> Any:
        out, err, status = yield swaks(
            self.mta.port,
            "--from",
            "alice@localhost",
            "--to",
            "bob@remote.test",
            "--body",
            marker,
        )
        return out.decode("utf-8", "replace"), status

    @defer.inlineCallbacks
    def status(self) -> Any:
        out, err, code = yield self.mta.smx("qmgrctl", "--json")
        self.assertEqual(code, 0, err)
        return json.loads(out)

    @defer.inlineCallbacks
    def waitForStatus(self, check: Any, what: str, timeout: float = 8.0) -> Any:
        last = {}  # type: Dict[str, Any]

        @defer.inlineCallbacks
        def poll() -> Any:
            last.update((yield self.status()))
            return check(last)

        deadline = timeout / 0.25
        while deadline > 0:
            if (yield poll()):
                return last
            yield until(lambda: False, 0.25)
            deadline -= 1
        self.fail("%s; last status %r; smx's log:\n%s" % (what, last, self.mta.log()))


class FullDiskTests(_Base):
    """
    The queue's file system fills while deferred mail is queued: smx
    stays up (no SIGBUS, no traceback), refuses new mail with 452 4.3.1,
    keeps the queue, and records deferrals in DEFEDB again once there is
    room, without a restart.
    """

    @defer.inlineCallbacks
    def test_queueDiskFills(self) -> Any:
        """
        A full 20 MB tmpfs queue with deferrals queued: no crash, no
        traceback, new mail refused with 452 4.3.1 at MAIL; after the
        filler is removed, new mail is accepted, and the deferrals (old
        and new) are in DEFEDB on disk, as C{smx mailq} reading the files
        shows.
        """
        self.need(SWAKS)
        mount = mountTmpfs(self, "20m")
        outside = tempDirectory(self)
        directory = os.path.join(mount, "smx")
        os.makedirs(directory)
        mta = MTA(self, directory)
        # the log off the full disk, so that every line can be checked
        mta.logFile = os.path.join(outside, "twistd.log")
        mta.write(
            deferringConfiguration(
                mta.port, qmgr="min_disk_space = 2MB; ok_disk_space = 3MB;"
            ),
            mt="localhost lmtp:\nremote.test [127.0.0.2]\n",
            aliases="alice: local:\n",
            access="cltaddr:127.0.0.1 relay\n",
        )
        mta.start()
        self.mta = mta
        for i in range(3):
            out, status = yield self.send("before %d" % (i,))
            self.assertEqual(status, 0, out)
        yield self.waitForStatus(
            lambda s: s["recipients"].get("deferred") == 3 and s["defedbPending"] == 0,
            "the three messages were not deferred",
        )

        filler = fill(mount)
        # the retries (every second) meet the full disk
        yield until(lambda: False, 1.5)
        self.assertIsNone(mta.process.poll(), "smx died:\n" + mta.log())
        out, status = yield self.send("while full")
        self.assertNotEqual(status, 0, out)
        self.assertIn("452 4.3.1", out)
        # the three are retried every second: wait for a moment between
        # two attempts, when none of them is active
        status = yield self.waitForStatus(
            lambda s: s["recipients"] == {"deferred": 3},
            "the three messages did not stay deferred on the full disk",
        )
        self.assertTrue(status["diskShort"])
        self.assertNotIn("Traceback", mta.log())
        self.assertIn("sev=ERR", mta.log())

        os.unlink(filler)
        yield self.waitForStatus(
            lambda s: s["defedb"] and s["defedbPending"] == 0,
            "DEFEDB did not take the deferrals again",
        )
        out, status = yield self.send("after")
        self.assertEqual(status, 0, out)
        yield self.waitForStatus(
            lambda s: s["recipients"].get("deferred") == 4 and s["defedbPending"] == 0,
            "the new message was not deferred",
        )
        # DEFEDB as its files have it (checkpointed every second)
        entries = []  # type: Any

        @defer.inlineCallbacks
        def allInDefedb() -> Any:
            out, err, code = yield mta.smx("mailq", "--offline", "--json")
            self.assertEqual(code, 0, err)
            entries[:] = json.loads(out)
            rcpts = [r for e in entries for r in e["recipients"]]
            return len(rcpts) == 4 and all(
                r["state"] == "deferred" and r["tries"] >= 1 for r in rcpts
            )

        for attempt in range(20):
            if (yield allInDefedb()):
                break
            yield until(lambda: False, 0.25)
        else:
            self.fail("DEFEDB's files do not have the deferrals: %r" % (entries,))
        self.assertIsNone(mta.process.poll())
        log = mta.log()
        self.assertNotIn("Traceback", log)
        self.assertIn("disk space short", log)
        self.assertEqual(mta.stop(), 0)
        self.assertNotIn("Traceback", mta.log())


class MailqWhileRunningTests(_Base):
    """
    C{smx mailq} when QMGR runs but cannot be asked (the control socket
    is wrong): it reads the queue files without touching DEFEDB's
    environment, and QMGR goes on undisturbed.
    """

    @defer.inlineCallbacks
    def test_failingControlCall(self) -> Any:
        """
        With a real QMGR running and a control socket that does not
        exist, C{smx mailq} says QMGR runs, lists the deferred message as
        DEFEDB's files have it, and does not recover the environment (the
        region files are the same files, unchanged); QMGR then still
        records deferrals and stops cleanly.
        """
        self.need(SWAKS)
        root = tempDirectory(self)
        mta = self.startMTA(os.path.join(root, "smx"))
        out, status = yield self.send("first")
        self.assertEqual(status, 0, out)
        yield self.waitForStatus(
            lambda s: s["recipients"].get("deferred") == 1,
            "the message was not deferred",
        )
        yield until(lambda: False, 1.5)  # a checkpoint
        defedb = mta.path("defedb")
        regions = {
            n: os.stat(os.path.join(defedb, n)).st_ino
            for n in os.listdir(defedb)
            if n.startswith("__db.")
        }
        self.assertTrue(regions)
        # mailq shows what the last checkpoint wrote (one a second): ask
        # again while the first checkpoint after the deferral is late
        for attempt in range(20):
            out, err, code = yield mta.smx(
                "mailq", "--json", "-S", os.path.join(root, "nothing.sock")
            )
            if code != 0 or json.loads(out):
                break
            yield until(lambda: False, 0.25)
        self.assertEqual(code, 0, err)
        err = err.decode()
        self.assertIn("reading the queue files", err)
        self.assertIn("QMGR pid %d runs" % (mta.process.pid,), err)
        [entry] = json.loads(out)
        [rcpt] = entry["recipients"]
        self.assertEqual(
            (rcpt["address"], rcpt["state"]), ("bob@remote.test", "deferred")
        )
        self.assertGreaterEqual(rcpt["tries"], 1)
        self.assertEqual(
            regions,
            {
                n: os.stat(os.path.join(defedb, n)).st_ino
                for n in os.listdir(defedb)
                if n.startswith("__db.")
            },
        )
        # QMGR goes on: a new deferral is recorded in DEFEDB
        out, status = yield self.send("second")
        self.assertEqual(status, 0, out)
        yield self.waitForStatus(
            lambda s: s["recipients"].get("deferred") == 2
            and s["defedb"]
            and s["defedbPending"] == 0,
            "the second message was not deferred",
        )
        self.assertEqual(mta.stop(), 0)
        log = mta.log()
        self.assertNotIn("Traceback", log)
        self.assertNotIn("sev=ERR", log)
        out, err, code = yield mta.smx("mailq", "--json")
        self.assertEqual(code, 0, err)
        self.assertEqual(len(json.loads(out)), 2)

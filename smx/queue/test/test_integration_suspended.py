# -*- test-case-name: smx.queue.test.test_integration_suspended -*-
"""
Integration tests: a real C{twistd -n smx} (L{smx.test.mta}), and split
mode's four processes, relaying to a loopback port nobody listens on,
then to a real Postfix C{smtp-sink} on that port: QMGR suspends the next hop that refuses connections (as
Postfix's queue manager, "delivery temporarily suspended") instead of
having SMTPC try it for every message.
"""

from __future__ import annotations

import os
import smtplib
import subprocess
from typing import Any, List

from twisted.internet import defer
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from smx.test.mta import (
    SMTP_SINK,
    SMX,
    SWAKS,
    MTATestCase,
    SmtpSink,
    configuration,
    missing,
    tempDirectory,
    until,
    waitFor,
)

MESSAGES = 12


class SuspendedNextHopTests(MTATestCase):
    """
    A next hop that refuses connections is tried once, then suspended.
    """

    def send(self, numbers: List[int]) -> None:
        with smtplib.SMTP("127.0.0.1", self.mta.port, timeout=10) as client:
            for n in numbers:
                client.sendmail(
                    "alice@localhost",
                    ["bob@remote.test"],
                    b"Subject: %d\r\n\r\nbody\r\nMARK-%d-END\r\n" % (n, n),
                )

    def connectAttempts(self) -> List[str]:
        """SMTPC's records of connections that could not be made."""
        return [
            line
            for line in self.mta.records("smtpc")
            if "where=connect" in line and "cannot connect" in line
        ]

    def suspendedResults(self) -> List[str]:
        """QMGR's records of recipients deferred as suspended."""
        return [
            line
            for line in self.mta.records("qmgr")
            if "rcpt=<bob@remote.test>" in line
            and "reply=451 4.4.1 delivery temporarily suspended: cannot connect" in line
        ]

    @defer.inlineCallbacks
    def test_suspendedThenDelivered(self) -> Any:
        """
        The first message is tried and refused; the next ones are deferred
        at once with "451 4.4.1 delivery temporarily suspended" and SMTPC
        makes no connection attempt for them; C{smx qmgrctl} shows the
        suspension.  Once a sink listens there, C{smx qmgrctl flush}
        (which ends the suspensions, as Postfix's C{postqueue -f}) gets
        every message delivered exactly once.
        """
        self.need(SMTP_SINK)
        sink = SmtpSink(self, self.root)
        self.mta.write(
            configuration(
                self.mta.port, smtpc="remote_port = %d;" % (sink.port,), retry="1h"
            ),
            mt="localhost lmtp:\nremote.test [%s]\n" % (sink.address,),
            aliases="alice: local:\n",
            access="cltaddr:127.0.0.1 relay\n",
        )
        self.mta.start()
        self.send([0])
        self.assertTrue(
            (
                yield until(
                    lambda: any(
                        "status=suspended" in line for line in self.mta.records("qmgr")
                    )
                )
            ),
            self.mta.log(),
        )
        self.send(list(range(1, MESSAGES)))
        self.assertTrue(
            (yield until(lambda: len(self.suspendedResults()) >= MESSAGES - 1)),
            self.mta.log(),
        )
        self.assertEqual(len(self.suspendedResults()), MESSAGES - 1)
        self.assertEqual(len(self.connectAttempts()), 1, self.mta.log())

        out, err, status = yield self.mta.smx("qmgrctl")
        self.assertEqual(status, 0, err)
        [line] = [x for x in out.decode().splitlines() if "suspended=" in x]
        self.assertEqual(line.split()[0], sink.address)

        sink.start()
        out, err, status = yield self.mta.smx("qmgrctl", "flush")
        self.assertEqual(status, 0, err)
        self.assertTrue(
            (yield until(lambda: len(sink.messages()) >= MESSAGES, timeout=10)),
            self.mta.log(),
        )
        yield until(lambda: False, timeout=0.3)
        messages = sink.messages()
        self.assertEqual(len(messages), MESSAGES)
        for n in range(MESSAGES):
            self.assertEqual(
                len([m for m in messages if b"MARK-%d-END" % (n,) in m]), 1
            )
        self.assertEqual(len(self.connectAttempts()), 1)


class SplitSuspendedNextHopTests(SynchronousTestCase):
    """
    The same in split mode: QMGR, SMAR, SMTPC and SMTPS as four processes
    (L{smx.split.test.test_integration_split.SplitSystem}).
    """

    retry = "1h"

    def test_suspendedThenDelivered(self) -> None:
        """
        Only the first message costs SMTPC a connection attempt; the
        others are deferred by QMGR as suspended; after a flush with the
        sink listening, each is delivered once.
        """
        from smx.split.test.test_integration_split import SplitSystem

        reason = missing(SWAKS, SMTP_SINK)
        if reason:
            raise SkipTest(reason)
        root = tempDirectory(self, "smx-split-")
        sink = SmtpSink(self, root)
        system = SplitSystem(self, root, sink)
        system.startAll()
        markers = ["dead-%d-%s" % (i, os.urandom(4).hex()) for i in range(4)]
        self.assertEqual(system.send(markers[0]), 250)
        self.assertTrue(
            waitFor(lambda: "status=suspended" in system.log("qmgr"), 20),
            system.log("qmgr")[-3000:],
        )
        for m in markers[1:]:
            self.assertEqual(system.send(m), 250)
        self.assertTrue(
            waitFor(
                lambda: system.log("qmgr").count("delivery temporarily suspended")
                >= len(markers) - 1,
                20,
            ),
            system.log("qmgr")[-3000:],
        )
        self.assertEqual(system.log("smtpc").count("cannot connect"), 1)
        sink.start()
        p = subprocess.run(
            [SMX, "qmgrctl", "-f", system.config, "-q", system.directory, "flush"],
            capture_output=True,
            timeout=30,
        )
        self.assertEqual(p.returncode, 0, p.stderr)

        def delivered() -> bool:
            messages = sink.messages()
            return all(any(m.encode() in x for x in messages) for m in markers)

        self.assertTrue(waitFor(delivered, 20), system.log("qmgr")[-3000:])
        waitFor(lambda: False, 0.3)
        messages = sink.messages()
        self.assertEqual(
            [sum(1 for x in messages if m.encode() in x) for m in markers],
            [1] * len(markers),
        )

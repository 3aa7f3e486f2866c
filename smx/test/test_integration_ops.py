# -*- test-case-name: smx.test.test_integration_ops -*-
"""
Integration tests of what a postmaster sees: smx run as a user runs it
(C{twistd -n smx --config smx.conf} as a child process, see
L{smx.test.mta}), its log files rotated as seed §6.8.1 says, its log
without Twisted's chatter, and the output of C{smx qmgrctl} and C{smx
mailq}.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from typing import Any, List

from twisted.internet import defer
from twisted.trial.unittest import SkipTest, TestCase

import smx
from smx.maps.test.dnsserver import startDNSServer
from smx.scripts.defaultconfig import writeDefaultConfiguration
from smx.test.mta import (
    MTATestCase,
    MTA,
    SMTP_SINK,
    SWAKS,
    SmtpSink,
    configuration,
    freePort,
    missing,
    swaks,
    tempDirectory,
    until,
    waitFor,
)


class _Base(MTATestCase):

    @defer.inlineCallbacks
    def send(self, recipient: str, body: str) -> Any:
        """
        Send a message to the running smx with swaks; it must be accepted.
        """
        out, err, status = yield swaks(
            self.mta.port,
            "--from",
            "alice@localhost",
            "--to",
            recipient,
            "--body",
            body,
        )
        self.assertEqual(status, 0, out + err)

    def signal(self, signum: int) -> None:
        assert self.mta.process is not None
        self.mta.process.send_signal(signum)


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


class LogRotationTests(_Base):
    """
    Log file rotation (seed §6.8.1): C{cp qmgr.log qmgr.log.0} then
    C{kill -USR2} rewinds the file; C{mv} then C{kill -USR2} makes a new
    one.
    """

    def startWithLogFile(self) -> str:
        self.need(SWAKS)
        self.mta.write(
            configuration(self.mta.port, qmgr='log { file = "qmgr.log"; }'),
            aliases="alice: local:\nbob: local:\n",
            access="",
        )
        self.mta.start()
        return self.mta.path("qmgr.log")

    @defer.inlineCallbacks
    def test_copyThenUSR2(self) -> Any:
        """
        After C{cp qmgr.log qmgr.log.0} and SIGUSR2 the log starts again
        from empty: it holds only the records of the next message, with
        no NUL bytes, and the copy holds the earlier ones.
        """
        path = self.startWithLogFile()
        yield self.send("alice@localhost", "first")
        self.assertTrue((yield until(lambda: b"stat=done" in _read(path))))
        shutil.copyfile(path, path + ".0")
        self.signal(signal.SIGUSR2)
        self.assertTrue(
            (yield until(lambda: os.path.getsize(path) == 0)),
            "not rewound: %r" % (_read(path),),
        )
        yield self.send("bob@localhost", "second")
        self.assertTrue((yield until(lambda: b"stat=done" in _read(path))))
        new = _read(path)
        self.assertNotIn(b"\0", new)
        self.assertIn(b"rcpt=<bob@localhost>", new)
        self.assertNotIn(b"rcpt=<alice@localhost>", new)
        self.assertNotIn(b"stat=started", new)
        old = _read(path + ".0")
        self.assertIn(b"stat=started", old)
        self.assertIn(b"rcpt=<alice@localhost>", old)
        self.assertNotIn(b"rcpt=<bob@localhost>", old)

    @defer.inlineCallbacks
    def test_moveThenUSR2(self) -> Any:
        """
        After C{mv qmgr.log qmgr.log.0} and SIGUSR2 the new records go to
        a new C{qmgr.log}; the moved file keeps the earlier ones.
        """
        path = self.startWithLogFile()
        yield self.send("alice@localhost", "first")
        self.assertTrue((yield until(lambda: b"stat=done" in _read(path))))
        os.rename(path, path + ".0")
        self.signal(signal.SIGUSR2)
        self.assertTrue((yield until(lambda: os.path.exists(path))))
        yield self.send("bob@localhost", "second")
        self.assertTrue((yield until(lambda: b"stat=done" in _read(path))))
        new = _read(path)
        self.assertIn(b"rcpt=<bob@localhost>", new)
        self.assertNotIn(b"stat=started", new)
        old = _read(path + ".0")
        self.assertIn(b"rcpt=<alice@localhost>", old)
        self.assertNotIn(b"rcpt=<bob@localhost>", old)


class QuietLogTests(_Base):
    """
    Twisted's own lines that tell a postmaster nothing are not in smx's
    log; smx's own records are single tokens per value.
    """

    @defer.inlineCallbacks
    def test_dnsQueries(self) -> Any:
        """
        A message relayed by MX (several DNS queries, each on its own UDP
        port) leaves no "Starting protocol" or "Stopping protocol" lines.
        """
        sink = self.startRelayByMX(aliases="alice: local:\n")
        yield self.send("bob@remote.test", "relay END")
        self.assertTrue((yield until(lambda: sink.containing(b"relay END"))))
        yield until(lambda: "stat=done" in self.mta.log())
        log = self.mta.log()
        self.assertNotIn("Starting protocol", log)
        self.assertNotIn("Stopping protocol", log)
        self.assertNotIn("DNSDatagramProtocol", log)

    @defer.inlineCallbacks
    def test_qmgrctl(self) -> Any:
        """
        C{smx qmgrctl} and C{smx mailq} calls leave no lines of the AMP
        control connection in the log; C{smx qmgrctl -r} leaves its reload
        records.
        """
        self.mta.write(
            configuration(self.mta.port), aliases="alice: local:\n", access=""
        )
        self.mta.start()
        self.assertTrue((yield until(lambda: "qmgr.ctl" in self.mta.log())))
        before = len(self.mta.log().splitlines())
        for args in (["qmgrctl"], ["qmgrctl", "-r"], ["mailq"]):
            out, err, status = yield self.mta.smx(*args)
            self.assertEqual(status, 0, err)
        self.assertTrue((yield until(lambda: "reload=maps" in self.mta.log())))
        new = self.mta.log().splitlines()[before:]
        self.assertEqual(
            [line for line in new if "[smx." not in line], [], "\n".join(new)
        )

    def test_startupRecords(self) -> None:
        """
        The start-up records of smx hold no phrases with encoded commas:
        the access map that is not there (and is not needed) is reported
        as C{status=absent, used=no}.
        """
        text = configuration(self.mta.port).replace("8bitmime, access", "8bitmime")
        text = text.replace('access { name = "access.db"; }', "")
        self.mta.write(text, aliases="alice: local:\n")
        self.mta.start()
        self.assertTrue(waitFor(lambda: "stat=started" in self.mta.log()))
        records = self.mta.records("smar") + self.mta.records("qmgr")
        for record in records:
            self.assertNotIn("%2C", record)
            self.assertNotIn("sev=", record)
        self.assertIn(
            "map=access, file=%s, status=absent, used=no"
            % (self.mta.path("access.db"),),
            records,
        )


class ToolOutputTests(_Base):
    """
    What C{smx qmgrctl} and C{smx mailq} print.
    """

    @defer.inlineCallbacks
    def test_localDestination(self) -> Any:
        """
        After a local delivery C{smx qmgrctl} names the local destination
        (the LMTP socket) and prints its numbers like the other values,
        not as a Python dict.
        """
        self.need(SWAKS)
        self.mta.write(
            configuration(self.mta.port), aliases="alice: local:\n", access=""
        )
        self.mta.start()
        yield self.send("alice@localhost", "local")
        self.assertTrue((yield until(lambda: "stat=done" in self.mta.log())))
        out, err, status = yield self.mta.smx("qmgrctl")
        self.assertEqual(status, 0, err)
        text = out.decode()
        self.assertNotIn("{", text)
        self.assertNotIn("'", text)
        lines = text.splitlines()
        start = lines.index("destinations:")
        self.assertRegex(
            lines[start + 1],
            r"^    local \(LMTP_socket\) +limit=\d+ open=0$",
        )
        self.assertRegex(text, r"(?m)^    conf +\(none\)$")

    @defer.inlineCallbacks
    def test_mailqErrors(self) -> Any:
        """
        C{smx mailq}'s messages name C{smx mailq}, also when QMGR cannot be
        reached over the control socket.
        """
        directory = self.mta.directory
        with open(self.mta.config, "w") as f:
            f.write(configuration(self.mta.port))
        os.makedirs(os.path.join(directory, "ibdb"))
        out, err, status = yield self.mta.smx("mailq")
        self.assertEqual(status, 0, err)
        lines = err.decode().splitlines()  # type: List[str]
        self.assertTrue(lines)
        for line in lines:
            self.assertTrue(line.startswith("smx mailq: "), line)
        self.assertIn("cannot talk to QMGR", lines[0])


class MakeRunTests(TestCase):
    """
    C{make run}, the README's first command (without its install step:
    C{make -o install run}), in a copy of the Makefile with the queue
    directory C{var} already configured for a free port.
    """

    def test_stopWithSIGTERM(self) -> None:
        """
        The process make starts is twistd itself, its pid is in
        C{var/smx.pid}; SIGTERM to that pid ends twistd and make with
        status 0 (no "make: *** Error 143") and removes the pid file.
        """
        top = os.path.dirname(os.path.dirname(os.path.abspath(smx.__file__)))
        makefile = os.path.join(top, "Makefile")
        make = shutil.which("make")
        if make is None or not os.path.exists(makefile):
            raise SkipTest("needs make and smx's Makefile")
        root = tempDirectory(self)
        shutil.copy(makefile, root)
        os.symlink(sys.prefix, os.path.join(root, ".venv"))
        port = freePort()
        conf = writeDefaultConfiguration(os.path.join(root, "var"))
        with open(conf) as f:
            text = f.read().replace("127.0.0.1:2525", "127.0.0.1:%d" % (port,))
        with open(conf, "w") as f:
            f.write(text)
        output = os.path.join(root, "make.out")
        with open(output, "wb") as out:
            process = subprocess.Popen(
                [make, "-o", "install", "run"],
                cwd=root,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.addCleanup(_killGroup, process)
        pidFile = os.path.join(root, "var", "smx.pid")
        started = waitFor(lambda: _greets(port) and os.path.exists(pidFile), 15)
        self.assertTrue(started, _read(output))
        with open(pidFile) as f:
            pid = int(f.read())
        with open("/proc/%d/stat" % (pid,)) as f:
            stat = f.read().rsplit(")", 1)[1].split()
        self.assertEqual(int(stat[1]), process.pid, "twistd is not make's child")
        os.kill(pid, signal.SIGTERM)
        self.assertEqual(process.wait(15), 0, _read(output))
        text = _read(output).decode()
        self.assertNotIn("Error", text)
        self.assertIn("Received SIGTERM", text)
        self.assertFalse(os.path.exists(pidFile))


def _greets(port: int) -> bool:
    """
    Whether an SMTP server answers on C{127.0.0.1:port} with a greeting
    (its reactor runs).
    """
    try:
        with socket.create_connection(("127.0.0.1", port), 1) as s:
            s.settimeout(5)
            return s.recv(4).startswith(b"220")
    except OSError:
        return False


def _killGroup(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

# -*- test-case-name: smx.queue.test.test_integration_control -*-
"""
Integration tests for the control socket (a real Unix socket, the real
reactor), C{smx mailq --offline} on real queue files and C{smx
recover-from-log}.
"""

import io
import json
import os
import shutil
import subprocess
import sys
import tempfile

from twisted.internet import reactor
from twisted.trial import unittest

from smx.config import configurationFromText
from smx.queue.control import callControl, listenControl
from smx.queue.test.test_qmgr import QueueManagerTestMixin
from smx.scripts import mailq, recoverlog


class ControlSocketTests(QueueManagerTestMixin, unittest.TestCase):
    """
    The AMP control protocol over a real Unix socket.
    """

    def setUp(self):
        self.setUpQueue()
        self.agent.outcome = lambda r: ("temp", 451, "451 4.4.1 down")
        short = tempfile.mkdtemp(prefix="smxq")
        self.addCleanup(shutil.rmtree, short, True)
        self.path = os.path.join(short, "ctl.sock")
        self.port = listenControl(reactor, self.path, self.qmgr)
        self.addCleanup(self.port.stopListening)

    def test_status(self):
        """
        C{status} returns the queue manager's counters.
        """
        self.submit()

        def check(status):
            self.assertEqual(status["transactions"], 1)
            self.assertEqual(status["recipients"], {"deferred": 1})

        return callControl(reactor, self.path, "status").addCallback(check)

    def test_listPaged(self):
        """
        C{list} returns every queued transaction, across several pages.
        """
        ids = [self.submit()[0] for i in range(250)]

        def check(entries):
            self.assertEqual([e["id"] for e in entries], sorted(ids))
            self.assertEqual(entries[0]["recipients"][0]["state"], "deferred")

        return callControl(reactor, self.path, "list").addCallback(check)

    def test_controlAndUnknown(self):
        """
        C{hold} works on a queued transaction; an unknown one is an error
        the client sees.
        """
        taId, _ = self.submit()

        def held(result):
            self.assertEqual(result["recipients"], 1)
            return callControl(reactor, self.path, "hold", "S0")

        d = callControl(reactor, self.path, "hold", taId)
        d.addCallback(held)
        return self.assertFailure(d, Exception)


class LongSocketNameTests(QueueManagerTestMixin, unittest.TestCase):
    """
    A control socket path longer than a Unix domain socket name may be.
    """

    def setUp(self):
        self.setUpQueue()

    def test_longNameNoDirectory(self):
        """
        A long name in a directory that does not exist fails at once with
        a message naming the path, instead of after the connection
        timeout.
        """
        path = "/tmp/" + "x" * 120 + "/qmgr.ctl"
        d = callControl(reactor, path, "status")
        f = self.failureResultOf(d, OSError)
        self.assertIn(path, f.getErrorMessage())
        self.assertIn("longer than 107 bytes", f.getErrorMessage())

    def test_longName(self):
        """
        A QMGR listening on a control socket whose path is longer than a
        socket name may be answers through it.
        """
        directory = os.path.join(os.path.abspath(self.mktemp()), "c" * 110)
        os.makedirs(directory)
        path = os.path.join(directory, "qmgr.ctl")
        port = listenControl(reactor, path, self.qmgr)
        self.addCleanup(port.stopListening)
        self.assertTrue(os.path.exists(path))
        d = callControl(reactor, path, "status")
        return d.addCallback(lambda status: self.assertEqual(status["transactions"], 0))


class MailqOfflineTests(QueueManagerTestMixin, unittest.TestCase):
    """
    C{smx mailq --offline --json} reads the queue files.
    """

    def setUp(self):
        self.setUpQueue()

    def test_offline(self):
        """
        The offline listing shows exactly the queued transactions.
        """
        self.agent.outcome = lambda r: ("temp", 451, "451 4.4.1 down")
        ids = sorted(
            self.submit(recipients=("b@y.test", "c@y.test"))[0] for i in range(3)
        )
        self.qmgr.stopService()
        conf = os.path.join(self.dir, "smx.conf")
        with open(conf, "w") as f:
            f.write("qmgr { control_socket = %s/none.sock; }\n" % (self.dir,))
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        cwd = os.getcwd()
        os.chdir(self.dir)
        try:
            self.assertEqual(mailq.run(["-f", conf, "--offline", "--json"]), 0)
        finally:
            os.chdir(cwd)
        entries = json.loads(out.getvalue())
        self.assertEqual([e["id"] for e in entries], ids)
        self.assertEqual(
            [r["state"] for r in entries[0]["recipients"]], ["deferred", "deferred"]
        )

    def test_offlineQueueDirectoryOption(self):
        """
        C{-q DIR} names the queue directory (relative names in the
        configuration are relative to it, seed §5.6), wherever mailq runs;
        that QMGR cannot be reached is said on standard error.
        """
        self.agent.outcome = lambda r: ("temp", 451, "451 4.4.1 down")
        [taId] = [self.submit(recipients=("b@y.test",))[0]]
        self.qmgr.stopService()
        conf = os.path.join(self.dir, "smx.conf")
        with open(conf, "w") as f:
            f.write('qmgr { control_socket = "none.sock"; }\n')
        # a short name of the queue directory (the socket name must fit
        # in 108 bytes)
        short = tempfile.mkdtemp(prefix="smxq")
        self.addCleanup(shutil.rmtree, short, True)
        queue = os.path.join(short, "q")
        os.symlink(os.path.abspath(self.dir), queue)
        # a program of its own: asking QMGR runs a reactor
        p = subprocess.run(
            [sys.executable, "-m", "smx.scripts.main", "mailq"]
            + ["-f", conf, "-q", queue, "--json"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual([e["id"] for e in json.loads(p.stdout)], [taId])
        self.assertIn(
            "cannot talk to QMGR at %s" % (os.path.join(queue, "none.sock"),),
            p.stderr,
        )
        self.assertIn("reading the queue files", p.stderr)

    def test_noQueue(self):
        """
        A directory that holds no queue is an error, not an empty queue.
        """
        empty = self.mktemp()
        os.makedirs(empty)
        conf = os.path.join(empty, "smx.conf")
        with open(conf, "w") as f:
            f.write("qmgr { }\n")
        out, err = io.StringIO(), io.StringIO()
        self.patch(sys, "stdout", out)
        self.patch(sys, "stderr", err)
        self.assertEqual(mailq.run(["-f", conf, "-q", empty, "--offline"]), 1)
        self.assertEqual(out.getvalue(), "")
        self.assertIn("no queue in %s" % (os.path.abspath(empty),), err.getvalue())

    def test_unreadableQueueFiles(self):
        """
        A plain user (C{nobody}, with C{runuser}) who may not read the
        queue: exit 1 and one line naming the directory, not a traceback.
        """
        from smx.scripts.test.throwaway import canRunPython, needRoot

        needRoot()
        if not canRunPython("nobody"):
            raise unittest.SkipTest(
                "nobody cannot run this interpreter (%s); build the environment "
                "with tools/bootstrap.sh from /usr/bin/python3" % (sys.executable,)
            )
        queue = tempfile.mkdtemp(prefix="smx-mailq-")
        self.addCleanup(shutil.rmtree, queue, True)
        os.chmod(queue, 0o755)
        ibdb = os.path.join(queue, "ibdb")
        os.mkdir(ibdb, 0o700)
        conf = os.path.join(queue, "smx.conf")
        with open(conf, "w") as f:
            f.write("qmgr { }\n")
        os.chmod(conf, 0o644)
        p = subprocess.run(
            ["runuser", "-u", "nobody", "--", sys.executable, "-c"]
            + [
                "import sys; from smx.scripts import mailq; sys.exit(mailq.run(sys.argv[1:]))"
            ]
            + ["-f", conf, "-q", queue, "--offline"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd="/",
        )
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertEqual(p.stdout, "")
        self.assertEqual(
            p.stderr,
            "smx mailq: cannot read the queue files: %s: Permission denied "
            "(the queue is for smx's user and root)\n" % (ibdb,),
        )

    def test_formatEmpty(self):
        """
        An empty queue says so.
        """
        self.assertEqual(mailq.formatQueue([]), "Mail queue is empty\n")


class RecoverFromLogTests(unittest.TestCase):
    """
    Tests for C{smx recover-from-log}'s log parser.
    """

    def test_parse(self):
        """
        Sender and recipients of a wanted transaction are found in SMTPS
        log records (seed App. C.2).
        """
        lines = [
            "ss_sess=S1, ss_ta=S2, mail=<a@x.test>, stat=0\n",
            "ss_sess=S1, ss_ta=S2, rcpt=<b@y.test>, idx=0, stat=0\n",
            "ss_sess=S1, ss_ta=S2, rcpt=<c%2Cd@y.test>, idx=1, stat=0\n",
            "ss_sess=S1, ss_ta=S3, rcpt=<x@y.test>, idx=0, stat=0\n",
        ]
        self.assertEqual(
            recoverlog.parseLog(lines, {"S2"}),
            {"S2": {"sender": "a@x.test", "recipients": ["b@y.test", "c,d@y.test"]}},
        )

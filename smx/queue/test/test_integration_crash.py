# -*- test-case-name: smx.queue.test.test_integration_crash -*-
"""
Integration test: a real child process commits a stream of transactions
through a real L{QueueManager} (real CDB files, real IBDB fsyncs, a real
Berkeley DB DEFEDB) and is killed with C{SIGKILL} in the middle; after
recovery every acknowledged transaction is delivered.
"""

import os
import signal
import subprocess
import sys
import time

from twisted.internet.task import Clock
from twisted.trial import unittest

from smx.log import Logger, MemorySink
from smx.mail.testing import FakeDeliveryAgent
from smx.maps.testing import FakeAddressResolver
from smx.queue.cdb import FileContentStore
from smx.queue.defedb import DeferredEnvelopeDB
from smx.queue.qmgr import QueueManager
from smx.queue.testing import defaultQueueSettings

ROUTE = {"mailer": "esmtp", "host": "h", "address": "127.0.0.2", "port": 25}
ROOT = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
)


class CrashRecoveryTests(unittest.TestCase):
    """
    Kill -9 in the middle of a stream of transactions, then recover.
    """

    def runChild(self, directory, acks, *options):
        """
        Run the child until it acknowledged C{acks} transactions (or, with
        C{--stall-group}, until it stalls a group commit: its ids are kept
        in C{self.group}), then kill it.
        """
        self.group = []
        env = dict(os.environ, PYTHONPATH=ROOT)
        proc = subprocess.Popen(
            [sys.executable, "-m", "smx.queue.test.crashchild", directory]
            + list(options),
            stdout=subprocess.PIPE,
            env=env,
            cwd=ROOT,
        )
        acked = []
        okays = set()
        deadline = time.time() + 20
        try:
            assert proc.stdout is not None
            while len(acked) < acks and time.time() < deadline:
                if self.group:
                    break
                line = proc.stdout.readline()
                if not line:
                    break
                self._parse(line, acked, okays)
            os.kill(proc.pid, signal.SIGKILL)
            rest = proc.stdout.read()
        finally:
            proc.wait()
        for line in rest.splitlines():
            self._parse(line, acked, okays)
        self.assertEqual(proc.returncode, -signal.SIGKILL)
        return acked, okays

    def _parse(self, line, acked, okays):
        parts = line.decode().split()
        if parts and parts[0] == "ACK":
            acked.append(parts[1])
        elif parts and parts[0] == "OK":
            okays.add((parts[1], parts[2]))
        elif parts and parts[0] == "GROUP":
            self.group = parts[1:]

    def recover(self, directory):
        """
        A L{QueueManager} started on the crashed queue (on a L{Clock}).

        @return: the queue manager, its clock and its delivery agent.
        """
        clock = Clock()
        clock.advance(time.time() + 3600)
        resolver = FakeAddressResolver()
        resolver.routes["@down.test"] = [ROUTE]
        resolver.routes["@up.test"] = [ROUTE]
        agent = FakeDeliveryAgent()
        qmgr = QueueManager(
            clock,
            # the Clock is no reactor to listen with
            defaultQueueSettings(directory, controlSocket=None),
            FileContentStore(directory),
            resolver,
            agent,
            logger=Logger("qmgr", sink=MemorySink()),
        )
        qmgr.startService()
        self.addCleanup(qmgr.stopService)
        clock.advance(0)
        clock.advance(1)
        return qmgr, clock, agent

    def undelivered(self, agent, okays, transactionIds):
        """
        The recipients of C{transactionIds} delivered neither before the
        crash (C{okays}) nor by C{agent} after recovery.
        """
        delivered = set(okays)
        for t in agent.transactions:
            for r in t["recipients"]:
                delivered.add((t["ss_ta"], r["address"]))
        return [
            (taId, a)
            for taId in transactionIds
            for a in ("b@down.test", "c@up.test")
            if (taId, a) not in delivered
        ]

    def test_killInGroupCommit(self):
        """
        A DEFEDB group commit (the deferrals of several transactions in
        one Berkeley DB transaction) cut by C{SIGKILL} before its commit
        leaves none of them in DEFEDB, and loses nothing: recovery finds
        those transactions in IBDB and delivers their recipients.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        acked, okays = self.runChild(directory, 100000, "--stall-group")
        self.assertGreaterEqual(len(self.group), 2)
        db = DeferredEnvelopeDB(os.path.join(directory, "defedb"), None, 0, 0, 0)
        db.open()
        try:
            stored = {envelope["id"] for envelope, _ in db.loadAll()}
        finally:
            db.close()
        self.assertEqual(stored & set(self.group), set())
        qmgr, clock, agent = self.recover(directory)
        # the group's transactions were committed to IBDB before their
        # first delivery (some may not have printed their ACK yet)
        missing = self.undelivered(agent, okays, set(acked) | set(self.group))
        self.assertEqual(missing, [])
        for taId in self.group:
            self.assertIn(taId, qmgr.recovered.transactions)
        self.assertEqual(qmgr.recovered.missing, [])

    def test_killMidStream(self):
        """
        Every transaction acknowledged before C{SIGKILL} is recovered: each
        recipient is delivered either before the crash or after recovery.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        acked, okays = self.runChild(directory, 400)
        self.assertGreaterEqual(len(acked), 400)
        qmgr, clock, agent = self.recover(directory)
        cdb = FileContentStore(directory)
        missing = self.undelivered(agent, okays, acked)
        self.assertEqual(missing, [])
        # everything was delivered: the queue is empty and the content gone
        clock.advance(1)
        self.assertEqual(self.successResultOf(qmgr.listQueue()), [])
        for taId in acked:
            self.assertFalse(cdb.exists(taId), taId)
        # nothing was reported missing, and recovery had work to do
        self.assertEqual(qmgr.recovered.missing, [])
        self.assertGreater(len(qmgr.recovered.transactions), 0)
        self.assertGreater(qmgr.recovered.fromDefedb, 0)

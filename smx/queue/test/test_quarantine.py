# -*- test-case-name: smx.queue.test.test_quarantine -*-
"""
Tests of QMGR's side of a milter's quarantine (L{smx.mail.milterhooks},
doc/milter.md): a transaction committed with C{"quarantine"} is held,
over real files (IBDB, DEFEDB, CDB) in a temporary directory.
"""

from twisted.trial import unittest

from smx.queue.test.test_qmgr import QueueManagerTestMixin


class QuarantineTests(QueueManagerTestMixin, unittest.TestCase):
    """
    A quarantined transaction is held, not delivered, until released.
    """

    def setUp(self):
        self.setUpQueue()

    def test_held(self):
        """
        Its recipients are held at once (logged with the reason), stay
        held across a restart, and a release delivers them.
        """
        taId, _ = self.submit(
            recipients=("b@y.test", "c@y.test"), quarantine="milter says so"
        )
        self.clock.advance(1)
        self.assertEqual(self.agent.transactions, [])
        [t] = self.successResultOf(self.qmgr.listQueue())
        self.assertEqual([r["state"] for r in t["recipients"]], ["held", "held"])
        self.assertIn("quarantine=milter says so, held=2", "\n".join(self.sink.lines()))
        self.restart()
        self.clock.advance(3 * 3600)
        self.assertEqual(self.agent.transactions, [])
        [t] = self.successResultOf(self.qmgr.listQueue())
        self.assertEqual([r["state"] for r in t["recipients"]], ["held", "held"])
        self.successResultOf(self.qmgr.control("release", taId))
        self.clock.advance(0.01)
        self.assertEqual(len(self.agent.transactions), 1)

    def test_notQuarantined(self):
        """Without a quarantine the transaction is delivered at once."""
        self.submit(quarantine=None)
        self.clock.advance(0.01)
        self.assertEqual(len(self.agent.transactions), 1)

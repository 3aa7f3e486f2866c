# -*- test-case-name: smx.queue.test.test_groupcommit -*-
"""
Tests for QMGR's group commit of deferrals to DEFEDB
(L{smx.queue.store.QueueStore.commitGroup}), with real IBDB and Berkeley
DB files on a L{Clock}.
"""

from twisted.trial import unittest

from smx.queue import ibdb
from smx.queue.store import GROUP_MAX
from smx.queue.test.test_qmgr import QueueManagerTestMixin


class GroupCommitTests(QueueManagerTestMixin, unittest.TestCase):
    """
    The deferrals of one reactor turn are written to DEFEDB in one
    Berkeley DB transaction, and only then noted in IBDB.
    """

    def setUp(self):
        self.setUpQueue()
        self.agent.outcome = lambda r: ("temp", 451, "451 4.4.1 down")
        self.groups = []
        putMany = self.qmgr.defedb.putMany

        def counting(changes):
            self.groups.append([envelope["id"] for envelope, _ in changes])
            return putMany(changes)

        self.qmgr.defedb.putMany = counting

    def deferredInIbdb(self):
        return {
            payload["id"]
            for kind, payload in ibdb.readLog(self.qmgr.ibdbDirectory, self.fail)
            if kind == ibdb.RECIPIENTS
            and any(state == "deferred" for _, state in payload["rcpts"])
        }

    def test_oneCommitPerTurn(self):
        """
        Transactions deferred in the same turn go to DEFEDB in one
        commit; then IBDB notes each recipient C{deferred}.
        """
        ids = [self.submit(commit=False)[0] for _ in range(3)]
        self.clock.advance(0.01)
        self.assertEqual(self.groups, [ids])
        stored = sorted(envelope["id"] for envelope, _ in self.qmgr.defedb.loadAll())
        self.assertEqual(stored, sorted(ids))
        for taId in ids:
            [r] = self.qmgr.store.transactions[taId].recipients.values()
            self.assertTrue(r.inDefedb)
        self.clock.advance(0.01)
        self.assertEqual(self.deferredInIbdb(), set(ids))

    def test_notStoredBeforeCommit(self):
        """
        Until the group commit a deferred recipient is not marked stored
        and IBDB keeps its transaction; a recipient that is final by the
        commit is left out of it.
        """
        taId, _ = self.submit()
        store = self.qmgr.store
        ta = store.transactions[taId]
        [r] = ta.recipients.values()
        self.assertTrue(r.inDefedb)
        self.groups[:] = []
        other, _ = self.submit(commit=False)
        commit = store.commitGroup
        seen = []

        def before():
            store.commitGroup = commit
            # the turn of the deferral is over: nothing written yet
            [o] = store.transactions[other].recipients.values()
            seen.append((o.state, o.inDefedb, store.transactions[other].needsLog()))
            # taId's recipient, deferred again in the same turn, is final
            # by the commit
            store.defer(ta, [r], group=True)
            r.state = "delivered"
            commit()

        store.commitGroup = before
        self.clock.advance(0.01)
        self.assertEqual(seen, [("deferred", False, True)])
        self.assertEqual(self.groups, [[other]])

    def test_groupMax(self):
        """
        At most L{GROUP_MAX} transactions wait: one more commits the
        group at once.
        """
        ids = [self.submit(commit=False)[0] for _ in range(GROUP_MAX + 1)]
        self.clock.advance(0.01)
        self.assertEqual(self.groups, [ids[:GROUP_MAX], ids[GROUP_MAX:]])

    def test_stopCommits(self):
        """
        QMGR's stop makes the group commit that waits.
        """
        taId, _ = self.submit(commit=False)
        # the IBDB commit and the delivery, but not the group commit
        self.qmgr.log.commit()
        self.assertEqual(self.groups, [])
        self.assertIn(taId, self.qmgr.store.grouped)
        self.qmgr.stopService()
        self.clock.advance(5)
        self.assertEqual(self.groups, [[taId]])

    def test_groupDelay(self):
        """
        With a C{groupDelay} the deferrals of that many seconds after the
        first go in one commit (QMGR's: IBDB's C{max_commit_delay}).
        """
        self.qmgr.store.groupDelay = 0.5
        first, _ = self.submit()
        self.clock.advance(0.2)
        second, _ = self.submit()
        self.assertEqual(self.groups, [])
        self.clock.advance(0.3)
        self.assertEqual(self.groups, [[first, second]])

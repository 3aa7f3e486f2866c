# -*- test-case-name: smx.queue.test.test_debug -*-
"""
Tests for L{smx.queue.debug}, the QMGR debug categories (seed App. E,
C{qmgr -x}), alone and in a L{QueueManager} with real IBDB and DEFEDB
files.
"""

from twisted.trial import unittest

from smx.config import configurationFromText
from smx.log import Logger, MemorySink, parseRecord
from smx.queue import debug as dbg
from smx.queue.settings import QueueSettings
from smx.queue.test.test_qmgr import QueueManagerTestMixin


class DebugLevelsTests(unittest.TestCase):
    """L{dbg.DebugLevels} and L{dbg.debug}."""

    def test_levels(self):
        """Named categories have their level, the others the default."""
        levels = dbg.DebugLevels.fromOptions(["1-3.4", "2.1"], default=2)
        self.assertEqual([levels.level(c) for c in (1, 2, 3, 4)], [4, 1, 4, 2])
        self.assertFalse(dbg.DebugLevels({}, 0))
        self.assertTrue(dbg.DebugLevels({}, 1))
        self.assertFalse(dbg.DebugLevels({3: 0}))

    def test_debug(self):
        """
        A record is written when the category's level is at least its
        own, whatever the log level; a plain L{Logger} writes none.
        """
        sink = MemorySink()
        logger = dbg.DebugLogger(
            Logger("qmgr", level=0, sink=sink), dbg.DebugLevels({3: 2})
        )
        dbg.debug(logger, dbg.SCHED, 1, ss_ta="S1", x=1)
        dbg.debug(logger, dbg.SCHED, 2, ss_ta="S1", x=2)
        dbg.debug(logger, dbg.SCHED, 3, ss_ta="S1", x=3)
        dbg.debug(logger, dbg.SMTPC, 1, ss_ta="S1", x=4)
        dbg.debug(Logger("qmgr", sink=sink), dbg.SCHED, 1, x=5)
        self.assertEqual(
            sink.records,
            [
                ("DEBUG", "dbg=3.1, ss_ta=S1, x=1"),
                ("DEBUG", "dbg=3.2, ss_ta=S1, x=2"),
            ],
        )

    def test_fromConfiguration(self):
        """
        The qmgr options debug_categories and debug_level become the
        L{DebugLevels} of the queue manager.
        """
        cfg = configurationFromText(
            "qmgr { debug_level = 1; debug_categories = { 5-6.3, 1.0 }; }"
        )
        levels = QueueSettings.fromConfiguration(cfg).debugLevels
        self.assertEqual(
            [levels.level(c) for c in range(1, 9)], [0, 1, 1, 1, 3, 3, 1, 1]
        )


class QueueManagerDebugTests(QueueManagerTestMixin, unittest.TestCase):
    """The records of each category in a running queue manager."""

    def records(self):
        return [
            parseRecord(line)
            for severity, line in self.sink.records
            if severity == "DEBUG" and line.startswith("dbg=")
        ]

    def test_categories(self):
        """
        With every category at level 2, a delivered and a deferred
        transaction show the records of SMTPS, IBDB, the scheduler, SMAR,
        SMTPC and DEFEDB; at the default level 0 there are none.
        """
        self.setUpQueue(debugLevels=dbg.DebugLevels({}, 2))
        self.qmgr.sessionOpen("S0", "127.0.0.1")
        taId, _ = self.submit()
        self.agent.outcome = lambda r: ("temp", 451, "451 4.3.0 later")
        taId2, _ = self.submit()
        self.qmgr.sessionClose("S0", "127.0.0.1")
        seen = {r["dbg"] for r in self.records()}
        for expected in ["1.1", "1.2", "2.1", "3.1", "4.2", "5.1", "5.2", "6.1"]:
            self.assertIn(expected, seen)
        [sync] = [r for r in self.records() if r["dbg"] == "2.1" and r["ss_ta"] == taId]
        self.assertEqual(sync["ibdb"], "synced")
        [deferred] = [r for r in self.records() if r["dbg"] == "6.2"]
        self.assertEqual(deferred["ss_ta"], taId2)
        self.assertEqual(deferred["next"], "100")

    def test_onlyNamedCategories(self):
        """Categories not named stay silent; a level limits the records."""
        self.setUpQueue(debugLevels=dbg.DebugLevels.fromOptions(["5.1"]))
        self.submit()
        self.assertEqual({r["dbg"] for r in self.records()}, {"5.1"})

    def test_none(self):
        """Without debug levels the queue manager writes no debug record."""
        self.setUpQueue()
        self.submit()
        self.assertEqual(self.records(), [])
        self.assertNotIsInstance(self.qmgr.logger, dbg.DebugLogger)

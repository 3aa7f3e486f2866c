# -*- test-case-name: smx.test.test_servicestop -*-
"""
Tests for L{smx.servicestop} and the stop order of L{smx.tap.SmxService}.
"""

from typing import Any, List

from twisted.application import service
from twisted.internet import defer
from twisted.trial import unittest

from smx.servicestop import stopInReverse


class Recording(service.Service):
    """A service whose stop waits for a L{Deferred} of the test."""

    def __init__(self, name: str, log: List[str], wait: bool = False) -> None:
        self.setName(name)
        self.log = log
        self.wait = wait
        self.stopping = None  # type: Any

    def stopService(self) -> Any:
        service.Service.stopService(self)
        self.log.append(self.name)
        if self.wait:
            self.stopping = defer.Deferred()
            return self.stopping
        return None


class Failing(service.Service):
    """A service whose stop raises."""

    name = "failing"

    def stopService(self) -> Any:
        raise RuntimeError("cannot stop")


class StopInReverseTests(unittest.TestCase):
    """
    L{stopInReverse} stops one service after the other, last first.
    """

    def test_waits(self) -> None:
        """
        A service stops only once the one after it has stopped; the
        result fires when all have.
        """
        log = []  # type: List[str]
        qmgr = Recording("qmgr", log)
        pmilter = Recording("pmilter", log, wait=True)
        smtps = Recording("smtps", log, wait=True)
        d = stopInReverse([qmgr, pmilter, smtps])
        self.assertEqual(log, ["smtps"])
        smtps.stopping.callback(None)
        self.assertEqual(log, ["smtps", "pmilter"])
        self.assertNoResult(d)
        pmilter.stopping.callback(None)
        self.assertEqual(log, ["smtps", "pmilter", "qmgr"])
        self.successResultOf(d)

    def test_synchronous(self) -> None:
        """Services that stop at once are all stopped at once."""
        log = []  # type: List[str]
        d = stopInReverse([Recording(n, log) for n in "abc"])
        self.successResultOf(d)
        self.assertEqual(log, ["c", "b", "a"])

    def test_failure(self) -> None:
        """A service that fails to stop is logged; the others stop."""
        log = []  # type: List[str]
        d = stopInReverse([Recording("a", log), Failing(), Recording("c", log)])
        self.successResultOf(d)
        self.assertEqual(log, ["c", "a"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_smxService(self) -> None:
        """
        L{smx.tap.SmxService} stops its children that way: QMGR (added
        before SMTPS) only once SMTPS has stopped.
        """
        from smx.tap import SmxService

        log = []  # type: List[str]
        root = SmxService(None, installSignals=False)
        Recording("qmgr", log).setServiceParent(root)
        smtps = Recording("smtps", log, wait=True)
        smtps.setServiceParent(root)
        root.startService()
        d = root.stopService()
        self.assertEqual(log, ["smtps"])
        smtps.stopping.callback(None)
        self.assertEqual(log, ["smtps", "qmgr"])
        self.successResultOf(d)
        self.assertFalse(root.running)

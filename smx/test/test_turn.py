# -*- test-case-name: smx.test.test_turn -*-
"""
Tests for L{smx.turn}: work at the end of the reactor's turn, by one
shared C{callLater(0)} (a L{Clock}) or, with L{runBeforePoll}, by a real
epoll reactor before it waits for events.
"""

from __future__ import annotations

from typing import Any, List

from twisted.internet import epollreactor
from twisted.internet.task import Clock
from twisted.trial import unittest

from smx import turn


class ClockTests(unittest.TestCase):
    """Without L{runBeforePoll}: one C{callLater(0)} for all the work."""

    def test_oneTimer(self) -> None:
        """
        Work asked for during a turn runs once the turn is over, in
        order, through one timer.
        """
        clock = Clock()
        done: List[str] = []
        turn.atEndOfTurn(clock, lambda: done.append("a"))
        turn.atEndOfTurn(clock, lambda: done.append("b"))
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        self.assertEqual(done, [])
        clock.advance(0)
        self.assertEqual(done, ["a", "b"])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_moreWork(self) -> None:
        """Work that asks for more work gets it in the same end of turn."""
        clock = Clock()
        done: List[str] = []

        def first() -> None:
            done.append("first")
            turn.atEndOfTurn(clock, lambda: done.append("second"))

        turn.atEndOfTurn(clock, first)
        clock.advance(0)
        self.assertEqual(done, ["first", "second"])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_failureLogged(self) -> None:
        """A piece of work that raises is logged; the others run."""
        clock = Clock()
        done: List[str] = []

        def broken() -> None:
            raise ZeroDivisionError()

        turn.atEndOfTurn(clock, broken)
        turn.atEndOfTurn(clock, lambda: done.append("after"))
        clock.advance(0)
        self.assertEqual(done, ["after"])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_notEpoll(self) -> None:
        """
        L{runBeforePoll} on a reactor that is not epoll's does nothing:
        the work still has its timer.
        """
        clock = Clock()
        self.assertFalse(turn.runBeforePoll(clock))
        turn.atEndOfTurn(clock, lambda: None)
        self.assertEqual(len(clock.getDelayedCalls()), 1)


class BeforePollTests(unittest.TestCase):
    """With L{runBeforePoll}: a real epoll reactor runs the work itself."""

    def setUp(self) -> None:
        self.reactor = epollreactor.EPollReactor()
        # the reactor's waker holds descriptors of its own
        self.addCleanup(self.reactor.waker.connectionLost, None)

    def test_noTimer(self) -> None:
        """
        The work of a turn sets no timer; it runs before the reactor's
        next wait for events, and a timer set by that work (here: stop
        the reactor at once) is not made to wait for the next event.
        """
        r = self.reactor
        self.assertTrue(turn.runBeforePoll(r))
        done: List[Any] = []

        def work() -> None:
            done.append("work")
            r.callLater(0, r.stop)

        def start() -> None:
            before = len(r.getDelayedCalls())
            turn.atEndOfTurn(r, work)
            done.append(len(r.getDelayedCalls()) - before)

        r.callWhenRunning(start)
        # a safety net only: the test fails if this is what stopped it
        guard = r.callLater(30, r.stop)
        r.run(installSignalHandlers=False)
        self.assertEqual(done, [0, "work"])
        self.assertTrue(guard.active())
        guard.cancel()

    def test_earlierWork(self) -> None:
        """
        Work asked for before L{runBeforePoll} (its timer set) is run by
        the reactor, and its timer is gone.
        """
        r = self.reactor
        done: List[str] = []
        turn.atEndOfTurn(r, lambda: done.append("early"))
        self.assertEqual(len(r.getDelayedCalls()), 1)
        self.assertTrue(turn.runBeforePoll(r))
        self.assertEqual(r.getDelayedCalls(), [])
        r.callWhenRunning(lambda: r.callLater(0, r.stop))
        r.run(installSignalHandlers=False)
        self.assertEqual(done, ["early"])

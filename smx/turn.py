# -*- test-case-name: smx.test.test_turn -*-
"""
NAME
    smx.turn - work done once, at the end of the reactor's turn

SYNOPSIS
    from smx.turn import atEndOfTurn
    atEndOfTurn(reactor, buffer.flush)   # before the reactor next waits

    runBeforePoll(reactor)   # split mode: the reactor runs that work itself

DESCRIPTION
    Several parts of smx collect work during a turn of the reactor and do
    it once, when the turn ends: the log buffers write their records
    (L{smx.log.TurnBuffer}), IBDB writes and syncs the records of the
    turn (its group commit), a TCP connection with nothing left to send
    closes (L{smx.net}).  With Twisted the way to say "at the end of this
    turn" is C{callLater(0, f)}: a timer on the reactor's heap of timers
    (kept in order by comparisons written in Python), and a next wait for
    events that returns at once, one iteration of the reactor more.

    L{atEndOfTurn} lets every such piece of work of a turn share one
    C{callLater(0)}.  Where the reactor's C{doIteration} is smx's
    (L{smx._twistedcompat.dispatchWithoutLogContext}, in the processes
    of split mode), L{runBeforePoll} makes the reactor run the work just
    before it waits for events, after the timers that were due, with no
    timer at all; work that sets a timer there (a C{callLater(0)} of its
    own) shortens that wait as the timer needs.

    The work runs in the order it was asked for; work that asks for more
    work gets it in the same end of turn.  An exception of one piece is
    logged and the others run.
"""

from __future__ import annotations

import weakref
from typing import Any, Callable, List, Optional

from twisted.python import log


class EndOfTurn:
    """
    The work waiting for the end of the turn of one reactor.

    @ivar beforePoll: the reactor runs L{run} before it waits for events
        (L{runBeforePoll}); else a C{callLater(0)} does.
    """

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.beforePoll = False
        self._pending = []  # type: List[Callable[[], Any]]
        self._call = None  # type: Any

    def add(self, work: Callable[[], Any]) -> None:
        """Run C{work()} at the end of this turn."""
        self._pending.append(work)
        if self.beforePoll or self._call is not None:
            return
        self._call = self.reactor.callLater(0, self._fromTimer)

    def _fromTimer(self) -> None:
        self._call = None
        self.run()

    def run(self) -> bool:
        """
        Run the waiting work (and the work it asks for).

        @return: whether there was any.
        """
        if not self._pending:
            return False
        while self._pending:
            work, self._pending = self._pending, []
            for f in work:
                try:
                    f()
                except Exception:
                    log.err(None, "work at the end of a reactor turn")
        return True


_ends = weakref.WeakKeyDictionary()  # type: weakref.WeakKeyDictionary[Any, EndOfTurn]
#: the L{EndOfTurn} asked for last (a process has one reactor: no look-up;
#: it keeps that reactor alive, which the weak dictionary alone would not)
_last = None  # type: Optional[EndOfTurn]


def endOfTurn(reactor: Any) -> EndOfTurn:
    """The L{EndOfTurn} of C{reactor}."""
    global _last
    end = _last
    if end is None or end.reactor is not reactor:
        end = _ends.get(reactor)
        if end is None:
            end = _ends[reactor] = EndOfTurn(reactor)
        _last = end
    return end


def atEndOfTurn(reactor: Any, work: Callable[[], Any]) -> None:
    """Run C{work()} at the end of C{reactor}'s current turn."""
    end = _last
    if end is None or end.reactor is not reactor:
        end = endOfTurn(reactor)
    end.add(work)


def runBeforePoll(reactor: Any) -> bool:
    """
    Make C{reactor} hand each ready descriptor to its selectable directly
    (L{dispatchWithoutLogContext}) and run the work of L{atEndOfTurn}
    before each wait for events.

    @return: whether it was done (C{False}: not the epoll reactor; the
        work is then run by a C{callLater(0)} as anywhere else).
    """
    # (imported here: L{smx.log} uses this module, and the programs that
    # only log need not import what L{smx._twistedcompat} imports)
    from smx._twistedcompat import dispatchWithoutLogContext

    end = endOfTurn(reactor)
    if not dispatchWithoutLogContext(reactor, beforePoll=end.run):
        return False
    end.beforePoll = True
    if end._call is not None:
        # asked for before: the reactor runs it now
        if end._call.active():
            end._call.cancel()
        end._call = None
    return True


__all__ = ["EndOfTurn", "atEndOfTurn", "endOfTurn", "runBeforePoll"]

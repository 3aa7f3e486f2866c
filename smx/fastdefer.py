# -*- test-case-name: smx.test.test_fastdefer -*-
"""
NAME
    smx.fastdefer - inlineCallbacks for generators that rarely wait, and
    a cheap DeferredList

SYNOPSIS
    @inlineCallbacks
    def checkRecipient(self, address):
        decision = yield self.resolver.checkRecipient(address, client)
        return decision

    (contentOk, _), (queuedOk, _) = yield settled([content, queued])

DESCRIPTION
    The policy checks of every SMTP command are generators that yield
    Deferreds which, with hash maps and cached answers, have almost always
    fired already.  Twisted's C{inlineCallbacks} pays for the general case
    on every call (a context copy, cancellation bookkeeping, a Deferred
    per step).  This L{inlineCallbacks} runs the generator directly while
    the Deferreds it yields have a result, and only when one has not does
    it wait for it with a callback.

    The result is a L{Deferred} as with Twisted's: already fired when the
    generator finished at once.  Cancelling it cancels the Deferred the
    generator waits for (the generator sees C{CancelledError}), as
    Twisted's does.  A yielded value that is not a Deferred is sent back
    at once.  Coroutines are not supported (Twisted's C{Deferred.fromCoroutine}
    is for those).

    L{onFailure} adds an errback only where there can be a failure to catch.

    L{settled} waits for several Deferreds as C{DeferredList(ds,
    consumeErrors=True)} does, without its per-result cost.
"""

from __future__ import annotations

import functools
import types
from typing import Any, Callable, List, Optional

from twisted.internet import defer
from twisted.python.failure import Failure

from smx._twistedcompat import hasFinalResult, succeeded


def inlineCallbacks(f: Callable[..., Any]) -> Callable[..., defer.Deferred]:
    """
    Like L{twisted.internet.defer.inlineCallbacks}, without its cost when
    every yielded Deferred has already fired.
    """

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> defer.Deferred:
        try:
            gen = f(*args, **kwargs)
        except BaseException:
            return defer.fail()
        if not isinstance(gen, types.GeneratorType):
            raise TypeError(
                "fastdefer.inlineCallbacks requires %r to produce a generator" % (f,)
            )
        return _drive(gen, None, False, None)

    return wrapper


def _handled(failure: Failure) -> None:
    return None


def _drive(
    gen: types.GeneratorType, result: Any, isFailure: bool, run: Optional[_Run]
) -> defer.Deferred:
    """
    Run C{gen} on from C{result} while what it yields has a result; a
    L{_Run} (C{run}, made at the first wait) waits for the rest.

    @return: the Deferred of the whole run.
    """
    while True:
        try:
            if isFailure:
                yielded = result.throwExceptionIntoGenerator(gen)
            else:
                yielded = gen.send(result)
        except StopIteration as e:
            if run is None:
                # finished without waiting: the usual case
                return succeeded(e.value)
            return _finish(run, e.value, False)
        except BaseException:
            return _finish(run, Failure(), True)
        if not isinstance(yielded, defer.Deferred):
            result, isFailure = yielded, False
            continue
        if hasFinalResult(yielded):
            # the usual case: taken as it is; a failure goes into the
            # generator, so it is handled (consumed here)
            result = yielded.result
            isFailure = isinstance(result, Failure)
            if isFailure:
                yielded.addErrback(_handled)
            continue
        if run is None:
            run = _Run(gen)
        return run.wait(yielded)


def _finish(run: Optional[_Run], value: Any, isFailure: bool) -> defer.Deferred:
    out = None if run is None else run.out
    if out is None:
        return defer.fail(value) if isFailure else succeeded(value)
    if not out.called:
        if isFailure:
            out.errback(value)
        else:
            out.callback(value)
    return out


class _Run:
    """
    A generator waiting for a Deferred it yielded: L{_drive} goes on with
    the result.
    """

    __slots__ = ("gen", "out", "waitingOn")

    def __init__(self, gen: types.GeneratorType) -> None:
        self.gen = gen
        self.out = None  # type: Optional[defer.Deferred]
        self.waitingOn = None  # type: Optional[defer.Deferred]

    def wait(self, d: defer.Deferred) -> defer.Deferred:
        self.waitingOn = d
        if self.out is None:
            self.out = defer.Deferred(self._cancel)
        d.addBoth(self._resume)
        return self.out

    def _resume(self, result: Any) -> None:
        self.waitingOn = None
        _drive(self.gen, result, isinstance(result, Failure), self)
        return None

    def _cancel(self, out: defer.Deferred) -> None:
        waiting = self.waitingOn
        if waiting is not None:
            waiting.cancel()


def onFailure(d: defer.Deferred, errback: Callable[[Failure], Any]) -> None:
    """
    C{d.addErrback(errback)}, skipped when C{d} has already succeeded
    (there is nothing for it to catch, and a callback costs more than
    the test).
    """
    if hasFinalResult(d) and not isinstance(d.result, Failure):
        return
    d.addErrback(errback)


def settled(deferreds: List[defer.Deferred]) -> defer.Deferred:
    """
    Like C{DeferredList(deferreds, consumeErrors=True)}, at a fraction of
    its cost: a L{Deferred} firing, once every one of C{deferreds} has,
    with their C{(succeeded, result)} pairs in order; their failures are
    consumed.  Cancelling it cancels them (it then fires with what they
    gave, as a DeferredList does).
    """
    results = [None] * len(deferreds)  # type: List[Any]
    left = [len(deferreds)]

    def cancel(_: defer.Deferred) -> None:
        for d in deferreds:
            d.cancel()

    done = defer.Deferred(cancel)  # type: defer.Deferred

    def one(result: Any, i: int) -> None:
        results[i] = (not isinstance(result, Failure), result)
        left[0] -= 1
        if not left[0] and not done.called:
            done.callback(results)
        return None

    if not deferreds:
        done.callback(results)
    for i, d in enumerate(deferreds):
        d.addBoth(one, i)
    return done

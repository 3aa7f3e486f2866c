# -*- test-case-name: smx.test.test_fastdefer -*-
"""
Tests for L{smx.fastdefer}.
"""

from twisted.internet import defer
from twisted.trial import unittest

from smx import fastdefer
from smx.fastdefer import inlineCallbacks


class InlineCallbacksTests(unittest.SynchronousTestCase):
    """
    The generator runs at once while its Deferreds have results, waits
    otherwise, and behaves like Twisted's C{inlineCallbacks}.
    """

    def test_firedAtOnce(self):
        """Fired Deferreds and plain values: the result is ready at once."""

        @inlineCallbacks
        def f(x):
            a = yield defer.succeed(x)
            b = yield 2
            return a + b

        self.assertEqual(self.successResultOf(f(40)), 42)

    def test_resultTakenAsIs(self):
        """
        The result of a Deferred that has fired is sent in without a
        callback being added to it.
        """
        fired = defer.succeed([1])

        @inlineCallbacks
        def f():
            value = yield fired
            return value

        self.assertEqual(self.successResultOf(f()), [1])
        self.assertEqual(fired.callbacks, [])

    def test_yieldedWhileItsCallbacksRun(self):
        """
        A Deferred yielded from one of its own callbacks has no final
        result yet: the generator waits for the rest of its callbacks.
        """
        d = defer.Deferred()
        results = []

        @inlineCallbacks
        def f():
            value = yield d
            results.append(value)

        d.addCallback(lambda r: f() and r)
        d.addCallback(lambda r: r + 1)
        d.callback(1)
        self.assertEqual(results, [2])

    def test_failureIntoGenerator(self):
        """
        A failed Deferred raises in the generator, which may catch it; the
        failure counts as handled.
        """

        @inlineCallbacks
        def f():
            try:
                yield defer.fail(ValueError("no"))
            except ValueError as e:
                return "caught " + str(e)

        self.assertEqual(self.successResultOf(f()), "caught no")
        self.assertEqual(self.flushLoggedErrors(ValueError), [])

    def test_exception(self):
        """An exception out of the generator fails the result."""

        @inlineCallbacks
        def f():
            yield defer.succeed(None)
            raise KeyError("k")

        self.failureResultOf(f(), KeyError)

    def test_exceptionBeforeFirstYield(self):
        """Also when raised before the first yield."""

        @inlineCallbacks
        def f():
            raise KeyError("k")
            yield

        self.failureResultOf(f(), KeyError)

    def test_waits(self):
        """An unfired Deferred is waited for; the run goes on after it."""
        pending = defer.Deferred()
        seen = []

        @inlineCallbacks
        def f():
            a = yield pending
            seen.append(a)
            b = yield defer.succeed(1)
            return a + b

        d = f()
        self.assertNoResult(d)
        pending.callback(41)
        self.assertEqual((self.successResultOf(d), seen), (42, [41]))

    def test_waitsForFailure(self):
        """A Deferred that fails later raises in the generator."""
        pending = defer.Deferred()

        @inlineCallbacks
        def f():
            yield pending

        d = f()
        pending.errback(ValueError("late"))
        self.failureResultOf(d, ValueError)

    def test_twoWaits(self):
        """Waiting twice in one run works."""
        first, second = defer.Deferred(), defer.Deferred()

        @inlineCallbacks
        def f():
            a = yield first
            b = yield second
            return (a, b)

        d = f()
        first.callback(1)
        self.assertNoResult(d)
        second.callback(2)
        self.assertEqual(self.successResultOf(d), (1, 2))

    def test_cancel(self):
        """
        Cancelling the result cancels the Deferred waited for; the
        generator sees CancelledError.
        """
        cancelled = []
        pending = defer.Deferred(lambda d: cancelled.append(d))

        @inlineCallbacks
        def f():
            yield pending

        d = f()
        d.cancel()
        self.assertEqual(cancelled, [pending])
        self.failureResultOf(d, defer.CancelledError)

    def test_notAGenerator(self):
        """A function that is not a generator is a TypeError."""

        @inlineCallbacks
        def f():
            return 1

        self.assertRaises(TypeError, f)


class SettledTests(unittest.SynchronousTestCase):
    """
    L{fastdefer.settled} gives what C{DeferredList(ds, consumeErrors=True)}
    gives.
    """

    def test_inOrderOnceAllFired(self):
        first, second = defer.Deferred(), defer.Deferred()
        d = fastdefer.settled([first, second])
        second.callback("b")
        self.assertNoResult(d)
        first.errback(ValueError("a"))
        [(ok1, r1), (ok2, r2)] = self.successResultOf(d)
        self.assertEqual((ok1, ok2, r2), (False, True, "b"))
        self.assertIsInstance(r1.value, ValueError)
        # the failure was consumed: nothing unhandled is left
        self.assertIsNone(self.successResultOf(first))

    def test_alreadyFired(self):
        d = fastdefer.settled([defer.succeed(1), defer.succeed(2)])
        self.assertEqual(self.successResultOf(d), [(True, 1), (True, 2)])

    def test_empty(self):
        self.assertEqual(self.successResultOf(fastdefer.settled([])), [])

    def test_cancel(self):
        cancelled = []
        waiting = defer.Deferred(cancelled.append)
        d = fastdefer.settled([defer.succeed(1), waiting])
        d.cancel()
        self.assertEqual(cancelled, [waiting])
        # as DeferredList: it fires with what they gave once cancelled
        [first, (ok, failure)] = self.successResultOf(d)
        self.assertEqual((first, ok), ((True, 1), False))
        self.assertIsInstance(failure.value, defer.CancelledError)


class OnFailureTests(unittest.SynchronousTestCase):
    """
    L{fastdefer.onFailure} catches a failure whenever it comes, and adds
    nothing to a Deferred that has already succeeded.
    """

    def test_succeeded(self):
        d = defer.succeed("ok")
        caught = []
        fastdefer.onFailure(d, caught.append)
        self.assertEqual(d.callbacks, [])
        self.assertEqual((caught, self.successResultOf(d)), ([], "ok"))

    def test_failed(self):
        caught = []
        fastdefer.onFailure(defer.fail(ValueError("no")), caught.append)
        [failure] = caught
        self.assertIsInstance(failure.value, ValueError)

    def test_failsLater(self):
        d = defer.Deferred()
        caught = []
        fastdefer.onFailure(d, caught.append)
        self.assertEqual(caught, [])
        d.errback(ValueError("later"))
        [failure] = caught
        self.assertIsInstance(failure.value, ValueError)

    def test_succeedsLater(self):
        d = defer.Deferred()
        caught = []
        fastdefer.onFailure(d, caught.append)
        d.callback("fine")
        self.assertEqual((caught, self.successResultOf(d)), ([], "fine"))

    def test_fromItsOwnCallback(self):
        """
        Asked from the last of C{d}'s callbacks, which then fails: the
        failure is caught all the same.
        """
        d = defer.Deferred()
        caught = []

        def callback(result):
            fastdefer.onFailure(d, caught.append)
            raise ValueError("in the callback")

        d.addCallback(callback)
        d.callback("fine")
        [failure] = caught
        self.assertIsInstance(failure.value, ValueError)

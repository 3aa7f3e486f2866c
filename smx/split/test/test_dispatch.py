# -*- test-case-name: smx.split.test.test_dispatch -*-
"""
Tests for L{smx.split.dispatch}: the same boxes and the same outcomes as
Twisted's AMP, for every way a responder can answer.
"""

from twisted.internet import defer
from twisted.internet.testing import StringTransport
from twisted.protocols import amp
from twisted.test import iosim
from twisted.trial import unittest

from smx.split.commands import PlainData
from smx.split.dispatch import FastCommand, LeanDispatch


def _arguments():
    return [
        (b"name", amp.Unicode()),
        (b"count", amp.Integer()),
        (b"maybe", amp.Unicode(optional=True)),
        (b"with-dash", amp.Float()),
        (b"data", PlainData()),
    ]


class Plain(amp.Command):
    commandName = b"Cmd"
    arguments = _arguments()
    response = [(b"reply", amp.Unicode()), (b"extra", amp.Integer(optional=True))]
    errors = {KeyError: b"KEY"}


class Fast(FastCommand):
    commandName = b"Cmd"
    arguments = _arguments()
    response = [(b"reply", amp.Unicode()), (b"extra", amp.Integer(optional=True))]
    errors = {KeyError: b"KEY"}


class OneWay(FastCommand):
    arguments = [(b"n", amp.Integer())]
    requiresAnswer = False


class AtOnce(FastCommand):
    arguments = [(b"n", amp.Integer())]
    response = [(b"n", amp.Integer())]
    answerAtOnce = True


ARGS = {
    "name": "n\u00e9",
    "count": 7,
    "maybe": None,
    "with_dash": 1.5,
    "data": [1, "x"],
}


class FastCommandTests(unittest.TestCase):
    """
    L{FastCommand} makes and parses the boxes L{amp.Command} does.
    """

    def test_sameBoxes(self):
        for args in (ARGS, dict(ARGS, maybe="here")):
            box = Fast.makeArguments(args, None)
            self.assertEqual(dict(box), dict(Plain.makeArguments(args, None)))
            self.assertIsInstance(box, amp.AmpBox)
            self.assertEqual(
                Fast.parseArguments(box, None), Plain.parseArguments(box, None)
            )
        for response in ({"reply": "r"}, {"reply": "r", "extra": 3}):
            box = Fast.makeResponse(response, None)
            self.assertEqual(dict(box), dict(Plain.makeResponse(response, None)))
            self.assertEqual(
                Fast.parseResponse(box, None), Plain.parseResponse(box, None)
            )
            self.assertEqual(Fast.parseResponse(box, None)["reply"], "r")

    def test_sameErrors(self):
        """
        An unknown argument, a missing one, a missing value in a box: the
        exceptions of L{amp.Command}.
        """
        for command in (Plain, Fast):
            self.assertRaises(
                amp.InvalidSignature, command.makeArguments, dict(ARGS, bad=1), None
            )
            partial = dict(ARGS)
            del partial["count"]
            self.assertRaises(KeyError, command.makeArguments, partial, None)
            box = Plain.makeArguments(ARGS, None)
            del box[b"name"]
            self.assertRaises(KeyError, command.parseArguments, box, None)
            self.assertRaises(KeyError, command.makeResponse, {}, None)
            # a call without a required argument
            e = self.assertRaises(amp.InvalidSignature, command, name="x")
            self.assertEqual(str(e), "forgot count, with_dash, data for b'Cmd'")
            self.assertEqual(command(**ARGS).structured, ARGS)


class Boom(Exception):
    pass


def serverClass(lean):
    calls = []

    class Server(amp.AMP):
        @Fast.responder
        def cmd(self, name, count, maybe, with_dash, data):
            calls.append(name)
            if name == "sync":
                return {"reply": "ok %d %s %s %r" % (count, maybe, with_dash, data)}
            if name == "later":
                d = defer.Deferred()
                self.later = d
                return d
            if name == "known":
                raise KeyError("no such thing")
            if name == "failed-later":
                return defer.fail(KeyError("later"))
            if name == "unknown":
                raise Boom("boom")
            if name == "unserializable":
                return {"wrong": 1}
            if name == "unserializable-later":
                return defer.succeed({"wrong": 1})
            raise AssertionError(name)

        @OneWay.responder
        def oneWay(self, n):
            calls.append(n)
            return {}

        @AtOnce.responder
        def atOnce(self, n):
            if n:
                return {"n": n}
            self.later = defer.Deferred()
            return self.later

    if lean:
        Server = type("LeanServer", (LeanDispatch, Server), {})
    return Server, calls


def _lost(proto):
    return proto.transport is None or bool(proto.transport.disconnecting)


class LeanDispatchTests(unittest.TestCase):
    """
    L{LeanDispatch} answers as L{amp.AMP} does, calling each responder
    once.
    """

    def call(self, lean, name, oneWay=False, finish=None):
        server, calls = serverClass(lean)
        client, srv, pump = iosim.connectedServerAndClient(server, amp.AMP)
        outcome = []
        if oneWay:
            client.callRemote(OneWay, n=5)
        else:
            client.callRemote(Fast, **dict(ARGS, name=name)).addBoth(outcome.append)
        pump.flush()
        if finish is not None:
            finish(srv)
            pump.flush()
        self.flushLoggedErrors(Boom, amp.BadLocalReturn)
        return outcome, calls, _lost(client) or _lost(srv)

    def both(self, name, **kw):
        plain = self.call(False, name, **kw)
        lean = self.call(True, name, **kw)
        return plain, lean

    def describe(self, outcome):
        (result,) = outcome
        if isinstance(result, dict):
            return result
        return (type(result.value), getattr(result.value, "errorCode", None))

    def test_sync(self):
        plain, lean = self.both("sync")
        self.assertEqual(lean[0], [{"reply": "ok 7 None 1.5 [1, 'x']", "extra": None}])
        self.assertEqual(lean[0], plain[0])
        self.assertEqual(lean[1:], (["sync"], False))

    def test_deferred(self):
        plain, lean = self.both(
            "later", finish=lambda s: s.later.callback({"reply": "done", "extra": 2})
        )
        self.assertEqual(lean[0], [{"reply": "done", "extra": 2}])
        self.assertEqual(lean, plain)

    def test_knownError(self):
        """
        A mapped exception crosses as AMP's error (the caller's command
        makes it a KeyError again); the connection stays.
        """
        for name in ("known", "failed-later"):
            plain, lean = self.both(name)
            self.assertEqual(self.describe(lean[0]), (KeyError, None))
            self.assertEqual(self.describe(lean[0]), self.describe(plain[0]))
            self.assertEqual(lean[1:], ([name], False))

    def test_unknownError(self):
        """
        An unexpected exception or an answer that does not fit the
        response: AMP's unknown error, the connection closed, the
        responder called once.
        """
        for name in ("unknown", "unserializable", "unserializable-later"):
            plain, lean = self.both(name)
            self.assertEqual(
                self.describe(lean[0]), (amp.UnknownRemoteError, b"UNKNOWN"), name
            )
            self.assertEqual(self.describe(lean[0]), self.describe(plain[0]))
            self.assertEqual(lean[1:], ([name], True))
            self.assertEqual(lean[1:], plain[1:])

    def test_oneWay(self):
        plain, lean = self.both("", oneWay=True)
        self.assertEqual(lean, ([], [5], False))
        self.assertEqual(lean, plain)

    def test_unhandled(self):
        """A command without responder: AMP's UnhandledCommand."""
        for lean in (False, True):
            server, _ = serverClass(lean)
            client, srv, pump = iosim.connectedServerAndClient(server, amp.AMP)
            outcome = []

            class Other(FastCommand):
                pass

            client.callRemote(Other).addBoth(outcome.append)
            pump.flush()
            self.assertIsInstance(outcome[0].value, amp.UnhandledCommand)


class _WritingTransport(StringTransport):
    """Counts the writes made now (C{doWrite}) and what was held then."""

    connected = True

    def __init__(self):
        StringTransport.__init__(self)
        self.flushed = []

    def doWrite(self):
        self.flushed.append(self.value())


class AnswerAtOnceTests(unittest.TestCase):
    """
    The answer of a command with C{answerAtOnce} is written at once, not
    at the reactor's next turn; other answers wait for it.
    """

    def server(self):
        server, _ = serverClass(True)
        proto = server()
        transport = _WritingTransport()
        proto.makeConnection(transport)
        return proto, transport

    def test_atOnce(self):
        proto, transport = self.server()
        proto.ampBoxReceived(amp.AmpBox(n=b"3", _ask=b"1", _command=b"AtOnce"))
        self.assertEqual(len(transport.flushed), 1)
        self.assertIn(b"_answer", transport.flushed[0])
        # later: when the answer is made
        proto.ampBoxReceived(amp.AmpBox(n=b"0", _ask=b"2", _command=b"AtOnce"))
        self.assertEqual(len(transport.flushed), 1)
        proto.later.callback({"n": 9})
        self.assertEqual(len(transport.flushed), 2)

    def test_notOthers(self):
        proto, transport = self.server()
        box = Fast.makeArguments(dict(ARGS, name="sync"), proto)
        box[b"_ask"] = b"1"
        box[b"_command"] = b"Cmd"
        proto.ampBoxReceived(box)
        self.assertIn(b"_answer", transport.value())
        self.assertEqual(transport.flushed, [])

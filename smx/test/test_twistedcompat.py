# -*- test-case-name: smx.test.test_twistedcompat -*-
"""
Tests for L{smx._twistedcompat}: one test per private name of Twisted
that smx relies on, checking that the name still exists and still does
what smx expects.  When one fails after a Twisted upgrade, the docstring
of the function it tests says which part of smx needs another way.

The tests that need a connection use real loopback sockets and the real
reactor.
"""

from __future__ import annotations

import configparser
import io
import os
import re
import socket
from typing import Any, Dict, List

from twisted.internet import defer, error, main, protocol, reactor, tcp, unix
from twisted.internet import task
from twisted.internet.abstract import FileDescriptor
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor
from twisted.names import dns, server
from twisted.python.failure import Failure
from twisted.scripts.twistd import ServerOptions
from twisted.trial import unittest

import twisted
from smx import _twistedcompat as compat

SETUP_CFG = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    "setup.cfg",
)


def _versionTuple(text: str) -> tuple:
    return tuple(int(n) for n in re.findall(r"\d+", text)[:3])


class SupportedRangeTests(unittest.SynchronousTestCase):
    """
    The installed Twisted is one that C{setup.cfg} says smx supports.
    """

    def test_installedTwistedInRange(self) -> None:
        """
        C{install_requires} pins Twisted to a range (a lower and an upper
        bound) and the Twisted these tests run with is inside it.
        """
        if not os.path.exists(SETUP_CFG):
            raise unittest.SkipTest("not run from a source tree")
        cfg = configparser.ConfigParser()
        cfg.read(SETUP_CFG)
        requires = cfg["options"]["install_requires"]
        [line] = [r for r in requires.splitlines() if r.strip().startswith("Twisted")]
        lower = re.search(r">=\s*([\d.]+)", line)
        upper = re.search(r"<\s*([\d.]+)", line)
        self.assertTrue(lower and upper, "no Twisted range in %r" % (line,))
        assert lower is not None and upper is not None
        installed = _versionTuple(twisted.__version__)
        self.assertGreaterEqual(installed, _versionTuple(lower.group(1)))
        self.assertLess(installed, _versionTuple(upper.group(1)))


class FinalResultTests(unittest.SynchronousTestCase):
    """
    L{compat.hasFinalResult} (C{Deferred._runningCallbacks}).
    """

    def test_runningCallbacks(self) -> None:
        """
        Not before the Deferred fires, nor while its callbacks run; once
        they have run, yes.
        """
        d: defer.Deferred = defer.Deferred()
        seen: List[bool] = []
        d.addCallback(lambda r: seen.append(compat.hasFinalResult(d)))
        self.assertFalse(compat.hasFinalResult(d))
        d.callback(None)
        self.assertEqual(seen, [False])
        self.assertTrue(compat.hasFinalResult(d))

    def test_paused(self) -> None:
        """
        Not while it waits for the Deferred a callback returned.
        """
        inner: defer.Deferred = defer.Deferred()
        d: defer.Deferred = defer.succeed(None)
        d.addCallback(lambda r: inner)
        self.assertFalse(compat.hasFinalResult(d))
        inner.callback(1)
        self.assertTrue(compat.hasFinalResult(d))
        self.assertEqual(self.successResultOf(d), 1)

    def test_attribute(self) -> None:
        """
        The attribute exists on a new Deferred and is false.
        """
        self.assertIs(defer.Deferred()._runningCallbacks, False)


class _Descriptor(FileDescriptor):
    """
    A file descriptor whose socket takes C{accept} bytes per write.
    """

    accept = 0
    written = b""
    TLS = False  # as a plain TCP transport

    def writeSomeData(self, data: Any) -> int:
        data = bytes(data)[: self.accept]
        self.written += data
        return len(data)

    def fileno(self) -> int:
        return -1


class BufferedWritesTests(unittest.SynchronousTestCase):
    """
    L{compat.hasBufferedWrites} (C{FileDescriptor._tempDataBuffer}),
    L{compat.canSendTCPNow} (also C{FileDescriptor._writeDisconnected}) and
    L{compat.writeDisconnecting} (also C{_writeDisconnecting}).
    """

    def _descriptor(self) -> _Descriptor:
        fd = _Descriptor(reactor=MemoryReactor())
        fd.connected = 1
        return fd

    def test_writeGoesToTempBuffer(self) -> None:
        """
        A write lands in C{_tempDataBuffer}, not yet in C{dataBuffer}, and
        counts as buffered.
        """
        fd = self._descriptor()
        self.assertFalse(compat.hasBufferedWrites(fd))
        self.assertTrue(compat.canSendTCPNow(fd))
        fd.write(b"abc")
        self.assertEqual(fd._tempDataBuffer, [b"abc"])
        self.assertEqual(fd.dataBuffer, b"")
        self.assertTrue(compat.hasBufferedWrites(fd))
        self.assertFalse(compat.canSendTCPNow(fd))

    def test_partlyWrittenStaysBuffered(self) -> None:
        """
        After C{doWrite} sent part of it, the rest (now in C{dataBuffer})
        still counts; once all is sent nothing does.
        """
        fd = self._descriptor()
        fd.write(b"abcdef")
        fd.accept = 2
        fd.doWrite()
        self.assertEqual(fd.written, b"ab")
        self.assertEqual(fd._tempDataBuffer, [])
        self.assertTrue(compat.hasBufferedWrites(fd))
        self.assertFalse(compat.canSendTCPNow(fd))
        fd.accept = 100
        fd.doWrite()
        self.assertEqual(fd.written, b"abcdef")
        self.assertFalse(compat.hasBufferedWrites(fd))
        self.assertTrue(compat.canSendTCPNow(fd))

    def test_writeDisconnected(self) -> None:
        """
        L{compat.canSendTCPNow} is true until C{loseWriteConnection}
        took effect; then false, and C{write} drops data.
        """
        fd = self._descriptor()
        self.assertTrue(compat.canSendTCPNow(fd))
        fd.loseWriteConnection()
        self.assertTrue(compat.canSendTCPNow(fd))
        fd.doWrite()
        self.assertFalse(compat.canSendTCPNow(fd))
        fd.write(b"late")
        self.assertFalse(compat.hasBufferedWrites(fd))

    def test_writeDisconnecting(self) -> None:
        """
        False while the writing half is open; true from
        C{loseWriteConnection} on, before and after it took effect.
        """
        fd = self._descriptor()
        self.assertFalse(compat.writeDisconnecting(fd))
        fd.loseWriteConnection()
        self.assertTrue(compat.writeDisconnecting(fd))
        fd.doWrite()
        self.assertTrue(compat.writeDisconnecting(fd))


class _Server(protocol.Protocol):
    def connectionMade(self) -> None:
        self.lost = self.factory.lost
        self.factory.connected.callback(self)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.lost.callback(reason.value)


class _Client(protocol.Protocol):
    def connectionMade(self) -> None:
        self.lost = self.factory.lost
        self.factory.connected.callback(self)
        self.received: List[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.lost.callback(reason.value)


class _MarkedClient(tcp.Client):
    """A client transport of our own class."""


class _Connector(compat.TCPConnector):
    clientClass = _MarkedClient


class ConnectionTests(unittest.TestCase):
    """
    L{compat.disconnectSelectable} (C{PosixReactorBase._disconnectSelectable})
    and L{compat.TCPConnector} (C{tcp.Connector._makeTransport}), on real
    loopback connections.
    """

    def _listen(self) -> protocol.Factory:
        f = protocol.Factory.forProtocol(_Server)
        f.connected = defer.Deferred()
        f.lost = defer.Deferred()
        port = reactor.listenTCP(0, f, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        f.port = port.getHost().port
        return f

    def _clientFactory(self) -> protocol.ClientFactory:
        c = protocol.ClientFactory.forProtocol(_Client)
        c.connected = defer.Deferred()
        c.lost = defer.Deferred()
        return c

    @defer.inlineCallbacks
    def test_connectorMakesItsTransport(self) -> Any:
        """
        C{connect} builds the connection with C{_makeTransport}, so the
        connection is an instance of the connector's C{transport}.
        """
        server = self._listen()
        client = self._clientFactory()
        connector = _Connector("127.0.0.1", server.port, client, 5, None, reactor)
        connector.connect()
        self.addCleanup(connector.disconnect)
        proto = yield client.connected
        self.assertIsInstance(proto.transport, _MarkedClient)
        yield server.connected

    @defer.inlineCallbacks
    def test_connectorReconnects(self) -> Any:
        """
        A connector connects again (as a reconnecting factory makes it do)
        with a new connection of its class.
        """
        server = self._listen()
        client = self._clientFactory()
        connector = _Connector("127.0.0.1", server.port, client, 5, None, reactor)
        connector.connect()
        self.addCleanup(connector.disconnect)
        first = yield client.connected
        yield server.connected
        first.transport.loseConnection()
        yield first.lost
        # the connector learns of the loss after the protocol does
        yield task.deferLater(reactor, 0, lambda: None)
        client.connected = defer.Deferred()
        client.lost = defer.Deferred()
        server.connected = defer.Deferred()
        server.lost = defer.Deferred()
        connector.connect()
        second = yield client.connected
        self.assertIsInstance(second.transport, _MarkedClient)
        self.assertIsNot(second.transport, first.transport)
        yield server.connected

    @defer.inlineCallbacks
    def test_disconnectSelectable(self) -> Any:
        """
        The connection is closed at once: the reactor stops watching it,
        the server's protocol gets C{ConnectionDone} and the client sees
        the end of the connection.
        """
        server = self._listen()
        client = self._clientFactory()
        connector = reactor.connectTCP("127.0.0.1", server.port, client, timeout=5)
        self.addCleanup(connector.disconnect)
        yield client.connected
        serverProto = yield server.connected
        transport = serverProto.transport
        self.assertIn(transport, reactor.getReaders())
        compat.disconnectSelectable(reactor, transport, main.CONNECTION_DONE, False)
        self.assertNotIn(transport, reactor.getReaders())
        self.assertNotIn(transport, reactor.getWriters())
        reason = yield server.lost
        self.assertIsInstance(reason, error.ConnectionDone)
        clientReason = yield client.lost
        self.assertIsInstance(
            clientReason, (error.ConnectionDone, error.ConnectionLost)
        )


class _SystemRecorder(protocol.Protocol):
    """Records the log context's C{system} of each C{dataReceived}."""

    def connectionMade(self) -> None:
        self.systems: List[Any] = []
        self.lost = defer.Deferred()
        self.factory.connected.callback(self)

    def dataReceived(self, data: bytes) -> None:
        from twisted.python import context, log

        self.systems.append(context.get(log.ILogContext)["system"])
        if data == b"boom":
            raise RuntimeError("boom")

    def connectionLost(self, reason: Any = None) -> None:
        self.reason = reason
        self.lost.callback(None)


class DispatchTests(unittest.TestCase):
    """
    L{compat.dispatchWithoutLogContext} (C{EPollReactor._poller},
    C{_selectables}, C{_PollLikeMixin._doReadOrWrite}) on the running
    reactor, with a real loopback connection.
    """

    @defer.inlineCallbacks
    def test_dispatch(self) -> Any:
        """
        Data reaches the protocol without a log context of its own
        (C{system} is C{"-"}, not the connection's prefix); an exception
        of C{dataReceived} is logged and ends the connection, as before.
        """
        import socket

        from twisted.internet import epollreactor

        self.assertFalse(compat.dispatchWithoutLogContext(MemoryReactor()))
        if not isinstance(reactor, epollreactor.EPollReactor):
            raise unittest.SkipTest("not the epoll reactor")
        f = protocol.Factory.forProtocol(_SystemRecorder)
        f.connected = defer.Deferred()
        port = reactor.listenTCP(0, f, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.assertTrue(compat.dispatchWithoutLogContext(reactor))
        self.addCleanup(delattr, reactor, "doIteration")
        c = socket.create_connection(("127.0.0.1", port.getHost().port), timeout=5)
        self.addCleanup(c.close)
        server = yield f.connected
        c.sendall(b"hello")
        while not server.systems:
            yield task.deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(server.systems, ["-"])
        c.sendall(b"boom")
        yield server.lost
        self.assertTrue(server.reason.check(RuntimeError))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class TwistdLogObserverTests(unittest.TestCase):
    """
    L{compat.twistdLogObserver} (C{_SomeApplicationRunner.loggerFactory}
    and C{_getLogObserver}).
    """

    def test_logfile(self) -> None:
        """
        With C{--logfile}, the observer writes events to that file.
        """
        path = self.mktemp()
        options = ServerOptions()
        options.parseOptions(["--nodaemon", "--logfile", path, "--pidfile="])
        observer = compat.twistdLogObserver(options)
        observer(
            {
                "log_format": "hello {who}",
                "who": "compat",
                "log_time": 0.0,
                "log_namespace": "smx.test",
                "log_system": "-",
            }
        )
        with open(path) as f:
            self.assertIn("hello compat", f.read())


class FileOfObserverTests(unittest.SynchronousTestCase):
    """
    L{compat.fileOfObserver} (C{FileLogObserver._outFile}).
    """

    def test_file(self) -> None:
        from twisted.logger import textFileLogObserver

        out = io.StringIO()
        self.assertIs(compat.fileOfObserver(textFileLogObserver(out)), out)


class AMPDispatchTests(unittest.SynchronousTestCase):
    """
    L{compat.ampResponder} (C{CommandLocator._commandDispatch}),
    L{compat.ampWrapResponder} (C{_wrapWithSerialization}),
    L{compat.ampCommandReceived} (C{BoxDispatcher._commandReceived}) and
    L{compat.ampSendAnswer} (C{BoxDispatcher._safeEmit}).
    """

    def test_dispatch(self) -> None:
        from twisted.protocols import amp
        from twisted.internet.testing import StringTransport

        class Echo(amp.Command):
            arguments = [(b"text", amp.Unicode())]
            response = [(b"text", amp.Unicode())]

        class Server(amp.AMP):
            @Echo.responder
            def echo(self, text: str) -> Dict[str, str]:
                return {"text": text + "!"}

        server = Server()
        transport = StringTransport()
        server.makeConnection(transport)
        command, function = compat.ampResponder(server, b"Echo")
        self.assertIs(command, Echo)
        self.assertEqual(function(server, text="a"), {"text": "a!"})
        self.assertIsNone(compat.ampResponder(server, b"Other"))
        doit = compat.ampWrapResponder(server, lambda **kw: {"text": "b"}, Echo)
        answers: List[Any] = []
        doit(amp.AmpBox(text=b"x")).addCallback(answers.append)
        self.assertEqual(answers, [amp.AmpBox(text=b"b")])
        compat.ampCommandReceived(
            server, amp.AmpBox(_command=b"Echo", _ask=b"7", text=b"d")
        )
        self.assertIn(b"d!", transport.value())
        compat.ampSendAnswer(server, amp.AmpBox(_answer=b"1", text=b"c"))
        self.assertIn(b"_answer", transport.value())
        transport.loseConnection()
        server.connectionLost(Failure(error.ConnectionDone()))
        # a lost connection is not an error
        compat.ampSendAnswer(server, amp.AmpBox(_answer=b"2"))


class MaildirNameGeneratorTests(unittest.SynchronousTestCase):
    """
    L{compat.MaildirNameGenerator} (C{maildir._MaildirNameGenerator}).
    """

    def test_names(self) -> None:
        """
        Names are bytes made of the clock's time, the pid, a counter and
        the host name, and different at the same time.
        """
        clock = Clock()
        clock.advance(1234.5)
        names = compat.MaildirNameGenerator(clock)
        first = names.generate()
        second = names.generate()
        self.assertIsInstance(first, bytes)
        self.assertNotEqual(first, second)
        self.assertTrue(first.startswith(b"1234.M"), first)
        self.assertRegex(first, rb"^1234\.M\d+P\d+Q\d+\.")
        self.assertNotIn(b"/", first)


class DNSTests(unittest.SynchronousTestCase):
    """
    L{compat.responseFromMessage} (C{DNSServerFactory._responseFromMessage})
    and L{compat.RecordResolverBase} (C{ResolverBase._lookup}).
    """

    def test_responseFromMessage(self) -> None:
        """
        The response answers the query: same id and question, the
        answer flag and the code asked for, no records.
        """
        query = dns.Message(id=4711, recDes=1)
        query.addQuery(b"example.test", dns.MX)
        factory = server.DNSServerFactory()
        response = compat.responseFromMessage(factory, query, rCode=dns.ESERVER)
        self.assertIsInstance(response, dns.Message)
        self.assertEqual(response.id, 4711)
        self.assertEqual(response.answer, 1)
        self.assertEqual(response.rCode, dns.ESERVER)
        self.assertEqual(response.queries, query.queries)
        self.assertEqual(response.answers, [])

    def test_lookupRecords(self) -> None:
        """
        Every C{lookup*} method and C{query} reach C{lookupRecords} with
        the name, class and type.
        """
        asked: List[tuple] = []

        class Resolver(compat.RecordResolverBase):
            def lookupRecords(self, name, cls, type, timeout=None):
                asked.append((name, cls, type))
                return defer.succeed(([], [], []))

        r = Resolver()
        self.successResultOf(r.lookupMailExchange("example.test"))
        self.successResultOf(r.lookupAddress("example.test"))
        self.successResultOf(r.query(dns.Query(b"example.test", dns.TXT)))
        self.assertEqual(
            asked,
            [
                (b"example.test", dns.IN, dns.MX),
                (b"example.test", dns.IN, dns.A),
                (b"example.test", dns.IN, dns.TXT),
            ],
        )


class _FakePort:
    """What a L{tcp.Server} asks of its port when it is made."""

    _realPortNumber = 25


class CanSendNowTests(unittest.SynchronousTestCase):
    """
    L{compat.canSendTCPNow} and L{compat.canSendUnixNow}: the test of
    L{smx.net}'s direct send, on real transports.
    """

    def _pair(self, family: int) -> "tuple[socket.socket, socket.socket]":
        a, b = socket.socketpair(family, socket.SOCK_STREAM)
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        return a, b

    def test_unix(self) -> None:
        """
        True for an open idle Unix transport; false with a producer,
        with bytes buffered, with a descriptor waiting, or disconnecting.
        """
        a, b = self._pair(socket.AF_UNIX)

        def transport() -> unix.Server:
            return unix.Server(a, protocol.Protocol(), None, None, 1, MemoryReactor())

        t = transport()
        self.assertTrue(compat.canSendUnixNow(t))
        t.producer = object()
        self.assertFalse(compat.canSendUnixNow(t))
        t = transport()
        t.write(b"x")
        self.assertFalse(compat.canSendUnixNow(t))
        t = transport()
        t.sendFileDescriptor(b.fileno())
        self.assertFalse(compat.canSendUnixNow(t))
        t = transport()
        t.disconnecting = True
        self.assertFalse(compat.canSendUnixNow(t))

    def test_tcp(self) -> None:
        """
        True for an open idle TCP transport; false with bytes buffered,
        once not connected, and once its writing half is shut.
        """
        a, b = self._pair(socket.AF_UNIX)

        def transport() -> tcp.Server:
            return tcp.Server(
                a,
                protocol.Protocol(),
                ("127.0.0.1", 1),
                _FakePort(),  # type: ignore[arg-type]
                1,
                MemoryReactor(),
            )

        t = transport()
        self.assertTrue(compat.canSendTCPNow(t))
        t.write(b"x")
        self.assertFalse(compat.canSendTCPNow(t))
        t = transport()
        t.connected = 0
        self.assertFalse(compat.canSendTCPNow(t))
        t = transport()
        t.loseWriteConnection()
        t.doWrite()
        self.assertFalse(compat.canSendTCPNow(t))


class SucceededTests(unittest.SynchronousTestCase):
    """
    L{compat.succeeded} makes the Deferred that C{defer.succeed} makes.
    """

    def test_sameAsSucceed(self) -> None:
        """
        Its attributes are those of C{defer.succeed}'s Deferred, and it
        behaves as one: callbacks run at once, errbacks are skipped,
        cancelling does nothing.
        """
        value = object()
        mine, theirs = compat.succeeded(value), defer.succeed(value)
        self.assertIs(type(mine), defer.Deferred)
        self.assertEqual(vars(mine), vars(theirs))
        self.assertIs(self.successResultOf(mine), value)
        seen: List[Any] = []
        d = compat.succeeded(1)
        d.addCallback(lambda r: r + 1).addErrback(seen.append)
        d.addCallback(seen.append)
        self.assertEqual(seen, [2])
        d.cancel()
        self.assertEqual(seen, [2])

    def test_debug(self) -> None:
        """
        With Deferred debugging on it is C{defer.succeed}'s, with the
        creator's stack.
        """
        defer.setDebugging(True)
        self.addCleanup(defer.setDebugging, False)
        d = compat.succeeded(3)
        self.assertIsNotNone(d._debugInfo)
        self.assertEqual(self.successResultOf(d), 3)

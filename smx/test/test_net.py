# -*- test-case-name: smx.test.test_net -*-
"""
Tests for L{smx.net}: TCP transports that send at once, over real
loopback sockets; Unix transports that send once per reactor turn, over
real Unix sockets.
"""

import os

from twisted.internet import defer, protocol, reactor
from twisted.internet.testing import MemoryReactor
from twisted.trial import unittest

from smx import net


class _Collect(protocol.Protocol):
    def connectionMade(self):
        self.factory.connected.callback(self)
        self.received = []

    def dataReceived(self, data):
        self.received.append(data)
        if sum(map(len, self.received)) >= self.factory.expect:
            self.transport.loseConnection()

    def connectionLost(self, reason):
        self.factory.done.callback(b"".join(self.received))


class _Sender(protocol.Protocol):
    def connectionMade(self):
        self.factory.connected.callback(self)


class _PairTests:
    """
    What the transports of L{net} have in common: writes reach the peer
    complete and in order, whether the kernel takes them at once or
    Twisted has to buffer the rest.  A subclass says how to listen and
    connect, and what ends a turn's writes.
    """

    def listen(self, factory):
        raise NotImplementedError()

    def connect(self, port, factory):
        raise NotImplementedError()

    def endTurn(self, transport):
        """The writes made so far go to the socket (or Twisted's buffer)."""

    def _pair(self, expect):
        server = protocol.Factory.forProtocol(_Collect)
        server.expect = expect
        server.connected = defer.Deferred()
        server.done = defer.Deferred()
        port = self.listen(server)
        self.addCleanup(port.stopListening)
        client = protocol.ClientFactory.forProtocol(_Sender)
        client.connected = defer.Deferred()
        connector = self.connect(port, client)
        self.addCleanup(connector.disconnect)
        return client.connected, server.done

    @defer.inlineCallbacks
    def test_largeWritesInOrder(self):
        """
        Writes larger than the socket buffer are finished by Twisted, and
        writes made meanwhile follow them, in order.
        """
        big = bytes(range(256)) * (16 * 1024)  # 4 MB
        total = 2 * len(big) + 6
        connected, done = self._pair(total)
        sender = yield connected
        sender.transport.write(b"start:")
        sender.transport.write(big)
        self.endTurn(sender.transport)
        self.assertIn(sender.transport, reactor.getWriters())
        sender.transport.write(big)
        received = yield done
        self.assertEqual(len(received), total)
        self.assertEqual(received, b"start:" + big + big)

    @defer.inlineCallbacks
    def test_writeThenClose(self):
        """
        Data written right before C{loseConnection} is delivered before
        the connection closes.
        """
        connected, done = self._pair(1 << 30)
        sender = yield connected
        sender.transport.write(b"last ")
        sender.transport.write(b"words")
        sender.transport.loseConnection()
        received = yield done
        self.assertEqual(received, b"last words")


class SendAtOnceTests(_PairTests, unittest.TestCase):
    """TCP transports that send at once."""

    def listen(self, factory):
        port = net.listenTCP(reactor, 0, factory, interface="127.0.0.1")
        self.assertIsInstance(port, net.Port)
        return port

    def connect(self, port, factory):
        return net.connectTCP(
            reactor, "127.0.0.1", port.getHost().port, factory, timeout=5
        )

    @defer.inlineCallbacks
    def test_smallWritesSentAtOnce(self):
        """
        A small write on an idle connection is sent without registering
        the socket for writing.
        """
        connected, done = self._pair(10)
        sender = yield connected
        self.assertIsInstance(sender.transport, net.Client)
        sender.transport.write(b"hello")
        self.assertNotIn(sender.transport, reactor.getWriters())
        sender.transport.writeSequence([b"wor", b"ld"])
        self.assertNotIn(sender.transport, reactor.getWriters())
        received = yield done
        self.assertEqual(received, b"helloworld")

    @defer.inlineCallbacks
    def test_closeWithoutWatchingWritability(self):
        """
        C{loseConnection} with nothing buffered closes at the end of the
        reactor's turn, without registering the socket for writing; the
        peer sees everything written before, then the end.
        """
        connected, done = self._pair(1 << 30)
        sender = yield connected
        sender.transport.write(b"bye")
        sender.transport.loseConnection()
        self.assertNotIn(sender.transport, reactor.getWriters())
        self.assertNotIn(sender.transport, reactor.getReaders())
        received = yield done
        self.assertEqual(received, b"bye")
        self.assertFalse(sender.transport.connected)

    @defer.inlineCallbacks
    def test_writeAfterClose(self):
        """
        Data written after C{loseConnection} (before the close happened)
        still reaches the peer.
        """
        connected, done = self._pair(1 << 30)
        sender = yield connected
        sender.transport.loseConnection()
        sender.transport.write(b"late")
        received = yield done
        self.assertEqual(received, b"late")

    def test_otherReactors(self):
        """
        With a reactor that is not Twisted's POSIX reactor (a unit test's
        memory reactor) the reactor's own methods are used.
        """
        memory = MemoryReactor()
        net.listenTCP(memory, 25, protocol.Factory(), backlog=7, interface="::1")
        net.connectTCP(memory, "192.0.2.1", 25, protocol.ClientFactory(), timeout=3)
        self.assertEqual(memory.tcpServers[0][0], 25)
        self.assertEqual(memory.tcpServers[0][2], 7)
        self.assertEqual(memory.tcpClients[0][:2], ("192.0.2.1", 25))


class _CountingSocket:
    """A socket whose C{send} calls are counted."""

    def __init__(self, sock):
        self._sock = sock
        self.sends = 0

    def send(self, data):
        self.sends += 1
        return self._sock.send(data)

    def __getattr__(self, name):
        return getattr(self._sock, name)


class SendAtEndOfTurnTests(_PairTests, unittest.TestCase):
    """
    The Unix transports of L{net.listenUNIX} and L{net.connectUNIX}: the
    writes of a turn go in one C{send} at its end.
    """

    def listen(self, factory):
        path = self.mktemp()
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        port = net.listenUNIX(reactor, path, factory)
        self.assertIsInstance(port, net.UNIXPort)
        return port

    def connect(self, port, factory):
        return net.connectUNIX(reactor, port.getHost().name, factory, timeout=5)

    def endTurn(self, transport):
        transport.sendTurnBytes()

    @defer.inlineCallbacks
    def test_oneSendPerTurn(self):
        """
        Writes of one turn are held until its end, then sent with one
        C{send}, without registering the socket for writing.
        """
        connected, done = self._pair(10)
        sender = yield connected
        self.assertIsInstance(sender.transport, net.UNIXClient)
        counting = sender.transport.socket = _CountingSocket(sender.transport.socket)
        sender.transport.write(b"hel")
        sender.transport.write(b"lo")
        sender.transport.writeSequence([b"wor", b"ld"])
        self.assertEqual(counting.sends, 0)
        self.assertNotIn(sender.transport, reactor.getWriters())
        received = yield done
        self.assertEqual(received, b"helloworld")
        self.assertEqual(counting.sends, 1)

    @defer.inlineCallbacks
    def test_abortDrops(self):
        """
        C{abortConnection} drops the bytes of the turn, as Twisted drops
        what it holds.
        """
        connected, done = self._pair(1 << 30)
        sender = yield connected
        counting = sender.transport.socket = _CountingSocket(sender.transport.socket)
        sender.transport.write(b"never")
        sender.transport.abortConnection()
        received = yield done
        self.assertEqual(received, b"")
        self.assertEqual(counting.sends, 0)

    @defer.inlineCallbacks
    def test_descriptorsLeftToTwisted(self):
        """
        Bytes written after C{sendFileDescriptor} go through Twisted's
        buffer, which sends the descriptor with them.
        """
        connected, done = self._pair(4)
        sender = yield connected
        r, w = os.pipe()
        self.addCleanup(os.close, r)
        self.addCleanup(os.close, w)
        sender.transport.sendFileDescriptor(r)
        sender.transport.write(b"fd!!")
        self.assertIsNone(sender.transport._turnBytes)
        self.assertIn(sender.transport, reactor.getWriters())
        received = yield done
        self.assertEqual(received, b"fd!!")

    def test_otherReactors(self):
        """
        With a reactor that is not Twisted's POSIX reactor the reactor's
        own methods are used.
        """
        memory = MemoryReactor()
        net.listenUNIX(memory, "/x/sock", protocol.Factory(), backlog=7, mode=0o600)
        net.connectUNIX(memory, "/x/sock", protocol.ClientFactory(), timeout=3)
        self.assertEqual(memory.unixServers[0][0], "/x/sock")
        self.assertEqual(memory.unixClients[0][0], "/x/sock")


class IsIPAddressTests(unittest.TestCase):
    """
    L{net.isIPAddress} tells address literals from host names.
    """

    def test_addresses(self):
        """
        IPv4 and IPv6 addresses, bare or in brackets, are addresses.
        """
        for name in ("192.0.2.1", "[192.0.2.1]", "::1", "[2001:db8::1]"):
            self.assertTrue(net.isIPAddress(name), name)

    def test_names(self):
        """
        Host names, the empty name, a tagged literal and a number out of
        range are not.
        """
        for name in ("mx.example", "", "[IPv6:2001:db8::1]", "192.0.2.256"):
            self.assertFalse(net.isIPAddress(name), name)

    def test_remembered(self):
        """
        The answer for a name is parsed once.
        """
        net.isIPAddress.cache_clear()
        net.isIPAddress("198.51.100.7")
        net.isIPAddress("198.51.100.7")
        self.assertEqual(net.isIPAddress.cache_info().hits, 1)

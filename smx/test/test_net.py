# -*- test-case-name: smx.test.test_net -*-
"""
Tests for L{smx.net}: TCP transports that send at once, over real
loopback sockets.
"""

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


class SendAtOnceTests(unittest.TestCase):
    """
    Writes reach the peer complete and in order, whether the kernel takes
    them at once or Twisted has to buffer the rest.
    """

    def _pair(self, expect):
        server = protocol.Factory.forProtocol(_Collect)
        server.expect = expect
        server.connected = defer.Deferred()
        server.done = defer.Deferred()
        port = net.listenTCP(reactor, 0, server, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.assertIsInstance(port, net.Port)
        client = protocol.ClientFactory.forProtocol(_Sender)
        client.connected = defer.Deferred()
        connector = net.connectTCP(
            reactor, "127.0.0.1", port.getHost().port, client, timeout=5
        )
        self.addCleanup(connector.disconnect)
        return client.connected, server.done

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
        sender.transport.write(b"last words")
        sender.transport.loseConnection()
        received = yield done
        self.assertEqual(received, b"last words")

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


#: a process serving the listening socket it inherited (argv: its
#: descriptor, "shared" for smx.net.adoptTCPPort or "plain" for Twisted's
#: adoptStreamPort): each connection gets the pid and is closed
_SERVE = """
import os, socket, sys
from twisted.internet import epollreactor
epollreactor.install()
from twisted.internet import protocol, reactor
from smx import net

class Greet(protocol.Protocol):
    def connectionMade(self):
        self.transport.write(b"%d\\n" % os.getpid())
        self.transport.loseConnection()

factory = protocol.Factory.forProtocol(Greet)
factory.noisy = False
fd = int(sys.argv[1])
if sys.argv[2] == "shared":
    port = net.adoptTCPPort(reactor, fd, socket.AF_INET, factory)
else:
    port = reactor.adoptStreamPort(fd, socket.AF_INET, factory)
os.write(1, b"ready %d\\n" % (getattr(port, "exclusive", False),))
reactor.run()
"""


def _wakeUps(pid):
    """
    How many times the main thread of process C{pid} has gone to sleep
    (its voluntary context switches): an idle reactor sleeps again after
    each wake-up.
    """
    with open("/proc/%d/status" % (pid,)) as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches")


class SharedPortTests(unittest.SynchronousTestCase):
    """
    Two processes serving one listening socket (as split mode's SMTPS
    processes serve the socket the MCP passes them), over real loopback
    connections.
    """

    connections = 24

    def _serve(self, how):
        """
        Start two processes serving one listening socket (C{how}:
        C{"shared"} or C{"plain"}), connect L{connections} times one
        after the other, letting both processes go idle in between.

        @return: per process, C{(connections served, wake-ups meanwhile)},
            and whether the shared port was registered with
            C{EPOLLEXCLUSIVE}.
        """
        import os
        import select
        import signal
        import socket
        import subprocess
        import sys
        import time

        if not os.path.exists("/proc/self/status"):
            raise unittest.SkipTest("no /proc")
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        listener.setblocking(False)
        fd = listener.fileno()
        root = os.path.dirname(os.path.dirname(os.path.abspath(net.__file__)))
        env = dict(os.environ, PYTHONPATH=root)
        children = []
        for _ in range(2):
            p = subprocess.Popen(
                [sys.executable, "-c", _SERVE, str(fd), how],
                pass_fds=(fd,),
                stdout=subprocess.PIPE,
                env=env,
            )
            children.append(p)

            def stop(p=p):
                if p.poll() is None:
                    os.kill(p.pid, signal.SIGKILL)
                p.wait()
                p.stdout.close()

            self.addCleanup(stop)
        exclusive = set()
        for p in children:
            ready, _, _ = select.select([p.stdout], [], [], 30)
            self.assertTrue(ready, "the child did not start")
            line = p.stdout.readline().split()
            self.assertEqual(line[0], b"ready")
            exclusive.add(line[1] == b"1")
        time.sleep(0.1)
        before = {p.pid: _wakeUps(p.pid) for p in children}
        served = {p.pid: 0 for p in children}
        for _ in range(self.connections):
            c = socket.create_connection(listener.getsockname(), timeout=10)
            with c:
                data = b""
                while not data.endswith(b"\n"):
                    chunk = c.recv(100)
                    if not chunk:
                        break
                    data += chunk
            served[int(data)] += 1
            time.sleep(0.03)
        woken = {pid: _wakeUps(pid) - before[pid] for pid in before}
        return (
            {pid: (served[pid], woken[pid]) for pid in served},
            exclusive == {True},
        )

    def test_sharedPortWakesOne(self):
        """
        With L{net.adoptTCPPort} (C{EPOLLEXCLUSIVE}) a connection wakes one
        of the two processes, the one that accepts it, and the
        connections go to both in turn.
        """
        counts, exclusive = self._serve("shared")
        if not exclusive:
            raise unittest.SkipTest("no EPOLLEXCLUSIVE (Linux 4.5) here")
        self.assertEqual(sum(c[0] for c in counts.values()), self.connections)
        # a wake-up per connection (and a few for a rare race)
        woken = sum(c[1] for c in counts.values())
        self.assertLessEqual(woken, self.connections + 4, counts)
        for served, _ in counts.values():
            self.assertGreaterEqual(served, self.connections // 4, counts)

    def test_plainPortWakesBoth(self):
        """
        Twisted's own adopted port (C{EPOLLIN}) wakes both processes for
        each connection, one of which finds nothing to accept: what
        L{test_sharedPortWakesOne} shows does not happen with
        L{net.adoptTCPPort}.
        """
        counts, _ = self._serve("plain")
        self.assertEqual(sum(c[0] for c in counts.values()), self.connections)
        woken = sum(c[1] for c in counts.values())
        self.assertGreaterEqual(woken, self.connections * 3 // 2, counts)

# -*- test-case-name: smx.milter.test.test_integration_policy -*-
"""
Integration tests of L{smx.milter.policyclient.PolicyClient} on real
sockets against real policy servers, each started and stopped by its
test on a loopback address or a temporary Unix socket:

  - misbehaving servers written here (silent, closing mid-reply, sending
    garbage, closing after every reply) on real Unix sockets;
  - C{postgrey} (Debian package C{postgrey}), the greylisting server;
  - C{policyd-spf} (Debian package C{postfix-policyd-spf-python}), which
    speaks the protocol on its standard input and output: C{socat}
    runs one per connection on a Unix socket, as Postfix's spawn(8)
    would, in a private mount namespace whose C{/etc/resolv.conf} names a
    Twisted Names server on 127.x.y.z port 53 that serves the SPF records
    (root only, as the resolver of pyspf reads only C{/etc/resolv.conf}).
"""

from __future__ import annotations

import os
import pwd
import random
import grp
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Any, List, Optional

from twisted.internet import defer, protocol, reactor, task
from twisted.internet.error import CannotListenError
from twisted.names import dns
from twisted.trial import unittest

from smx.log import Logger, MemorySink
from smx.maps.test.dnsserver import TestDNSServerFactory, TestZoneResolver
from smx.milter.policy import PolicySession, PolicyTransaction, policyAttributes
from smx.milter.policyclient import PolicyClient
from smx.test.mta import freePort, waitFor


def _accepts(path: str) -> bool:
    """
    Does the Unix socket C{path} accept connections (not merely exist)?
    """
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


POSTGREY = "/usr/sbin/postgrey"
POLICYD_SPF = "/usr/bin/policyd-spf"
SOCAT = "/usr/bin/socat"
UNSHARE = "/usr/bin/unshare"

SESSION = PolicySession(
    clientAddress="192.0.2.1",
    clientPort=41000,
    clientName="mx.example.com",
    reverseClientName="mx.example.com",
    serverAddress="127.0.0.1",
    serverPort=25,
    heloName="mx.example.com",
    protocolName="ESMTP",
)


def transaction(sender: str, instance: str) -> PolicyTransaction:
    """A transaction of C{sender} with its own C{instance}."""
    return PolicyTransaction(instance=instance, queueId=instance, sender=sender)


def sleep(seconds: float) -> defer.Deferred:
    """A L{Deferred} that fires after C{seconds} of real time."""
    return task.deferLater(reactor, seconds, lambda: None)


class _Daemon:
    """
    A program run in its own session (process group) for one test.
    """

    def __init__(self, argv: List[str], log: str) -> None:
        self.argv = argv
        self.logPath = log
        self.process = None  # type: Optional[subprocess.Popen]

    def start(self, ready: Any, timeout: float = 10.0) -> None:
        """Start it and wait until C{ready()} is true."""
        with open(self.logPath, "ab") as out:
            self.process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if not waitFor(lambda: ready() or self.process.poll() is not None, timeout):
            self.stop()
            raise RuntimeError("%s did not start: %s" % (self.argv[0], self.log()))
        if self.process.poll() is not None:
            raise RuntimeError("%s exited: %s" % (self.argv[0], self.log()))

    def stop(self) -> None:
        """Stop its process group and wait for it."""
        process, self.process = self.process, None
        if process is None:
            return
        # postgrey (Net::Server::Multiplex) loses a SIGTERM that comes as
        # it handles a closed connection: send it again until it exits
        for _ in range(25):
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except OSError:
                pass
            try:
                process.wait(0.2)
                return
            except subprocess.TimeoutExpired:
                continue
        os.killpg(process.pid, signal.SIGKILL)  # pragma: no cover
        process.wait()  # pragma: no cover

    def log(self) -> str:
        try:
            with open(self.logPath, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""


class PolicyTestCase(unittest.TestCase):
    """
    A temporary directory (short, for Unix socket names) and a client
    whose log records are kept.
    """

    def setUp(self) -> None:
        self.root = tempfile.mkdtemp(prefix="smx-policy-")
        os.chmod(self.root, 0o755)
        self.addCleanup(shutil.rmtree, self.root, True)
        self.sink = MemorySink()

    def client(self, socket: str, timeout: float = 5.0, default: str = "tempfail"):
        client = PolicyClient(
            "test",
            socket,
            timeout,
            default,
            reactor,
            Logger("smtps", sink=self.sink, level=14),
        )
        self.addCleanup(client.close)
        return client

    def errors(self) -> List[str]:
        return [line for line in self.sink.lines() if "sev=ERR" in line]


class _Misbehaving(protocol.Protocol):
    """
    A policy server that answers each request as its factory's C{mode}
    says.
    """

    def connectionMade(self) -> None:
        self.factory.connections += 1
        self.buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\n\n" in self.buffer:
            _, self.buffer = self.buffer.split(b"\n\n", 1)
            self.factory.requests += 1
            mode = self.factory.mode
            if mode == "silent":
                continue
            if mode == "midreply":
                self.transport.write(b"action=REJ")
                self.transport.loseConnection()
            elif mode == "garbage":
                self.transport.write(b"Hello, I am not a policy server\n\n")
            elif mode == "long":
                self.transport.write(b"action=" + b"x" * 10000 + b"\n\n")
            elif mode == "oneshot":
                self.transport.write(b"action=DUNNO\n\n")
                self.transport.loseConnection()
            else:
                self.transport.write(b"action=OK\n\n")


class MisbehavingServerTests(PolicyTestCase):
    """
    Servers that fail in every way a real one can, on a real Unix socket.
    """

    def listen(self, mode: str) -> str:
        factory = protocol.Factory.forProtocol(_Misbehaving)
        factory.mode = mode  # type: ignore[attr-defined]
        factory.connections = 0  # type: ignore[attr-defined]
        factory.requests = 0  # type: ignore[attr-defined]
        path = os.path.join(self.root, "policy")
        port = reactor.listenUNIX(path, factory)
        self.addCleanup(port.stopListening)
        self.factory = factory
        return "unix:" + path

    def request(self, client: PolicyClient, state: str = "RCPT") -> defer.Deferred:
        return client.check(
            policyAttributes(
                state, SESSION, transaction("a@example.com", "S1"), "b@example.org"
            )
        )

    @defer.inlineCallbacks
    def test_down(self):
        """
        No server on the socket: 451 4.3.5, logged with the policy name.
        """
        client = self.client("unix:" + os.path.join(self.root, "nothing"))
        decision = yield self.request(client)
        self.assertTrue(decision.default)
        self.assertEqual(
            decision.reply(),
            {"code": 451, "dsn": "4.3.5", "text": "Server configuration problem"},
        )
        (record,) = self.errors()
        self.assertIn("policy=test", record)
        self.assertIn("cannot connect", record)

    @defer.inlineCallbacks
    def test_downInet(self):
        """
        No server on a loopback TCP port: the default action.
        """
        client = self.client("inet:127.0.0.1:%d" % (freePort(),), default="dunno")
        decision = yield self.request(client)
        self.assertEqual((decision.action, decision.default), ("DUNNO", True))

    @defer.inlineCallbacks
    def test_slow(self):
        """
        A server that never answers: the default action after C{timeout}.
        """
        client = self.client(self.listen("silent"), timeout=0.3)
        decision = yield self.request(client)
        self.assertTrue(decision.default)
        self.assertIn("timeout after 0.3s", self.errors()[0])

    @defer.inlineCallbacks
    def test_midReply(self):
        """
        A server that closes the connection in the middle of a reply.
        """
        client = self.client(self.listen("midreply"))
        decision = yield self.request(client)
        self.assertTrue(decision.default)
        self.assertIn("in the middle of a reply", self.errors()[0])

    @defer.inlineCallbacks
    def test_garbage(self):
        """
        A reply that is not the protocol, and one with a line over 4 KB.
        """
        client = self.client(self.listen("garbage"))
        decision = yield self.request(client)
        self.assertTrue(decision.default)
        self.factory.mode = "long"
        decision = yield self.request(client)
        self.assertTrue(decision.default)
        self.assertIn("not name=value", self.errors()[0])
        self.assertIn("longer than 4096 bytes", self.errors()[1])
        self.factory.mode = "ok"
        decision = yield self.request(client)
        self.assertEqual((decision.action, decision.default), ("OK", False))

    @defer.inlineCallbacks
    def test_reuse(self):
        """
        Requests made at the same time go one after the other on one
        connection.
        """
        client = self.client(self.listen("ok"))
        decisions = yield defer.gatherResults([self.request(client) for _ in range(5)])
        self.assertEqual([d.action for d in decisions], ["OK"] * 5)
        self.assertEqual((self.factory.connections, self.factory.requests), (1, 5))

    @defer.inlineCallbacks
    def test_serverClosesEachTime(self):
        """
        A server that closes the connection after each reply (postgrey
        C{--exim}): each request gets a new connection, no error.
        """
        client = self.client(self.listen("oneshot"))
        for _ in range(3):
            decision = yield self.request(client)
            self.assertEqual((decision.action, decision.default), ("DUNNO", False))
            yield sleep(0.05)
        self.assertEqual(self.factory.connections, 3)
        self.assertEqual(self.errors(), [])


class PostgreyTests(PolicyTestCase):
    """
    Greylisting by a real postgrey.
    """

    def setUp(self) -> None:
        if not os.access(POSTGREY, os.X_OK):
            raise unittest.SkipTest(
                "%s (Debian package postgrey) is not installed" % (POSTGREY,)
            )
        PolicyTestCase.setUp(self)
        self.dbdir = os.path.join(self.root, "db")
        os.mkdir(self.dbdir)
        if os.getuid() == 0:
            try:
                user = pwd.getpwnam("postgrey")
            except KeyError:
                raise unittest.SkipTest("no postgrey user")
            os.chown(self.dbdir, user.pw_uid, user.pw_gid)
            self.user = ["--user=postgrey", "--group=postgrey"]
        else:
            me = pwd.getpwuid(os.getuid())
            self.user = [
                "--user=" + me.pw_name,
                "--group=" + grp.getgrgid(os.getgid()).gr_name,
            ]
        self.postgrey = None  # type: Optional[_Daemon]

    def startPostgrey(self, listen: str, ready: Any) -> None:
        self.postgrey = _Daemon(
            [
                POSTGREY,
                listen,
                "--dbdir=" + self.dbdir,
                "--delay=1",
                "--hostname=smx-test",
                "--whitelist-clients=/dev/null",
                "--whitelist-recipients=/dev/null",
                "--pidfile=" + os.path.join(self.root, "postgrey.pid"),
            ]
            + self.user,
            os.path.join(self.root, "postgrey.log"),
        )
        self.addCleanup(self.postgrey.stop)
        self.postgrey.start(ready)

    def rcpt(self, client: PolicyClient, instance: str) -> defer.Deferred:
        return client.check(
            policyAttributes(
                "RCPT",
                SESSION,
                transaction("alice@example.com", instance),
                recipient="bob@example.org",
            )
        )

    @defer.inlineCallbacks
    def test_greylisting(self):
        """
        Over a Unix socket: the first try is greylisted (DEFER_IF_PERMIT,
        450; postgrey gives status 4.2.0 to a client that sends
        C{etrn_domain}, as Postfix does); after the delay the mail passes
        with an C{X-Greylist} header; DATA is DUNNO.  All on one
        connection.
        """
        path = os.path.join(self.root, "postgrey.sock")
        # the socket file exists from bind(), before postgrey listens
        self.startPostgrey("--unix=" + path, lambda: _accepts(path))
        client = self.client("unix:" + path)
        first = yield self.rcpt(client, "S1")
        self.assertEqual(first.action, "DEFER_IF_PERMIT", self.postgrey.log())
        self.assertFalse(first.default)
        self.assertEqual(
            first.reply("bob@example.org", "Recipient address"),
            {
                "code": 450,
                "dsn": "4.2.0",
                "text": "<bob@example.org>: Recipient address rejected: Greylisted, "
                "see http://postgrey.schweikert.ch/help/example.org.html",
            },
        )
        connection = client._proto
        # postgrey counts whole seconds (time()): the delay of one second is
        # over at the start of the next second
        yield sleep(1.05 - time.time() % 1)
        later = yield self.rcpt(client, "S3")
        self.assertEqual(later.action, "PREPEND", self.postgrey.log())
        self.assertRegex(
            later.text,
            r"^X-Greylist: delayed [0-9]+ seconds by postgrey-[0-9.]+ at smx-test; ",
        )
        data = yield client.check(
            policyAttributes(
                "DATA",
                SESSION,
                PolicyTransaction(
                    instance="S3",
                    sender="alice@example.com",
                    recipients=("bob@example.org",),
                ),
            )
        )
        self.assertEqual(data.action, "DUNNO")
        self.assertIs(client._proto, connection)
        self.assertEqual(self.errors(), [])

    @defer.inlineCallbacks
    def test_restart(self):
        """
        Over TCP on loopback: while postgrey is stopped, the default
        action; once it runs again, the client connects again by itself.
        """
        port = freePort()
        from smx.test.mta import canConnect

        listen = "--inet=127.0.0.1:%d" % (port,)
        self.startPostgrey(listen, lambda: canConnect(port))
        client = self.client("inet:127.0.0.1:%d" % (port,))
        first = yield self.rcpt(client, "S1")
        self.assertEqual(first.action, "DEFER_IF_PERMIT", self.postgrey.log())
        self.postgrey.stop()
        yield sleep(0.1)
        down = yield self.rcpt(client, "S2")
        self.assertTrue(down.default)
        self.assertEqual(down.code, 451)
        self.assertIn("policy=test", self.errors()[0])
        self.postgrey.start(lambda: canConnect(port))
        again = yield self.rcpt(client, "S3")
        self.assertFalse(again.default, self.postgrey.log())
        self.assertIn(again.action, ("DEFER_IF_PERMIT", "PREPEND"))


def _loopbackDNS(records: dict, timeout=()) -> Any:
    """
    A Twisted Names server on port 53 of a random 127.x.y.z address.

    @return: C{(address, stop)}.
    """
    factory = TestDNSServerFactory(TestZoneResolver(records), timeout=timeout)
    rng = random.Random()
    for attempt in range(20):
        address = "127.%d.%d.%d" % (
            rng.randint(1, 254),
            rng.randint(1, 254),
            rng.randint(2, 254),
        )
        try:
            udp = reactor.listenUDP(
                53, dns.DNSDatagramProtocol(factory), interface=address
            )
        except CannotListenError:
            continue
        try:
            tcp = reactor.listenTCP(53, factory, interface=address)
        except CannotListenError:
            udp.stopListening()
            continue
        break
    else:  # pragma: no cover
        raise RuntimeError("no loopback address with a free port 53")

    def stop() -> defer.Deferred:
        return defer.gatherResults(
            [
                defer.maybeDeferred(udp.stopListening),
                defer.maybeDeferred(tcp.stopListening),
            ]
        )

    return address, stop


SPF_ZONE = {
    "pass.test": [("TXT", "v=spf1 ip4:192.0.2.1 -all")],
    "fail.test": [("TXT", "v=spf1 ip4:192.0.2.99 -all")],
    "softfail.test": [("TXT", "v=spf1 ip4:192.0.2.99 ~all")],
    "mx.example.com": [("A", "192.0.2.1")],
}

SPF_CONF = """\
debugLevel = 1
TestOnly = 1
HELO_reject = Fail
Mail_From_reject = Fail
PermError_reject = False
TempError_Defer = True
skip_addresses = 198.51.100.0/24
Lookup_Time = 1
"""


def requirePolicydSPF() -> None:
    """
    Skip the test unless policyd-spf can run here: its programs are
    installed and, as it reads only /etc/resolv.conf, a private mount
    namespace can be made (root).
    """
    for program, package in (
        (POLICYD_SPF, "postfix-policyd-spf-python"),
        (SOCAT, "socat"),
        (UNSHARE, "util-linux"),
    ):
        if not os.access(program, os.X_OK):
            raise unittest.SkipTest(
                "%s (Debian package %s) is not installed" % (program, package)
            )
    if os.getuid() != 0:
        raise unittest.SkipTest(
            "policyd-spf reads /etc/resolv.conf only: it needs a private "
            "mount namespace (root)"
        )
    if subprocess.run([UNSHARE, "-m", "true"], capture_output=True).returncode:
        raise unittest.SkipTest("cannot make a mount namespace (unshare -m)")


class PolicydSPFTests(PolicyTestCase):
    """
    SPF checks by a real policyd-spf, its DNS answers from a loopback
    server.
    """

    def setUp(self) -> None:
        requirePolicydSPF()
        PolicyTestCase.setUp(self)
        address, stop = _loopbackDNS(SPF_ZONE, timeout={"temperror.test"})
        self.addCleanup(stop)
        resolv = os.path.join(self.root, "resolv.conf")
        with open(resolv, "w") as f:
            f.write("nameserver %s\noptions timeout:1 attempts:1\n" % (address,))
        conf = os.path.join(self.root, "policyd-spf.conf")
        with open(conf, "w") as f:
            f.write(SPF_CONF)
        self.socket = os.path.join(self.root, "spf.sock")
        script = (
            "mount --bind %s /etc/resolv.conf && exec %s UNIX-LISTEN:%s,fork EXEC:'%s %s'"
            % (
                resolv,
                SOCAT,
                self.socket,
                POLICYD_SPF,
                conf,
            )
        )
        self.daemon = _Daemon(
            [UNSHARE, "-m", "--propagation", "private", "sh", "-c", script],
            os.path.join(self.root, "spf.log"),
        )
        # after the client's cleanup (cleanups run last-added first)
        self.addCleanup(self.daemon.stop)
        self.daemon.start(lambda: os.path.exists(self.socket))

    def mail(self, client: PolicyClient, domain: str) -> defer.Deferred:
        return client.check(
            policyAttributes(
                "RCPT",
                SESSION,
                transaction("alice@" + domain, "S-" + domain),
                recipient="bob@example.org",
            )
        )

    @defer.inlineCallbacks
    def test_results(self):
        """
        pass and softfail prepend C{Received-SPF}; fail rejects with 550
        5.7.23; a DNS server that does not answer is a temperror, deferred
        (450 4.7.24) with C{TempError_Defer}.  One connection, one
        policyd-spf for all.
        """
        client = self.client("unix:" + self.socket)
        passed = yield self.mail(client, "pass.test")
        self.assertEqual(passed.action, "PREPEND", self.daemon.log())
        self.assertTrue(
            passed.text.startswith("Received-SPF: Pass (mailfrom)"), passed.text
        )
        self.assertIn("client-ip=192.0.2.1", passed.text)
        connection = client._proto

        failed = yield self.mail(client, "fail.test")
        self.assertEqual(
            (failed.action, failed.code, failed.dsn), ("REJECT", 550, "5.7.23")
        )
        self.assertIn("SPF fail - not authorized", failed.text)
        reply = failed.reply("alice@fail.test", "Sender address")
        self.assertEqual((reply["code"], reply["dsn"]), (550, "5.7.23"))

        soft = yield self.mail(client, "softfail.test")
        self.assertEqual(soft.action, "PREPEND")
        self.assertTrue(soft.text.startswith("Received-SPF: Softfail"), soft.text)

        temp = yield self.mail(client, "temperror.test")
        self.assertEqual(
            (temp.action, temp.code, temp.dsn), ("DEFER_IF_PERMIT", 450, "4.7.24")
        )
        self.assertIn("SPF Temporary Error", temp.text)
        self.assertFalse(temp.default)
        self.assertIs(client._proto, connection)
        self.assertEqual(self.errors(), [])

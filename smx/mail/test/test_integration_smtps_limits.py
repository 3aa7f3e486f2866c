# -*- test-case-name: smx.mail.test.test_integration_smtps_limits -*-
"""
Integration tests of SMTPS's session timers and limits against smx run as
a user runs it (C{twistd -n smx} through L{smx.test.mta}), with plain
Python sockets on loopback addresses as the clients: a client that sends
STARTTLS and then nothing, hundreds of clients that send a byte now and
then, and thousands of concurrent well-behaved sessions.
"""

from __future__ import annotations

import os
import resource
import selectors
import smtplib
import socket
import ssl
import threading
import time
from typing import List, Optional

from twisted.trial.unittest import SkipTest, TestCase

from smx.test.certs import makeCertificates
from smx.test.mta import MTA, configuration, tempDirectory


def needFiles(n: int) -> None:
    """
    Make room for C{n} more open files in this process (and in the smx it
    starts), raising the soft C{RLIMIT_NOFILE} up to the hard one.

    @raise SkipTest: if the hard limit is too low.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = n + 256
    if soft >= want:
        return
    if hard != resource.RLIM_INFINITY and hard < want:
        raise SkipTest("RLIMIT_NOFILE hard limit %d is below %d" % (hard, want))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def connectFrom(source: str, port: int, timeout: float = 5.0) -> socket.socket:
    """A TCP connection from loopback address C{source} to smx."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


def readReply(s: socket.socket) -> bytes:
    """Read one (possibly multi-line) SMTP reply."""
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            return data
        data += chunk
        lines = data.split(b"\r\n")
        if len(lines) > 1 and len(lines[-2]) >= 4 and lines[-2][3:4] == b" ":
            return data


def closedWithin(s: socket.socket, seconds: float) -> Optional[float]:
    """
    Wait for smx to close C{s}, reading (and dropping) what it sends.

    @return: how long it took, or C{None} if it is still open.
    """
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        s.settimeout(max(0.01, seconds - (time.monotonic() - start)))
        try:
            if not s.recv(4096):
                return time.monotonic() - start
        except socket.timeout:
            return None
        except OSError:
            return time.monotonic() - start
    return None


class _Base(TestCase):
    def setUp(self) -> None:
        self.root = tempDirectory(self)
        self.mta = MTA(self, os.path.join(self.root, "smx"))
        self.sockets = []  # type: List[socket.socket]
        self.addCleanup(self._closeSockets)

    def _closeSockets(self) -> None:
        for s in self.sockets:
            s.close()

    def start(self, smtps: str = "", qmgr: str = "") -> None:
        text = configuration(self.mta.port, smtps=smtps, qmgr=qmgr)
        if "io_timeout" in smtps:
            # the harness's own io_timeout comes first, in smtps
            text = text.replace("io_timeout = 30s;", "", 1)
        self.mta.write(text, aliases="alice: local:\n", access="")
        self.mta.start()

    def transaction(self, source: str, timeout: float) -> float:
        """
        One message from C{source} to a local user with smtplib, which must
        be accepted.

        @return: the seconds it took, connection included.
        """
        start = time.monotonic()
        with smtplib.SMTP(
            "127.0.0.1", self.mta.port, timeout=timeout, source_address=(source, 0)
        ) as client:
            client.sendmail(
                "normal@client.test",
                ["alice@localhost"],
                b"Subject: hello\r\n\r\nbehaved\r\n",
            )
        return time.monotonic() - start


class StartTLSSilenceTests(_Base):
    """
    A client that sends STARTTLS and then nothing (issue: it was never
    disconnected, and 256 of them locked every client out).
    """

    def test_dropped(self):
        """
        Clients silent after STARTTLS, and one that stalls in the middle of
        its handshake, are dropped (the TCP connection closed) within
        io_timeout; the sessions they held are free again for others.
        """
        certs = makeCertificates(os.path.join(self.root, "certs"))
        self.start(
            smtps="io_timeout = 1s; max_threads = 4; "
            'tls { cert_file = "%s"; key_file = "%s"; }'
            % (certs.serverCert, certs.serverKey)
        )
        held = []
        for i in range(4):
            s = connectFrom("127.0.0.%d" % (2 + i,), self.mta.port)
            self.sockets.append(s)
            self.assertTrue(readReply(s).startswith(b"220 "))
            s.sendall(b"EHLO silent.test\r\n")
            self.assertIn(b"STARTTLS", readReply(s))
            s.sendall(b"STARTTLS\r\n")
            self.assertTrue(readReply(s).startswith(b"220 "))
            held.append(s)
        # the last one sends half a ClientHello, and nothing more
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        outgoing = ssl.MemoryBIO()
        tls = context.wrap_bio(ssl.MemoryBIO(), outgoing)
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            pass
        hello = outgoing.read()
        held[-1].sendall(hello[: len(hello) // 2])
        for s in held:
            took = closedWithin(s, 4.0)
            self.assertIsNotNone(took, "smx kept a client in the TLS handshake")
        self.transaction("127.0.0.9", 5.0)
        self.assertEqual(
            "\n".join(self.mta.records("smtps")).count(
                "where=timeout, tls=handshake, stat=421"
            ),
            4,
        )


class _SlowSenders(threading.Thread):
    """
    Clients that send one byte of a command every C{interval} seconds.
    """

    def __init__(self, sockets: List[socket.socket], interval: float) -> None:
        threading.Thread.__init__(self, daemon=True)
        self.sockets = sockets
        self.interval = interval
        self.stopped = threading.Event()

    def run(self) -> None:
        line = b"EHLO slow.client.test\r\n"
        i = 0
        while not self.stopped.wait(self.interval):
            byte = line[i % len(line) : i % len(line) + 1]
            i += 1
            for s in self.sockets:
                try:
                    s.send(byte)
                except OSError:
                    pass

    def stop(self) -> None:
        self.stopped.set()
        self.join()


class SlowClientTests(_Base):
    """
    Slow clients must not keep clients that behave out (issue: every byte
    reset io_timeout, and 500 clients sending a byte every 3 s took every
    session).
    """

    def test_slowClientsFromFewAddresses(self):
        """
        300 clients from three loopback addresses, each sending a byte per
        second, with the default session limits (256 sessions, 100 per
        address): a client from a fourth address gets its 220 and a
        message through promptly.
        """
        needFiles(400)
        self.start()
        slow = []  # type: List[socket.socket]
        for i in range(300):
            s = connectFrom("127.0.0.%d" % (2 + i % 3,), self.mta.port)
            s.setblocking(False)
            slow.append(s)
        self.sockets.extend(slow)
        senders = _SlowSenders(slow, 1.0)
        senders.start()
        self.addCleanup(senders.stop)
        time.sleep(2.5)
        took = self.transaction("127.0.0.9", 5.0)
        self.assertLess(took, 5.0)
        records = "\n".join(self.mta.records("smtps"))
        self.assertIn("Too many sessions; closing an idle one", records)

    def test_slowAddressRefusedFirst(self):
        """
        Near the session limit, a new session from an address that holds
        its share of sessions, some of them slow, is refused with 421
        4.7.0, while an address that holds none is served.
        """
        needFiles(200)
        self.start(smtps="max_threads = 40;")
        slow = []  # type: List[socket.socket]
        for i in range(32):
            s = connectFrom("127.0.0.2", self.mta.port)
            self.assertTrue(readReply(s).startswith(b"220 "))
            s.setblocking(False)
            s.send(b"EH")
            slow.append(s)
        self.sockets.extend(slow)
        time.sleep(2.2)
        s = connectFrom("127.0.0.2", self.mta.port)
        self.sockets.append(s)
        self.assertTrue(readReply(s).startswith(b"421 4.7.0 "))
        self.assertLess(self.transaction("127.0.0.9", 5.0), 5.0)


class ConcurrencyTests(_Base):
    """
    Many concurrent sessions that behave are all served.
    """

    def test_twoThousandSessions(self):
        """
        2,000 concurrent sessions from one address, with max_threads =
        2000: every one gets its greeting and its EHLO answered, stays
        idle for a second and a half, and ends with 221.
        """
        n = 2000
        needFiles(2 * n + 100)
        self.start(
            smtps="max_threads = %d;" % (n,),
            qmgr="smtps_max_connection_rate = 100000; "
            "smtps_max_open_connections = 100000;",
        )
        sel = selectors.DefaultSelector()
        self.addCleanup(sel.close)
        state = {}  # type: dict
        pending = list(range(n))
        errors = []  # type: List[bytes]
        done = 0
        deadline = time.monotonic() + 20

        def step(s: socket.socket, reply: bytes) -> None:
            nonlocal done
            phase = state[s]
            if not reply.startswith((b"220 ", b"250", b"221 ")):
                errors.append(reply)
                state[s] = "error"
                sel.unregister(s)
                return
            if phase == "greeting":
                s.send(b"EHLO many.test\r\n")
                state[s] = "ehlo"
            elif phase == "ehlo":
                state[s] = "idle"
                sel.unregister(s)
                done += 1

        opened = 0
        while (done + len(errors) < n) and time.monotonic() < deadline:
            while pending and opened - done - len(errors) < 200:
                pending.pop()
                s = socket.socket()
                s.setblocking(False)
                try:
                    s.connect(("127.0.0.1", self.mta.port))
                except BlockingIOError:
                    pass
                self.sockets.append(s)
                state[s] = "greeting"
                sel.register(s, selectors.EVENT_READ, b"")
                opened += 1
            for key, _ in sel.select(0.5):
                s = key.fileobj  # type: ignore[assignment]
                try:
                    chunk = s.recv(4096)
                except OSError as e:
                    errors.append(repr(e).encode())
                    sel.unregister(s)
                    continue
                if not chunk:
                    errors.append(b"closed in " + state[s].encode())
                    sel.unregister(s)
                    continue
                data = key.data + chunk
                lines = data.split(b"\r\n")
                if len(lines) > 1 and lines[-2][3:4] == b" ":
                    sel.modify(s, selectors.EVENT_READ, b"")
                    step(s, data)
                else:
                    sel.modify(s, selectors.EVENT_READ, data)
        self.assertEqual(errors[:5], [])
        self.assertEqual(done, n)
        time.sleep(1.5)
        quitted = 0
        for s in self.sockets:
            s.setblocking(True)
            s.settimeout(5.0)
            s.sendall(b"QUIT\r\n")
        for s in self.sockets:
            if readReply(s).startswith(b"221 "):
                quitted += 1
        self.assertEqual(quitted, n)

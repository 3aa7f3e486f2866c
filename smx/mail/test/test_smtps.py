# -*- test-case-name: smx.mail.test.test_smtps -*-
"""
Tests for L{smx.mail.smtps}: the Twisted adapter with a L{StringTransport},
a L{Clock} and the fakes of QMGR, CDB and SMAR.
"""

import base64
import errno

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.task import Clock
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python import failure
from twisted.trial import unittest

from smx.interfaces import QueueManagerUnavailable
from smx.log import Logger, MemorySink, parseRecord
from smx.maps.testing import FakeAddressResolver
from smx.mail import smtps
from smx.mail.smtps import SMTPServerFactory
from smx.mail.testing import defaultServerSettings
from smx.queue import cdb
from smx.queue.cdb import FileContentStore
from smx.queue.testing import FakeQueueManager, MemoryContentStore


class CountingTransport(StringTransport):
    """Counts write calls."""

    writes = 0

    def write(self, data):
        self.writes += 1
        StringTransport.write(self, data)


class Harness:
    """A server with fakes, one session at a time."""

    def __init__(self, **settings):
        settings.setdefault("hostname", "mx.test")
        self.settings = defaultServerSettings(**settings)
        self.qmgr = FakeQueueManager()
        self.store = MemoryContentStore()
        self.resolver = FakeAddressResolver()
        self.resolver.localDomains.add("local.test")
        self.sink = MemorySink()
        self.clock = Clock()
        self.factory = SMTPServerFactory(
            self.settings,
            self.qmgr,
            self.store,
            self.resolver,
            reactor=self.clock,
            log=Logger("smtps", sink=self.sink),
        )

    def connect(self, address="10.1.2.3"):
        self.protocol = self.factory.buildProtocol(IPv4Address("TCP", "0.0.0.0", 25))
        if ":" in address:
            peer = IPv6Address("TCP", address, 40000)
        else:
            peer = IPv4Address("TCP", address, 40000)
        self.transport = CountingTransport(peerAddress=peer)
        self.protocol.makeConnection(self.transport)
        return self.take()

    def take(self):
        out = self.transport.value()
        self.transport.clear()
        return out

    def send(self, data):
        self.protocol.dataReceived(data)
        return self.take()

    def records(self):
        return [parseRecord(line) for line in self.sink.lines()]


MESSAGE = b"Subject: test\r\nMessage-Id: <m1@client.test>\r\n\r\nHello\r\n..dot\r\n"


class SessionTests(unittest.TestCase):
    """Sessions, transactions and their log records."""

    def test_greeting(self):
        """The session opens with QMGR and is logged; 220 greeting."""
        h = Harness()
        out = h.connect()
        self.assertTrue(out.startswith(b"220 mx.test ESMTP smx "))
        sid = h.protocol.sessionId
        self.assertEqual(h.qmgr.sessions, {sid: "10.1.2.3"})
        self.assertEqual(
            h.sink.lines()[0], "ss_sess=%s, client_ipv4=10.1.2.3, relay=0" % sid
        )

    def test_sessionOpenFails(self):
        """
        QMGR failing before the greeting is logged and refuses the session
        with 421 4.3.0 (the core is still in its CONNECTED state).
        """
        h = Harness()
        h.qmgr.sessionOpen = lambda sessionId, address: defer.fail(RuntimeError("down"))
        out = h.connect()
        self.assertEqual(out, b"421 4.3.0 mx.test Temporary failure\r\n")
        self.assertTrue(h.transport.disconnecting)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertIn("sev=ERR", h.sink.lines()[0])

    def test_closeBeforeLastReply(self):
        """
        At QUIT the queue manager hears that the session is over when the
        221 is written, before the connection is gone (in split mode the
        client's next session may reach QMGR through another SMTPS
        process); once only, not again when the connection ends.
        """
        h = Harness()
        h.connect()
        sid = h.protocol.sessionId
        self.assertEqual(h.send(b"QUIT\r\n")[:4], b"221 ")
        self.assertTrue(h.transport.disconnecting)
        self.assertEqual(h.qmgr.closed, [sid])
        h.protocol.connectionLost(failure.Failure(ConnectionDone()))
        self.assertEqual(h.qmgr.closed, [sid])

    def test_closeLostBeforeOpened(self):
        """
        A client gone while QMGR's answer to C{sessionOpen} is pending:
        the session QMGR then opens is closed at once.
        """
        h = Harness()
        opened = defer.Deferred()
        h.qmgr.sessionOpen = lambda sessionId, address: opened
        h.connect()
        h.protocol.connectionLost(failure.Failure(ConnectionDone()))
        self.assertEqual(h.qmgr.closed, [])
        opened.callback(None)
        self.assertEqual(h.qmgr.closed, [h.protocol.sessionId])

    def test_mappedAddress(self):
        """An IPv4-mapped IPv6 client is logged as IPv4."""
        h = Harness()
        h.connect("::ffff:192.0.2.1")
        self.assertIn("client_ipv4=192.0.2.1", h.sink.lines()[0])
        h.connect("2001:db8::1")
        self.assertIn("client_ipv6=2001:db8::1", h.sink.lines()[-1])

    def test_transaction(self):
        """
        A message is stored with a Received: header and queued; the log
        has mail, rcpt and msgid records (App. C.2).
        """
        h = Harness()
        h.connect()
        out = h.send(
            b"EHLO client.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@local.test>\r\n"
            b"RCPT TO:<v@local.test>\r\nDATA\r\n"
        )
        self.assertTrue(
            out.endswith(b'354 Enter mail, end with "." on a line by itself\r\n')
        )
        out = h.send(MESSAGE + b".\r\n")
        [envelope] = h.qmgr.envelopes
        ta = envelope["id"]
        self.assertEqual(
            out, b"250 2.0.0 %s Message accepted for delivery\r\n" % ta.encode()
        )
        self.assertEqual(envelope["sender"], "a@b.test")
        self.assertEqual(
            envelope["recipients"],
            [
                {"address": "u@local.test", "index": 0},
                {"address": "v@local.test", "index": 1},
            ],
        )
        content = h.store.contents[ta]
        self.assertTrue(content.endswith(MESSAGE.replace(b"..dot", b".dot")))
        self.assertTrue(
            content.startswith(
                b"Received: from client.test ([10.1.2.3])\r\n\tby mx.test (smx "
            )
        )
        self.assertIn(b") with ESMTP\r\n\tid %s; " % ta.encode(), content)
        self.assertEqual(envelope["size"], len(content))
        sid = h.protocol.sessionId
        lines = h.sink.lines()
        self.assertEqual(
            lines[1:],
            [
                "ss_sess=%s, ss_ta=%s, mail=<a@b.test>, stat=0" % (sid, ta),
                "ss_sess=%s, ss_ta=%s, rcpt=<u@local.test>, idx=0, stat=0" % (sid, ta),
                "ss_sess=%s, ss_ta=%s, rcpt=<v@local.test>, idx=1, stat=0" % (sid, ta),
                "ss_sess=%s, ss_ta=%s, msgid=<m1@client.test>, size=%d, stat=0"
                % (sid, ta, len(content)),
            ],
        )

    def test_requireTLS(self):
        """
        The envelope given to QMGR says whether MAIL carried REQUIRETLS
        (RFC 8689) and whether the header said C{TLS-Required: No} (which
        counts only without REQUIRETLS, §4.1).
        """
        h = Harness()
        h.connect()
        h.protocol.connection.tlsStarted()  # as after a TLS handshake
        header = b"TLS-Required: No\r\n"
        for mail, expected in [
            (b"MAIL FROM:<a@b.test> REQUIRETLS", (True, False)),
            (b"MAIL FROM:<a@b.test>", (False, True)),
        ]:
            h.send(b"EHLO c\r\n" + mail + b"\r\nRCPT TO:<u@local.test>\r\nDATA\r\n")
            out = h.send(header + MESSAGE + b".\r\n")
            self.assertTrue(out.startswith(b"250 2.0.0 "), out)
            envelope = h.qmgr.envelopes[-1]
            self.assertEqual(
                (envelope["requiretls"], envelope["tlsRequiredNo"]), expected, mail
            )
            self.assertEqual(
                "requiretls=1" in h.sink.lines()[-3], expected[0], h.sink.lines()
            )

    def test_waitForCommit(self):
        """250 is sent only after QMGR's commit fired; pipelined input waits."""
        h = Harness()
        h.qmgr.pending = []
        h.connect()
        h.send(b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@local.test>\r\nDATA\r\n")
        out = h.send(b"x\r\n.\r\nQUIT\r\n")
        self.assertEqual(out, b"")
        h.qmgr.pending[0].callback(None)
        out = h.take()
        self.assertTrue(out.startswith(b"250 2.0.0 "))
        self.assertTrue(out.endswith(b"221 2.0.0 mx.test closing connection\r\n"))
        self.assertTrue(h.transport.disconnecting)

    def test_floodWhileWaiting(self):
        """
        Input that arrives while the session waits for QMGR is held; only
        once it exceeds HOLD_LIMIT does smx stop reading, and it reads
        (and answers everything) again once the answer came.
        """
        h = Harness()
        h.qmgr.pending = []
        h.connect()
        h.send(b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@local.test>\r\nDATA\r\n")
        h.send(b"x\r\n.\r\n")
        self.assertEqual(h.send(b"NOOP\r\n"), b"")
        self.assertEqual(h.transport.producerState, "producing")
        noops = smtps.HOLD_LIMIT // 6 + 1
        h.send(b"NOOP\r\n" * noops)
        self.assertEqual(h.transport.producerState, "paused")
        h.qmgr.pending[0].callback(None)
        self.assertEqual(h.transport.producerState, "producing")
        lines = h.take().split(b"\r\n")
        self.assertTrue(lines[0].startswith(b"250 2.0.0 "))
        self.assertEqual(
            len([l for l in lines if l.startswith(b"250 2.0.0 OK")]), noops + 1
        )

    def test_commitFails(self):
        """QMGR failing is 451 4.3.0 and the content is removed."""
        h = Harness()
        h.qmgr.failCommit = OSError("disk")
        h.connect()
        h.send(b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@local.test>\r\nDATA\r\n")
        out = h.send(b"x\r\n.\r\n")
        self.assertEqual(
            out, b"451 4.3.0 Temporary failure, please try again later\r\n"
        )
        self.assertEqual(h.store.contents, {})
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_contentCommitFails(self):
        """
        CDB failing is 451: the envelope, stored at the same time, is
        withdrawn (contentCommitted with stored false).
        """
        h = Harness()
        h.store.failCommit = OSError("full")
        h.connect()
        h.send(b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@local.test>\r\nDATA\r\n")
        out = h.send(b"x\r\n.\r\n")
        self.assertTrue(out.startswith(b"451 4.3.0 "))
        [envelope] = h.qmgr.envelopes
        self.assertTrue(envelope["contentPending"])
        self.assertEqual(h.qmgr.contents, [(envelope["id"], False)])
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_bothSyncsAtOnce(self):
        """
        The envelope goes to QMGR before the content sync has finished;
        250 comes once both have, and only then is QMGR told the content
        is stored.
        """
        h = Harness()
        h.qmgr.pending = []
        h.store.pending = []
        h.connect()
        h.send(b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@local.test>\r\nDATA\r\n")
        self.assertEqual(h.send(b"x\r\n.\r\n"), b"")
        self.assertEqual((len(h.qmgr.pending), len(h.store.pending)), (1, 1))
        h.qmgr.pending[0].callback(None)
        self.assertEqual((h.take(), h.qmgr.contents), (b"", []))
        h.store.pending[0].callback(None)
        self.assertTrue(h.take().startswith(b"250 2.0.0 "))
        self.assertEqual(h.qmgr.contents, [(h.qmgr.envelopes[0]["id"], True)])

    def fileStoreHarness(self):
        """
        A L{Harness} with a real L{FileContentStore} whose contents QMGR
        syncs (as the components use it); C{os.fsync} recorded.
        """
        h = Harness()
        h.store = FileContentStore(self.mktemp())
        h.store.syncedByQueueManager = True
        h.factory.contentStore = h.store
        self.fsynced = []
        self.patch(cdb.os, "fsync", self.fsynced.append)
        return h

    def test_contentSyncedByQueueManager(self):
        """
        With a store whose contents QMGR syncs, the content is written
        out whole (and not synced) before the envelope goes to QMGR with
        C{syncContent}; 250 comes when QMGR's commit does, and QMGR is
        told nothing afterwards.
        """
        h = self.fileStoreHarness()
        h.qmgr.pending = []
        h.connect()
        h.send(b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@local.test>\r\nDATA\r\n")
        self.assertEqual(h.send(MESSAGE + b".\r\n"), b"")
        [envelope] = h.qmgr.envelopes
        self.assertEqual(
            (envelope["syncContent"], envelope.get("contentPending", False)),
            (True, False),
        )
        with h.store.open(envelope["id"]) as f:
            content = f.read()
        self.assertEqual(len(content), envelope["size"])
        self.assertTrue(content.endswith(b"\r\nHello\r\n.dot\r\n"))
        h.qmgr.pending[0].callback(None)
        self.assertTrue(h.take().startswith(b"250 2.0.0 %s " % envelope["id"].encode()))
        self.assertEqual((h.qmgr.contents, self.fsynced), ([], []))

    def commitFailing(self, error):
        """
        A message sent through a L{fileStoreHarness} whose QMGR fails the
        commit with C{error}: it gets 451 and its content is removed.

        @return: the harness.
        """
        h = self.fileStoreHarness()
        h.qmgr.failCommit = error
        h.connect()
        h.send(b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@local.test>\r\nDATA\r\n")
        out = h.send(b"x\r\n.\r\n")
        self.assertTrue(out.startswith(b"451 4.3.0 "))
        self.assertEqual(h.store.transactionIds(), [])
        return h

    def test_syncedByQueueManagerCommitFails(self):
        """QMGR failing the commit is 451, and the written content removed."""
        self.commitFailing(OSError("disk"))
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_queueManagerUnavailable(self):
        """
        QMGR not answering the commit (split mode, QMGR restarting) is 451
        and the written content removed, logged C{sev=ERR} with the reason
        and no traceback: an expected event, not a defect.
        """
        h = self.commitFailing(QueueManagerUnavailable("qmgr: connection lost"))
        self.assertEqual(self.flushLoggedErrors(), [])
        [line] = [l for l in h.sink.lines() if "sev=ERR" in l]
        self.assertIn("func=commitTransaction", line)
        self.assertIn("error=qmgr: connection lost", line)

    def test_syncedByQueueManagerWriteFails(self):
        """
        A content that cannot be written (a full disk) is 451 with
        nothing sent to QMGR and no file left.
        """
        h = self.fileStoreHarness()

        def write(fd, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        self.patch(cdb, "_write", write)
        h.connect()
        h.send(b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@local.test>\r\nDATA\r\n")
        out = h.send(b"x\r\n.\r\n")
        self.assertTrue(out.startswith(b"451 4.3.0 "))
        self.assertEqual((h.qmgr.envelopes, h.store.transactionIds()), ([], []))
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def rejected(self, body, **settings):
        h = Harness(**settings)
        h.connect()
        h.send(b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@local.test>\r\nDATA\r\n")
        out = h.send(body + b".\r\n")
        self.assertEqual(h.qmgr.envelopes, [])
        self.assertEqual(h.store.contents, {})
        self.assertEqual(len(h.store.aborted), 1)
        return out

    def test_tooBig(self):
        """Too big: read to the end, 552 5.3.4, nothing queued."""
        out = self.rejected(b"x" * 3000 + b"\r\n", maxMessageSize=1000)
        self.assertTrue(out.startswith(b"552 5.3.4 "))

    def test_bareLF(self):
        """A bare LF in the data: 554 5.6.11, nothing queued."""
        out = self.rejected(b"a\r\n\n.\nMAIL FROM:<x@y.z>\r\n")
        self.assertTrue(out.startswith(b"554 5.6.11 "))

    def test_nul(self):
        """A NUL in the data: 554 5.6.0, nothing queued."""
        out = self.rejected(b"a\r\n\x00.\r\nMAIL FROM:<x@y.z>\r\n")
        self.assertEqual(
            out, b"554 5.6.0 Message contains NUL characters, rejected\r\n"
        )

    def test_longLine(self):
        """A data line over 1000 octets: 500 5.5.2, nothing queued."""
        out = self.rejected(b"a\r\n" + b"x" * 1000 + b"\r\nb\r\n")
        self.assertTrue(out.startswith(b"500 5.5.2 Line too long"), out)

    def test_hops(self):
        """More than max_hops Received: headers: 554 5.4.6."""
        out = self.rejected(b"Received: x\r\n" * 4 + b"\r\nbody\r\n", maxHops=3)
        self.assertTrue(out.startswith(b"554 5.4.6 "))
        h = Harness(maxHops=3)
        h.connect()
        h.send(b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@local.test>\r\nDATA\r\n")
        out = h.send(b"Received: x\r\n" * 3 + b"\r\nbody\r\n.\r\n")
        self.assertTrue(out.startswith(b"250 "))

    def test_pipelinedOneWrite(self):
        """The replies to a pipelined group are written at once."""
        h = Harness()
        h.connect()
        writes = h.transport.writes
        out = h.send(
            b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@local.test>\r\n"
            b"RCPT TO:<x@remote.test>\r\nRCPT TO:<w@local.test>\r\nDATA\r\n"
        )
        self.assertEqual(h.transport.writes, writes + 1)
        lines = out.split(b"\r\n")[:-1]
        self.assertEqual(len([line for line in lines if line[3:4] == b" "]), 6)

    def test_pipelinedSlowChecks(self):
        """
        With checks that answer later, the replies to a pipelined group
        are still written at once, after the last check.
        """
        h = Harness()
        pending = []

        def checkRecipient(recipient, client):
            d = defer.Deferred()
            pending.append(d)
            return d

        h.resolver.checkRecipient = checkRecipient
        h.connect()
        writes = h.transport.writes
        h.send(
            b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@local.test>\r\n"
            b"RCPT TO:<x@remote.test>\r\nDATA\r\n"
        )
        self.assertEqual(len(pending), 1)
        pending[0].callback({"action": "none", "quick": False, "local": True})
        self.assertEqual((len(pending), h.transport.writes), (2, writes))
        pending[1].callback({"action": "none", "quick": False, "local": False})
        self.assertEqual(h.transport.writes, writes + 1)
        lines = h.take().split(b"\r\n")
        self.assertEqual(
            [l[:3] for l in lines[-5:-1]], [b"250", b"250", b"550", b"354"]
        )

    def test_timeout(self):
        """A silent client gets 421 4.4.2 after io_timeout."""
        h = Harness(ioTimeout=10)
        h.connect()
        h.clock.advance(9)
        h.send(b"NOOP\r\n")
        h.clock.advance(9)
        self.assertFalse(h.transport.disconnecting)
        h.clock.advance(2)
        self.assertEqual(h.take(), b"421 4.4.2 mx.test Error: timeout exceeded\r\n")
        self.assertTrue(h.transport.disconnecting)

    def test_qmgrRefuses(self):
        """QMGR refusing the session (icr/ios) is 421."""
        h = Harness()
        h.qmgr.refuseSession = {"code": 421, "dsn": "4.3.2", "text": "too many"}
        out = h.connect()
        self.assertEqual(out, b"421 4.3.2 mx.test too many\r\n")
        self.assertTrue(h.transport.disconnecting)

    def test_qmgrNoRoom(self):
        """checkAcceptance refusing is the reply to MAIL."""
        h = Harness()
        h.qmgr.refuseTransaction = {"code": 452, "dsn": "4.3.1", "text": "disk"}
        h.connect()
        out = h.send(b"EHLO c\r\nMAIL FROM:<a@b.test>\r\n")
        self.assertTrue(out.endswith(b"452 4.3.1 disk\r\n"))

    def test_maxSessions(self):
        """Sessions over the concurrency limit get 421 4.3.2."""
        h = Harness(maxSessions=1)
        h.connect()
        first = h.protocol
        out = h.connect()
        self.assertTrue(out.startswith(b"421 4.3.2 "))
        self.assertIsNot(first, h.protocol)

    def test_syntaxErrorLogged(self):
        """
        A command rejected by the machine is logged with its input, encoded
        (seed §9.1, App. C.2).
        """
        h = Harness()
        h.connect()
        out = h.send(b"EHLO c\r\nMAIL FROM: <a@b.test>\r\n")
        self.assertTrue(out.endswith(b"501 5.5.2 Syntax error in MAIL: path\r\n"))
        self.assertEqual(
            h.sink.lines()[-1],
            "ss_sess=%s, input=MAIL FROM: <a@b.test>, stat=501, "
            "reply=501 5.5.2 Syntax error in MAIL: path" % (h.protocol.sessionId,),
        )
        h.send(b"FOO,%\n")
        self.assertIn("input=FOO%2C%25, stat=500", h.sink.lines()[-1])

    def test_sessionClosed(self):
        """The end of a session is told to QMGR and aborts a transaction."""
        h = Harness()
        h.connect()
        h.send(
            b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@local.test>\r\nDATA\r\nxx"
        )
        h.protocol.connectionLost(None)
        self.assertEqual(h.qmgr.closed, [h.protocol.sessionId])
        self.assertEqual(len(h.store.aborted), 1)


class RelayTests(unittest.TestCase):
    """Nothing relays without a rule."""

    def rcpt(self, h, address, connect=True):
        if connect:
            h.connect()
            h.send(b"EHLO c\r\nMAIL FROM:<a@b.test>\r\n")
        return h.send(b"RCPT TO:<" + address + b">\r\n")

    def test_tricks(self):
        """Percent hacks, bang paths, quoted @ and routes do not relay."""
        for address in [
            b"x@remote.test",
            b"x%remote.test@local.test",
            b"remote.test!x@local.test",
            b'"x@remote.test"@local.test',
            b'"x%remote.test"@local.test',
            b"@local.test:x@remote.test",
            b"x%remote.test%local.test@local.test",
            b"x@local.test.",
            b"x@[127.0.0.1]",
        ]:
            out = self.rcpt(Harness(), address)
            self.assertTrue(out.startswith(b"5"), (address, out))
            self.assertNotIn(b"250 ", out)

    def test_local(self):
        """A local domain may be relayed to, and a local percent hack too."""
        self.assertTrue(self.rcpt(Harness(), b"x@local.test").startswith(b"250 "))
        out = self.rcpt(Harness(), b"x%local.test@local.test")
        self.assertTrue(out.startswith(b"250 "))
        self.assertTrue(self.rcpt(Harness(), b"Postmaster").startswith(b"250 "))

    def test_lmtpDoesNotImplyRelaying(self):
        """With lmtp_does_not_imply_relaying a local domain needs a rule."""
        h = Harness(lmtpImpliesRelaying=False)
        self.assertTrue(self.rcpt(h, b"x@local.test").startswith(b"550 5.7.1 "))
        h = Harness(lmtpImpliesRelaying=False, access=True)
        h.resolver.recipients["x@local.test"] = {
            "action": "relay",
            "quick": False,
            "reply": None,
        }
        self.assertTrue(self.rcpt(h, b"x@local.test").startswith(b"250 "))

    def test_cltaddrRelay(self):
        """A cltaddr: relay entry allows relaying, only with access."""
        for access, expected in [(True, b"250 "), (False, b"550 ")]:
            h = Harness(access=access)
            h.resolver.clients["10.1.2.3"] = {
                "action": "relay",
                "quick": False,
                "reply": None,
            }
            self.assertTrue(self.rcpt(h, b"x@remote.test").startswith(expected))

    def test_sessionRecordSaysRelay(self):
        """
        The first record of a session says whether the client may relay
        (App. C.2): C{relay=1} for a C{cltaddr:} relay entry, else
        C{relay=0}.
        """
        for action, relay in [("relay", "1"), ("ok", "0")]:
            h = Harness(access=True)
            h.resolver.clients["10.1.2.3"] = {
                "action": action,
                "quick": False,
                "reply": None,
                "clientName": "c.test",
            }
            h.connect()
            record = h.records()[0]
            self.assertEqual(record["ss_sess"], h.protocol.sessionId)
            self.assertEqual(record["client_name"], "c.test")
            self.assertEqual(record["relay"], relay)

    def test_toRelay(self):
        """A to: relay entry allows relaying to that address."""
        h = Harness(access=True)
        h.resolver.recipients["x@remote.test"] = {
            "action": "relay",
            "quick": False,
            "reply": None,
        }
        self.assertTrue(self.rcpt(h, b"x@remote.test").startswith(b"250 "))
        self.assertTrue(self.rcpt(h, b"y@remote.test", False).startswith(b"550 "))

    def test_softbounce(self):
        """softbounce: relaying denied is 450 4.7.1."""
        out = self.rcpt(Harness(softbounce=True), b"x@remote.test")
        self.assertTrue(out.startswith(b"450 4.7.1 "))

    def test_auth(self):
        """AUTH with a trusted mechanism allows relaying; others do not."""
        checker = InMemoryUsernamePasswordDatabaseDontUse(user=b"secret")
        for trusted, expected in [(("PLAIN",), b"250 "), ((), b"550 ")]:
            h = Harness(
                authChecker=checker,
                authMechanisms=("PLAIN", "LOGIN"),
                trustedMechanisms=trusted,
                authRequiresTLS=False,
            )
            h.connect()
            out = h.send(b"EHLO c\r\n")
            self.assertIn(b"250-AUTH PLAIN LOGIN\r\n", out)
            token = base64.b64encode(b"\0user\0secret")
            out = h.send(b"AUTH PLAIN " + token + b"\r\n")
            self.assertEqual(out, b"235 2.7.0 Authentication successful\r\n")
            out = h.send(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@remote.test>\r\n")
            self.assertTrue(out.split(b"\r\n")[1].startswith(expected), out)

    def test_authFails(self):
        """Wrong credentials: 535 5.7.8."""
        h = Harness(
            authChecker=InMemoryUsernamePasswordDatabaseDontUse(user=b"secret"),
            authMechanisms=("LOGIN",),
            authRequiresTLS=False,
        )
        h.connect()
        h.send(b"EHLO c\r\n")
        self.assertEqual(h.send(b"AUTH LOGIN\r\n"), b"334 VXNlcm5hbWU6\r\n")
        self.assertEqual(
            h.send(base64.b64encode(b"user") + b"\r\n"), b"334 UGFzc3dvcmQ6\r\n"
        )
        out = h.send(base64.b64encode(b"wrong") + b"\r\n")
        self.assertEqual(out, b"535 5.7.8 Authentication credentials invalid\r\n")
        self.assertEqual(h.send(b"AUTH LOGIN =\r\n"), b"334 UGFzc3dvcmQ6\r\n")


class AccessTests(unittest.TestCase):
    """The access flag, delay_checks and quick:."""

    def error(self, code=550, dsn="5.7.1", text="No", quick=False):
        return {
            "action": "error",
            "quick": quick,
            "reply": {"code": code, "dsn": dsn, "text": text},
        }

    def test_clientRejected(self):
        """A cltaddr: error refuses the session (554)."""
        h = Harness(access=True)
        h.resolver.clients["10.1.2.3"] = self.error()
        out = h.connect()
        self.assertEqual(out, b"554 5.7.1 mx.test No\r\n")

    def test_clientDelayed(self):
        """With delay_checks the client's rejection comes at RCPT."""
        h = Harness(access=True, delayChecks=True)
        h.resolver.clients["10.1.2.3"] = self.error()
        self.assertTrue(h.connect().startswith(b"220 "))
        out = h.send(b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@local.test>\r\n")
        self.assertTrue(out.endswith(b"550 5.7.1 No\r\n"))

    def test_senderRejected(self):
        """A from: error rejects MAIL, or with delay_checks the RCPTs."""
        h = Harness(access=True)
        h.resolver.senders["a@b.test"] = self.error(text="No spammers")
        h.connect()
        out = h.send(b"EHLO c\r\nMAIL FROM:<a@b.test>\r\n")
        self.assertTrue(out.endswith(b"550 5.7.1 No spammers\r\n"))
        h = Harness(access=True, delayChecks=True)
        h.resolver.senders["a@b.test"] = self.error(text="No spammers")
        h.resolver.recipients["abuse@local.test"] = {
            "action": "ok",
            "quick": True,
            "reply": None,
        }
        h.connect()
        out = h.send(
            b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@local.test>\r\n"
            b"RCPT TO:<abuse@local.test>\r\n"
        )
        lines = out.split(b"\r\n")
        self.assertTrue(lines[-4].startswith(b"250 2.1.0"))
        self.assertEqual(lines[-3], b"550 5.7.1 No spammers")
        self.assertTrue(lines[-2].startswith(b"250 2.1.5"))

    def test_quickError(self):
        """quick:error rejects at once even with delay_checks."""
        h = Harness(access=True, delayChecks=True)
        h.resolver.senders["a@b.test"] = self.error(quick=True)
        h.connect()
        out = h.send(b"EHLO c\r\nMAIL FROM:<a@b.test>\r\n")
        self.assertTrue(out.endswith(b"550 5.7.1 No\r\n"))

    def test_recipientError(self):
        """A to: error rejects the recipient with its reply."""
        h = Harness(access=True)
        h.resolver.recipients["root@local.test"] = self.error(
            551, "5.7.1", "No mail to root"
        )
        h.connect()
        out = h.send(b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<root@local.test>\r\n")
        self.assertTrue(out.endswith(b"551 5.7.1 No mail to root\r\n"))

    def test_discard(self):
        """A from: discard accepts the message and queues nothing."""
        h = Harness(access=True)
        h.resolver.senders["a@b.test"] = {
            "action": "discard",
            "quick": False,
            "reply": None,
        }
        h.connect()
        h.send(b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@local.test>\r\nDATA\r\n")
        out = h.send(b"x\r\n.\r\n")
        self.assertTrue(out.startswith(b"250 2.0.0 "))
        self.assertEqual(h.qmgr.envelopes, [])

    def test_tempfail(self):
        """A resolver failure is 451 4.3.0, logged."""
        h = Harness(access=True)
        h.resolver.checkSender = lambda s, c: defer.fail(RuntimeError("boom"))
        h.connect()
        out = h.send(b"EHLO c\r\nMAIL FROM:<a@b.test>\r\n")
        self.assertTrue(
            out.endswith(b"451 4.3.0 Temporary failure, please try again later\r\n")
        )
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertIn("sev=ERR", h.sink.lines()[-1])

    def test_clientName(self):
        """With access the client name is logged and in Received:."""
        h = Harness(access=True)
        h.resolver.clients["10.1.2.3"] = {
            "action": "none",
            "quick": False,
            "reply": None,
            "clientName": "client.example",
        }
        h.connect()
        self.assertEqual(h.records()[0]["client_name"], "client.example")
        h.send(b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@local.test>\r\nDATA\r\n")
        h.send(b"x\r\n.\r\n")
        [content] = h.store.contents.values()
        self.assertTrue(
            content.startswith(b"Received: from c (client.example [10.1.2.3])\r\n")
        )

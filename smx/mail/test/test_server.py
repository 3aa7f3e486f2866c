# -*- test-case-name: smx.mail.test.test_server -*-
"""
Tests for L{smx.mail.server}, the sans-I/O ESMTP server machine.
"""

from twisted.trial import unittest

from smx.mail import server as sm
from smx.mail.testing import serverConnection


def run(conn, data=b"", answer=None):
    """
    Feed C{data}, answer every event (accept by default, or C{answer(event)}
    which may call accept/reject itself), return (events, output).
    """
    if data:
        conn.receiveData(data)
    events = []
    while True:
        event = conn.nextEvent()
        if event in (sm.NEED_DATA, sm.CLOSE, sm.PAUSED):
            events.append(event)
            break
        events.append(event)
        if event.needsReply:
            if answer is None or not answer(conn, event):
                conn.accept()
    return events, conn.dataToSend()


def started(**kw):
    conn = serverConnection("mx.test", **kw)
    conn.greet()
    conn.dataToSend()
    return conn


def inTransaction(**kw):
    conn = started(**kw)
    run(conn, b"EHLO client.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\n")
    return conn


class GreetingTests(unittest.TestCase):
    """The greeting and the refusals."""

    def test_greeting(self):
        """The greeting is 220 with the host name and no status code."""
        conn = serverConnection("mx.test")
        conn.greet()
        self.assertEqual(conn.dataToSend(), b"220 mx.test ESMTP smx\r\n")

    def test_refuseTemporary(self):
        """A 4xx refusal is 421 and ends the session."""
        conn = serverConnection("mx.test")
        conn.refuse(451, "4.7.1", "go away")
        self.assertEqual(conn.dataToSend(), b"421 4.7.1 mx.test go away\r\n")
        self.assertIs(conn.nextEvent(), sm.CLOSE)

    def test_refusePermanent(self):
        """
        A 5xx refusal greets with 554 and answers 503 to everything but
        QUIT (RFC 5321 §3.1).
        """
        conn = serverConnection("mx.test")
        conn.refuse(550, "5.7.1", "no")
        self.assertEqual(conn.dataToSend(), b"554 5.7.1 mx.test no\r\n")
        events, out = run(conn, b"EHLO x\r\nQUIT\r\n")
        self.assertTrue(out.startswith(b"503 5.5.1 "))
        self.assertIsInstance(events[0], sm.Quit)
        self.assertTrue(out.endswith(b"221 2.0.0 mx.test closing connection\r\n"))

    def test_softbounceRefusal(self):
        """With softbounce a 5xx refusal becomes 421."""
        conn = serverConnection("mx.test", softbounce=True)
        conn.refuse(550, "5.7.1", "no")
        self.assertEqual(conn.dataToSend(), b"421 4.7.1 mx.test no\r\n")


class EhloTests(unittest.TestCase):
    """EHLO and HELO."""

    def test_ehloKeywords(self):
        """EHLO lists the extensions in force."""
        conn = started(maxMessageSize=1000, tlsAvailable=True)
        events, out = run(conn, b"EHLO client.test\r\n")
        self.assertEqual(events[0].name, "client.test")
        self.assertTrue(events[0].extended)
        self.assertEqual(
            out,
            b"250-mx.test Hello\r\n250-PIPELINING\r\n250-SIZE 1000\r\n"
            b"250-SMTPUTF8\r\n250-CHUNKING\r\n250-DSN\r\n"
            b"250-ENHANCEDSTATUSCODES\r\n250-STARTTLS\r\n250 HELP\r\n",
        )

    def test_8bitmime(self):
        """8BITMIME is offered only with the 8bitmime flag."""
        _, out = run(started(eightBitMime=True), b"EHLO c\r\n")
        self.assertIn(b"250-8BITMIME\r\n", out)
        _, out = run(started(), b"EHLO c\r\n")
        self.assertNotIn(b"8BITMIME", out)

    def test_authOnlyAfterTLS(self):
        """AUTH is offered only after STARTTLS unless configured otherwise."""
        conn = started(tlsAvailable=True, authMechanisms=("PLAIN",))
        _, out = run(conn, b"EHLO c\r\n")
        self.assertNotIn(b"AUTH", out)
        conn.tlsStarted()
        _, out = run(conn, b"EHLO c\r\n")
        self.assertIn(b"250-AUTH PLAIN\r\n", out)
        self.assertNotIn(b"STARTTLS", out)
        conn = started(authMechanisms=("PLAIN",), authRequiresTLS=False)
        _, out = run(conn, b"EHLO c\r\n")
        self.assertIn(b"250-AUTH PLAIN\r\n", out)

    def test_heloNeedsName(self):
        """HELO and EHLO without a name get 501."""
        _, out = run(started(), b"EHLO\r\nHELO \r\nEHLO a b\r\n")
        self.assertEqual(out.count(b"501 5.5.4 Syntax: "), 3)

    def test_helo(self):
        """HELO answers with one line."""
        events, out = run(started(), b"HELO client\r\n")
        self.assertFalse(events[0].extended)
        self.assertEqual(out, b"250 mx.test\r\n")


class MailTests(unittest.TestCase):
    """MAIL FROM."""

    def test_needHelo(self):
        """MAIL before EHLO is a sequence error."""
        _, out = run(started(), b"MAIL FROM:<a@b.test>\r\n")
        self.assertTrue(out.startswith(b"503 5.5.1 "))

    def test_strictSyntax(self):
        """
        A space after the colon, missing brackets or a missing colon give
        501 (seed §9.1); the session goes on.
        """
        for line in [
            b"MAIL FROM: <a@b.test>",
            b"MAIL FROM:a@b.test",
            b"MAIL FROM <a@b.test>",
            b"MAIL FROM:<a@b.test",
            b"MAIL FROM:<a b@c.test>",
            b"MAIL FROM:<@b.test>",
            b"MAIL FROM:<a@>",
            b"MAIL FROM:<a@b.test>  SIZE=1",
            b"MAIL",
        ]:
            conn = started()
            run(conn, b"EHLO c\r\n")
            events, out = run(conn, line + b"\r\n")
            self.assertEqual(events, [sm.NEED_DATA], line)
            self.assertTrue(out.startswith(b"501 5."), (line, out))

    def test_caseInsensitive(self):
        """Verbs and FROM: are case-insensitive."""
        events, _ = run(started(), b"ehlo c\r\nmail from:<A@B.test>\r\n")
        self.assertEqual(events[1].sender, "A@B.test")

    def test_nullSender(self):
        """<> is the null reverse path."""
        events, out = run(started(), b"EHLO c\r\nMAIL FROM:<>\r\n")
        self.assertEqual(events[1].sender, "")
        self.assertIn(b"250 2.1.0 <>", out)

    def test_sourceRoute(self):
        """A source route is accepted and dropped."""
        events, _ = run(
            started(), b"EHLO c\r\nMAIL FROM:<@x.test,@y.test:a@b.test>\r\n"
        )
        self.assertEqual(events[1].sender, "a@b.test")

    def test_size(self):
        """SIZE= is parsed; over the limit it is 552 5.3.4."""
        events, _ = run(
            started(maxMessageSize=100), b"EHLO c\r\nMAIL FROM:<a@b.c> SIZE=99\r\n"
        )
        self.assertEqual(events[1].size, 99)
        events, out = run(
            started(maxMessageSize=100), b"EHLO c\r\nMAIL FROM:<a@b.c> SIZE=101\r\n"
        )
        self.assertIn(b"552 5.3.4 ", out)
        self.assertEqual(len(events), 2)

    def test_unknownParameter(self):
        """An unknown parameter is 555 5.5.4; BODY=8BITMIME needs the flag."""
        for params in [b"FOO=BAR", b"BODY=8BITMIME", b"BODY=BINARYMIME", b"SIZE=x"]:
            _, out = run(started(), b"EHLO c\r\nMAIL FROM:<a@b.c> " + params + b"\r\n")
            self.assertIn(b"555 5.5.4 ", out, params)
        events, _ = run(
            started(eightBitMime=True), b"EHLO c\r\nMAIL FROM:<a@b.c> BODY=8BITMIME\r\n"
        )
        self.assertEqual(events[1].body, "8BITMIME")

    def test_sizeNotAsciiDigits(self):
        """
        SIZE= with a character that str.isdigit() takes but int() does not
        (superscript two) is 555 5.5.4 like any bad SIZE, not a traceback.
        """
        line = "EHLO c\r\nMAIL FROM:<a@b.c> SIZE=1\u00b2\r\n".encode("utf-8")
        events, out = run(started(), line)
        self.assertIn(b"555 5.5.4 ", out)
        self.assertEqual(len(events), 2)

    def test_parametersNeedEhlo(self):
        """After HELO, MAIL takes no parameters."""
        _, out = run(started(), b"HELO c\r\nMAIL FROM:<a@b.c> SIZE=1\r\n")
        self.assertIn(b"555 5.5.4 ", out)

    def test_nested(self):
        """A second MAIL in a transaction is 503."""
        conn = inTransaction()
        _, out = run(conn, b"MAIL FROM:<x@y.z>\r\n")
        self.assertTrue(out.startswith(b"503 5.5.1 "))

    def test_maxTransactions(self):
        """max_transactions limits MAIL commands per session."""
        conn = started(maxTransactions=1)
        run(conn, b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRSET\r\n")
        _, out = run(conn, b"MAIL FROM:<a@b.c>\r\n")
        self.assertTrue(out.startswith(b"452 4."))


class RcptTests(unittest.TestCase):
    """RCPT TO."""

    def test_needMail(self):
        """RCPT without MAIL is 503."""
        _, out = run(started(), b"EHLO c\r\nRCPT TO:<a@b.c>\r\n")
        self.assertTrue(out.endswith(b"503 5.5.1 Need MAIL before RCPT\r\n"))

    def test_postmaster(self):
        """<postmaster> without a domain is a valid recipient."""
        conn = inTransaction()
        events, _ = run(conn, b"RCPT TO:<Postmaster>\r\n")
        self.assertEqual(events[0].recipient, "Postmaster")

    def test_nullRecipient(self):
        """<> is no forward path."""
        _, out = run(inTransaction(), b"RCPT TO:<>\r\n")
        self.assertTrue(out.startswith(b"501 "))

    def test_parameters(self):
        """RCPT parameters other than NOTIFY and ORCPT are 555."""
        _, out = run(inTransaction(), b"RCPT TO:<a@b.c> FOO=BAR\r\n")
        self.assertTrue(out.startswith(b"555 5.5.4"))

    def test_perTransaction(self):
        """max_recipients_per_transaction: 452 4.5.3 beyond it."""
        conn = inTransaction(maxRecipientsPerTransaction=2)
        _, out = run(conn, b"RCPT TO:<x@d.test>\r\nRCPT TO:<y@d.test>\r\n")
        self.assertEqual(out.count(b"250 "), 1)
        self.assertIn(b"452 4.5.3 Too many recipients\r\n", out)

    def test_perSession(self):
        """max_recipients_per_session counts over transactions."""
        conn = started(maxRecipientsPerSession=2)
        run(conn, b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<x@d.test>\r\nRSET\r\n")
        _, out = run(
            conn, b"MAIL FROM:<a@b.c>\r\nRCPT TO:<x@d.test>\r\nRCPT TO:<y@d.test>\r\n"
        )
        self.assertIn(b"452 4.5.3 ", out)

    def test_rejectedNotCounted(self):
        """A rejected recipient does not count, DATA then has none."""
        conn = started()

        def answer(conn, event):
            if isinstance(event, sm.RcptTo):
                conn.reject(550, "5.7.1", "Relaying denied")
                return True

        _, out = run(
            conn, b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<x@y.z>\r\nDATA\r\n", answer
        )
        self.assertIn(b"550 5.7.1 Relaying denied\r\n", out)
        self.assertTrue(out.endswith(b"554 5.5.1 No valid recipients\r\n"))


class LineTests(unittest.TestCase):
    """Line ends, lengths and bad commands."""

    def test_bareLF(self):
        """A command ending in a bare LF is not executed."""
        events, out = run(started(), b"EHLO c\nQUIT\r\n")
        self.assertIsInstance(events[0], sm.Quit)
        self.assertTrue(out.startswith(b"500 5.5.2 "))

    def test_bareCR(self):
        """A bare CR inside a command line is a syntax error."""
        events, out = run(started(), b"EHLO c\rMAIL FROM:<a@b.c>\r\n")
        self.assertEqual(events, [sm.NEED_DATA])
        self.assertTrue(out.startswith(b"500 5.5.2 "))

    def test_longLine(self):
        """
        A command line over 512 bytes is 500 5.5.2 and is skipped to its
        end, even when it arrives in pieces.
        """
        conn = started()
        events, out = run(conn, b"NOOP " + b"x" * 600)
        self.assertEqual(out, b"500 5.5.2 Line too long\r\n")
        events, out = run(conn, b"y" * 100 + b"\r\nNOOP\r\n")
        self.assertEqual(out, b"250 2.0.0 OK\r\n")

    def test_nulInCommand(self):
        """A NUL in a command line is 500 5.5.2; the command is not run."""
        events, out = run(started(), b"EHLO c\x00\r\nNOOP\x00x\r\n")
        self.assertEqual(events, [sm.NEED_DATA])
        self.assertEqual(out.count(b"500 5.5.2 "), 2)

    def test_megabyteCommand(self):
        """
        A command line of a megabyte is 500 5.5.2 Line too long, read in
        pieces without being held, and the next command is answered.
        """
        conn = started()
        _, out = run(conn, b"MAIL FROM:<" + b"a" * 65536)
        self.assertEqual(out, b"500 5.5.2 Line too long\r\n")
        for i in range(15):
            _, out = run(conn, b"a" * 65536)
            self.assertEqual(out, b"")
            self.assertEqual(conn._buffer, b"")
        _, out = run(conn, b"@b.test>\r\nNOOP\r\n")
        self.assertEqual(out, b"250 2.0.0 OK\r\n")

    def test_maxLine(self):
        """512 bytes with CRLF is allowed."""
        line = b"NOOP " + b"x" * 505 + b"\r\n"
        self.assertEqual(len(line), 512)
        _, out = run(started(), line)
        self.assertEqual(out, b"250 2.0.0 OK\r\n")
        _, out = run(started(), b"NOOP " + b"x" * 506 + b"\r\n")
        self.assertEqual(out, b"500 5.5.2 Line too long\r\n")

    def test_unknown(self):
        """An unknown command is 500 5.5.1."""
        _, out = run(started(), b"FOO\r\n")
        self.assertEqual(out, b"500 5.5.1 Command unrecognized\r\n")

    def test_tooManyBad(self):
        """More than max_bad_commands_per_session: 421 4.7.0 and close."""
        conn = started(maxBadCommands=2)
        events, out = run(conn, b"FOO\r\nBAR\r\nBAZ\r\nNOOP\r\n")
        self.assertEqual(events, [sm.CLOSE])
        self.assertEqual(out.count(b"500 5.5.1"), 2)
        self.assertTrue(
            out.endswith(
                b"421 4.7.0 mx.test Too many bad commands; closing connection\r\n"
            )
        )

    def test_nonAscii(self):
        """8-bit bytes in a command are a syntax error."""
        _, out = run(started(), b"EHLO \xff\r\n")
        self.assertTrue(out.startswith(b"500 5.5.2"))

    def test_simpleCommands(self):
        """NOOP, HELP, VRFY, EXPN, RSET are answered."""
        _, out = run(started(), b"NOOP\r\nHELP\r\nVRFY a\r\nEXPN a\r\nRSET\r\n")
        self.assertEqual(
            [l[:9] for l in out.split(b"\r\n")[:-1]],
            [b"250 2.0.0", b"214 2.0.0", b"252 2.5.2", b"502 5.5.1", b"250 2.0.0"],
        )

    def test_pipelinedBatch(self):
        """Replies to a pipelined group come out together, in order."""
        conn = started()
        events, out = run(
            conn,
            b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<x@y.z>\r\nRCPT TO:<q@y.z>\r\nNOOP\r\n",
        )
        self.assertEqual(events[-1], sm.NEED_DATA)
        self.assertEqual(out.count(b"\r\n250 2.1.5"), 2)
        self.assertTrue(out.endswith(b"250 2.0.0 OK\r\n"))

    def test_paused(self):
        """Until an event is answered, the next is not given."""
        conn = started()
        conn.receiveData(b"EHLO c\r\nNOOP\r\n")
        self.assertIsInstance(conn.nextEvent(), sm.Helo)
        self.assertIs(conn.nextEvent(), sm.PAUSED)
        conn.accept()
        self.assertIs(conn.nextEvent(), sm.NEED_DATA)
        self.assertTrue(conn.dataToSend().endswith(b"250 2.0.0 OK\r\n"))


class DataTests(unittest.TestCase):
    """DATA: end, dot-unstuffing, limits, smuggling."""

    def data(self, body, **kw):
        conn = inTransaction(**kw)
        events, out = run(conn, b"DATA\r\n" + body)
        chunks = b"".join(e.data for e in events if isinstance(e, sm.DataChunk))
        ends = [e for e in events if isinstance(e, sm.EndOfData)]
        return conn, chunks, ends, out

    def test_simple(self):
        """Content up to CRLF.CRLF, dot-unstuffed."""
        _, chunks, ends, out = self.data(b"Subject: x\r\n\r\n..a\r\nb\r\n.\r\n")
        self.assertEqual(chunks, b"Subject: x\r\n\r\n.a\r\nb\r\n")
        self.assertEqual(ends[0].size, len(chunks))
        self.assertTrue(out.startswith(b"354 "))
        self.assertTrue(out.endswith(b"250 2.0.0 Message accepted for delivery\r\n"))

    def test_empty(self):
        """An empty message ends at the first dot."""
        _, chunks, ends, _ = self.data(b".\r\n")
        self.assertEqual((chunks, ends[0].size), (b"", 0))

    def test_byteByByte(self):
        """The same content fed one byte at a time gives the same result."""
        body = b"A: b\r\nReceived: x\r\n\r\n..\r\n.x\r\nline\r\n\r\n.\r\nNOOP\r\n"
        conn = inTransaction()
        run(conn, b"DATA\r\n")
        got = []
        ends = []
        for i in range(len(body)):
            events, out = run(conn, body[i : i + 1])
            got.extend(e.data for e in events if isinstance(e, sm.DataChunk))
            ends.extend(e for e in events if isinstance(e, sm.EndOfData))
        self.assertEqual(
            b"".join(got), b"A: b\r\nReceived: x\r\n\r\n.\r\nx\r\nline\r\n\r\n"
        )
        self.assertEqual(ends[0].hops, 1)
        self.assertFalse(ends[0].badLineEnd)
        self.assertEqual(out, b"250 2.0.0 OK\r\n")

    def test_smuggling(self):
        """
        <LF>.<LF>, <CR>.<CR>, <LF>.<CRLF>, <CR>.<CRLF> and <CRLF>.<LF> end
        nothing; the content is marked bad, and the real end follows.
        """
        for fake in [
            b"\n.\n",
            b"\r.\r",
            b"\n.\r\n",
            b"\r.\r\n",
            b"\r\n.\n",
            b"\r\n.\r",
        ]:
            body = (
                b"Subject: x\r\n\r\nhello" + fake + b"MAIL FROM:<evil@x.test>\r\n.\r\n"
            )
            _, chunks, ends, out = self.data(body)
            self.assertEqual(len(ends), 1, fake)
            self.assertTrue(ends[0].badLineEnd, fake)
            self.assertNotIn(b"2.1.0", out)

    def test_bareLFInBody(self):
        """A bare LF anywhere in the content is reported."""
        _, _, ends, _ = self.data(b"a\r\nb\nc\r\n.\r\n")
        self.assertTrue(ends[0].badLineEnd)

    def test_nul(self):
        """
        A NUL byte in the content is reported, and nothing from the chunk
        that has it on is passed on: C{<CRLF><NUL>.<CRLF>} (an end of data
        for a next hop that drops NULs) reaches no one.
        """
        _, chunks, ends, out = self.data(
            b"Subject: x\r\n\r\na\r\n\x00.\r\nMAIL FROM:<evil@x.test>\r\n.\r\n"
        )
        self.assertEqual(len(ends), 1)
        self.assertTrue(ends[0].nul)
        self.assertFalse(ends[0].badLineEnd)
        self.assertEqual(chunks, b"")
        self.assertNotIn(b"2.1.0", out)
        conn = inTransaction()
        run(conn, b"DATA\r\n")
        events, _ = run(conn, b"clean\r\n")
        self.assertEqual(events[0].data, b"clean\r\n")
        events, _ = run(conn, b"x\x00y\r\nmore\r\n")
        self.assertEqual(events, [sm.NEED_DATA])
        events, _ = run(conn, b"after\r\n.\r\n")
        self.assertEqual(events[1:], [sm.NEED_DATA])
        self.assertTrue(events[0].nul)

    def test_nulAbsent(self):
        """Content without NUL is not flagged."""
        _, _, ends, _ = self.data(b"a\r\nb\x01c\r\n.\r\n")
        self.assertFalse(ends[0].nul)

    def test_maxTextLine(self):
        """
        A content line of 1000 octets with its CRLF (RFC 5321 §4.5.3.1.6)
        is passed on; one of 1001 is reported, and nothing from the chunk
        that has it on is passed on.
        """
        self.assertEqual(sm.MAX_TEXT_LINE, 1000)
        line = b"x" * 998 + b"\r\n"
        _, chunks, ends, _ = self.data(line + line + b".\r\n")
        self.assertFalse(ends[0].longLine)
        self.assertEqual(chunks, line + line)
        _, chunks, ends, _ = self.data(line + b"y" + line + b".\r\n")
        self.assertTrue(ends[0].longLine)
        self.assertEqual(chunks, b"")
        # a stuffed dot is not part of the line
        _, _, ends, _ = self.data(b"." + line + b".\r\n")
        self.assertFalse(ends[0].longLine)

    def test_longLineInPieces(self):
        """
        A line that arrives in pieces is measured across them, whatever
        the size of the pieces.
        """
        for size in (1, 7, 333, 999, 1000, 1001, 4096):
            for body, long in [
                (b"ab\r\n" + b"x" * 998 + b"\r\n" + b"cd\r\n", False),
                (b"ab\r\n" + b"x" * 999 + b"\r\n" + b"cd\r\n", True),
                (b"x" * 999 + b"\r\n", True),
                ((b"y" * 500 + b"\r\n") * 5, False),
            ]:
                conn = inTransaction()
                run(conn, b"DATA\r\n")
                data = body + b".\r\n"
                ends = []
                for i in range(0, len(data), size):
                    events, _ = run(conn, data[i : i + size])
                    ends.extend(e for e in events if isinstance(e, sm.EndOfData))
                self.assertEqual(len(ends), 1, (size, body[:10]))
                self.assertEqual(ends[0].longLine, long, (size, len(body)))

    def test_longLineNotHeld(self):
        """
        A line of a megabyte sent in pieces is not held in memory: each
        piece is taken and dropped, nothing of it is passed on, and the
        message ends at the final dot.
        """
        conn = inTransaction()
        run(conn, b"DATA\r\nSubject: x\r\n\r\n")
        passed = 0
        for i in range(16):
            events, _ = run(conn, b"z" * 65536)
            passed += sum(len(e.data) for e in events if isinstance(e, sm.DataChunk))
            self.assertLess(len(conn._buffer), 3)
        self.assertLess(passed, 65536)
        events, out = run(conn, b"\r\n.\r\nNOOP\r\n")
        self.assertTrue(events[0].longLine)
        self.assertTrue(out.endswith(b"250 2.0.0 OK\r\n"))

    def test_tooBig(self):
        """Over the size limit the content is read to its end, flagged."""
        _, chunks, ends, _ = self.data(
            b"x" * 200 + b"\r\n" + b"y" * 200 + b"\r\n.\r\n", maxMessageSize=100
        )
        self.assertTrue(ends[0].tooBig)
        self.assertEqual(chunks, b"")

    def test_headers(self):
        """Received: headers are counted and Message-Id found."""
        body = b"Received: a\r\nreceived: b\r\nMessage-ID:\r\n <x@y>\r\n\r\nReceived: body\r\n.\r\n"
        _, _, ends, _ = self.data(body)
        self.assertEqual((ends[0].hops, ends[0].messageId), (2, "<x@y>"))

    def test_tlsRequiredNo(self):
        """
        C{TLS-Required: No} in the header (RFC 8689 §3, any case, folded)
        is flagged; another value, or the field in the body, is not.
        """
        for header, expected in [
            (b"TLS-Required: No\r\n", True),
            (b"tls-required:\r\n  NO \r\n", True),
            (b"TLS-Required: Yes\r\n", False),
            (b"TLS-Required: No way\r\n", False),
            (b"X: y\r\n", False),
        ]:
            body = b"Subject: s\r\n" + header + b"\r\nTLS-Required: No\r\n.\r\n"
            _, _, ends, _ = self.data(body)
            self.assertIs(ends[0].tlsRequiredNo, expected, header)

    def test_pipelinedAfterData(self):
        """Commands after the final dot are read as commands."""
        _, _, ends, out = self.data(b"x\r\n.\r\nMAIL FROM:<a@b.c>\r\n")
        self.assertTrue(out.endswith(b"250 2.1.0 <a@b.c>... Sender ok\r\n"))

    def test_rejectEnd(self):
        """A rejected end of data resets the transaction."""

        def answer(conn, event):
            if isinstance(event, sm.EndOfData):
                conn.reject(554, "5.6.11", "bad")
                return True

        conn = inTransaction()
        _, out = run(conn, b"DATA\r\nx\r\n.\r\nRCPT TO:<a@b.c>\r\n", answer)
        self.assertIn(b"554 5.6.11 bad\r\n", out)
        self.assertTrue(out.endswith(b"503 5.5.1 Need MAIL before RCPT\r\n"))


class TLSTests(unittest.TestCase):
    """STARTTLS in the machine."""

    def test_discardPipelined(self):
        """
        Commands pipelined after STARTTLS are discarded (CVE-2011-0411)
        and the session starts over after the handshake.
        """
        conn = started(tlsAvailable=True)
        events, out = run(conn, b"EHLO c\r\nSTARTTLS\r\nMAIL FROM:<evil@x.test>\r\n")
        self.assertIsInstance(events[1], sm.StartTLS)
        self.assertTrue(out.endswith(b"220 2.0.0 Ready to start TLS\r\n"))
        conn.receiveData(b"RCPT TO:<a@b.c>\r\n")
        conn.tlsStarted()
        self.assertIs(conn.nextEvent(), sm.NEED_DATA)
        _, out = run(conn, b"MAIL FROM:<a@b.c>\r\n")
        self.assertTrue(out.startswith(b"503 5.5.1"))

    def test_requireTLSOffered(self):
        """
        REQUIRETLS (RFC 8689) is offered in EHLO only after STARTTLS,
        never in LMTP.
        """
        conn = started(tlsAvailable=True)
        _, out = run(conn, b"EHLO c\r\n")
        self.assertNotIn(b"REQUIRETLS", out)
        conn.tlsStarted()
        _, out = run(conn, b"EHLO c\r\n")
        self.assertIn(b"250-REQUIRETLS\r\n", out)
        conn = started(tlsAvailable=True, lmtp=True)
        conn.tlsStarted()
        _, out = run(conn, b"LHLO c\r\n")
        self.assertNotIn(b"REQUIRETLS", out)

    def test_requireTLS(self):
        """
        C{MAIL ... REQUIRETLS} in a TLS session is a L{sm.MailFrom} with
        C{requiretls}; without TLS it is 530 5.7.10 (not a bad command),
        with a value 555.
        """
        conn = started(tlsAvailable=True, maxBadCommands=1)
        events, out = run(
            conn,
            b"EHLO c\r\nMAIL FROM:<a@b.test> REQUIRETLS\r\n"
            b"MAIL FROM:<a@b.test> REQUIRETLS\r\n",
        )
        self.assertEqual(
            out.split(b"\r\n")[-3:],
            [
                b"530 5.7.10 REQUIRETLS needs a TLS session",
                b"530 5.7.10 REQUIRETLS needs a TLS session",
                b"",
            ],
        )
        self.assertEqual(len(events), 2)
        conn.tlsStarted()
        events, out = run(
            conn,
            b"EHLO c\r\nMAIL FROM:<a@b.test> REQUIRETLS=yes\r\n"
            b"MAIL FROM:<a@b.test> requiretls\r\n",
        )
        self.assertIn(b"555 5.5.4 Unsupported or malformed parameter REQUIRETLS", out)
        self.assertTrue(events[1].requiretls)
        self.assertTrue(out.endswith(b"250 2.1.0 <a@b.test>... Sender ok\r\n"))
        events, _ = run(conn, b"RSET\r\nMAIL FROM:<a@b.test>\r\n")
        self.assertFalse(events[1].requiretls)

    def test_notAvailable(self):
        """STARTTLS without a certificate is 502; twice is 503."""
        _, out = run(started(), b"STARTTLS\r\n")
        self.assertTrue(out.startswith(b"502 5.5.1"))
        conn = started(tlsAvailable=True)
        conn.tlsStarted()
        _, out = run(conn, b"STARTTLS\r\n")
        self.assertTrue(out.startswith(b"503 5.5.1"))


class AuthTests(unittest.TestCase):
    """AUTH in the machine."""

    def test_challenge(self):
        """334 challenges and responses, then 235."""
        conn = started(authMechanisms=("LOGIN",), authRequiresTLS=False)
        run(conn, b"EHLO c\r\n")
        conn.receiveData(b"AUTH LOGIN\r\n")
        self.assertEqual(conn.nextEvent().mechanism, "LOGIN")
        conn.challenge("VXNlcm5hbWU6")
        conn.receiveData(b"dXNlcg==\r\n")
        event = conn.nextEvent()
        self.assertEqual(event.line, "dXNlcg==")
        conn.accept()
        self.assertTrue(conn.authenticated)
        self.assertEqual(
            conn.dataToSend(),
            b"334 VXNlcm5hbWU6\r\n235 2.7.0 Authentication successful\r\n",
        )

    def test_cancel(self):
        """A * cancels the exchange."""
        conn = started(authMechanisms=("PLAIN",), authRequiresTLS=False)
        run(conn, b"EHLO c\r\n")
        conn.receiveData(b"AUTH PLAIN\r\n")
        conn.nextEvent()
        conn.challenge("")
        _, out = run(conn, b"*\r\n")
        self.assertEqual(out, b"334 \r\n501 5.7.0 Authentication aborted\r\n")

    def test_needsTLS(self):
        """Without TLS, AUTH is refused with 538."""
        conn = started(authMechanisms=("PLAIN",), tlsAvailable=True)
        _, out = run(conn, b"EHLO c\r\nAUTH PLAIN\r\n")
        self.assertIn(b"538 5.7.11", out)

    def test_unknownMechanism(self):
        """An unknown mechanism is 504."""
        conn = started(authMechanisms=("PLAIN",), authRequiresTLS=False)
        _, out = run(conn, b"EHLO c\r\nAUTH GSSAPI\r\n")
        self.assertIn(b"504 5.5.4", out)


class SoftbounceTests(unittest.TestCase):
    """softbounce turns 5xy rejections into 4xy."""

    def test_reject(self):
        """A policy rejection becomes temporary, a syntax error does not."""
        conn = inTransaction(softbounce=True)

        def answer(conn, event):
            conn.reject(550, "5.7.1", "no")
            return True

        _, out = run(conn, b"RCPT TO:<x@y.z>\r\nRCPT TO: <x@y.z>\r\n", answer)
        self.assertEqual(out.split(b"\r\n")[0], b"450 4.7.1 no")
        self.assertTrue(out.split(b"\r\n")[1].startswith(b"501 5.5.2"))

    def test_formatReply(self):
        """Multi-line replies and control characters in texts."""
        self.assertEqual(
            sm.formatReply(550, "5.7.1", "a\nb\x00c"),
            b"550-5.7.1 a\r\n550 5.7.1 b c\r\n",
        )

    def test_formatReplyOneLine(self):
        """
        A one-line reply, with or without an enhanced status code; text
        that is not ASCII is replaced, a control character blanked.
        """
        self.assertEqual(sm.formatReply(250, "2.0.0", "Ok"), b"250 2.0.0 Ok\r\n")
        self.assertEqual(sm.formatReply(354, None, "Go ahead"), b"354 Go ahead\r\n")
        self.assertEqual(sm.formatReply(550, "5.1.1", "caf\xe9"), b"550 5.1.1 caf?\r\n")
        self.assertEqual(sm.formatReply(550, "", "a\tb"), b"550 a b\r\n")

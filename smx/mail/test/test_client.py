# -*- test-case-name: smx.mail.test.test_client -*-
"""
Tests for L{smx.mail.client}: the sans-I/O ESMTP/LMTP client machine, the
reply parser and the DATA encoder; the io_timeout of
L{smx.mail.clientprotocol.ClientProtocol}.
"""

from __future__ import annotations

from typing import Any, List

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from smx.mail.client import (
    CONVERSION_REQUIRED,
    BodyEncoder,
    ClientMachine,
    ProtocolError,
    Reply,
    ReplyParser,
    Send,
    SendBody,
    SessionFailed,
    SessionReady,
    StartTLS,
    TransactionDone,
    encodeBody,
    enhancedStatus,
    tooManyRecipients,
)
from smx.mail.clientprotocol import ClientProtocol


def r(line: bytes) -> Reply:
    """Parse one reply from C{line} (a complete reply, CRLF added)."""
    replies = ReplyParser().feed(line + b"\r\n")
    assert len(replies) == 1, replies
    return replies[0]


def sent(events: List[Any]) -> bytes:
    """The bytes of every L{Send} in C{events}."""
    return b"".join(e.data for e in events if isinstance(e, Send))


class ReplyParserTests(SynchronousTestCase):
    """
    Tests for L{ReplyParser}.
    """

    def test_single(self) -> None:
        """A one-line reply gives its code and text."""
        self.assertEqual(
            ReplyParser().feed(b"250 2.0.0 ok\r\n"), [Reply(250, ["2.0.0 ok"])]
        )

    def test_multiline(self) -> None:
        """A multi-line reply is one L{Reply}, even split across reads."""
        p = ReplyParser()
        self.assertEqual(p.feed(b"250-mx.test hello\r\n250-PIPE"), [])
        self.assertEqual(
            p.feed(b"LINING\r\n250 SIZE 1000\r\n"),
            [Reply(250, ["mx.test hello", "PIPELINING", "SIZE 1000"])],
        )

    def test_bareCode(self) -> None:
        """A reply of just three digits is accepted."""
        self.assertEqual(ReplyParser().feed(b"354\r\n"), [Reply(354, [""])])

    def test_text(self) -> None:
        """L{Reply.text} joins the lines behind the code."""
        self.assertEqual(
            Reply(550, ["5.1.1 no", "such user"]).text, "550 5.1.1 no such user"
        )

    def test_garbage(self) -> None:
        """Something that is not a reply raises L{ProtocolError}."""
        for bad in [b"hello\r\n", b"25 ok\r\n", b"999 x\r\n", b"250x\r\n"]:
            self.assertRaises(ProtocolError, ReplyParser().feed, bad)

    def test_mixedCodes(self) -> None:
        """Different codes in one multi-line reply are an error."""
        self.assertRaises(ProtocolError, ReplyParser().feed, b"250-a\r\n550 b\r\n")

    def test_tooLong(self) -> None:
        """An endless line is an error, not an endless buffer."""
        self.assertRaises(ProtocolError, ReplyParser().feed, b"2" * 10000)


class BodyEncoderTests(SynchronousTestCase):
    """
    Tests for L{BodyEncoder}: line ends and dot-stuffing for any body.
    """

    def test_crlf(self) -> None:
        """CRLF content passes unchanged, with the final dot added."""
        self.assertEqual(encodeBody(b"a\r\nb\r\n"), b"a\r\nb\r\n.\r\n")

    def test_loneLF(self) -> None:
        """A lone LF becomes CRLF."""
        self.assertEqual(encodeBody(b"a\nb\n"), b"a\r\nb\r\n.\r\n")

    def test_loneCR(self) -> None:
        """A lone CR becomes CRLF, also before a CRLF."""
        self.assertEqual(encodeBody(b"a\rb\r\r\n"), b"a\r\nb\r\n\r\n.\r\n")

    def test_noFinalNewline(self) -> None:
        """Content without a final line end gets one before the dot."""
        self.assertEqual(encodeBody(b"a"), b"a\r\n.\r\n")

    def test_empty(self) -> None:
        """Empty content is just the final dot."""
        self.assertEqual(encodeBody(b""), b".\r\n")

    def test_dotStuffing(self) -> None:
        """Every line that starts with a dot gets another dot."""
        self.assertEqual(
            encodeBody(b".a\n..b\nc.\n.\n"), b"..a\r\n...b\r\nc.\r\n..\r\n.\r\n"
        )

    def test_smuggling(self) -> None:
        """
        C{<LF>.<LF>} and C{<CR>.<CR>} in the content cannot end the message
        early: they come out as stuffed lines.
        """
        self.assertEqual(encodeBody(b"a\n.\nb"), b"a\r\n..\r\nb\r\n.\r\n")
        self.assertEqual(encodeBody(b"a\r.\rb"), b"a\r\n..\r\nb\r\n.\r\n")

    def test_chunkBoundaries(self) -> None:
        """
        Any split of the content into chunks encodes like the whole: a CR
        at the end of a chunk and a dot at the start of the next one are
        handled.
        """
        content = b"x\r\n.y\r.z\n\r\n.\r\r\n..\nend\r"
        whole = encodeBody(content)
        for size in range(1, len(content) + 1):
            encoder = BodyEncoder()
            out = b"".join(
                encoder.encode(content[i : i + size])
                for i in range(0, len(content), size)
            )
            self.assertEqual(out + encoder.finish(), whole, size)

    def test_lineStructure(self) -> None:
        """
        The encoded stream has no bare CR or LF and only the last line is
        a lone dot.
        """
        out = encodeBody(b"\r\r\n\n.\r\n\r.\n")
        lines = out.split(b"\r\n")
        self.assertEqual(lines[-2:], [b".", b""])
        for line in lines[:-2]:
            self.assertNotIn(b"\r", line)
            self.assertNotIn(b"\n", line)
            self.assertNotEqual(line, b".")


EHLO_PIPE = b"250-mx.test\r\n250-PIPELINING\r\n250-SIZE 10000\r\n250 8BITMIME"


class MachineTests(SynchronousTestCase):
    """
    Tests for L{ClientMachine}: the ESMTP dialogue.
    """

    def ready(self, ehlo: bytes = EHLO_PIPE, **kw: Any) -> ClientMachine:
        m = ClientMachine("me.test", **kw)
        self.assertEqual(
            sent(m.replyReceived(r(b"220 mx.test ESMTP"))), b"EHLO me.test\r\n"
        )
        events = m.replyReceived(ReplyParser().feed(ehlo + b"\r\n")[0])
        self.assertIsInstance(events[0], SessionReady)
        return m

    def test_pipelined(self) -> None:
        """
        With PIPELINING, MAIL (with SIZE and BODY), every RCPT and DATA go
        in one write; per-recipient results follow the replies.
        """
        m = self.ready()
        events = m.startTransaction("a@b", ["c@d", "e@f"], 100, "8BITMIME")
        self.assertEqual(
            events[0].data,
            b"MAIL FROM:<a@b> SIZE=100 BODY=8BITMIME\r\nRCPT TO:<c@d>\r\n"
            b"RCPT TO:<e@f>\r\nDATA\r\n",
        )
        self.assertEqual(m.replyReceived(r(b"250 ok")), [])
        self.assertEqual(m.replyReceived(r(b"550 5.1.1 no such user")), [])
        self.assertEqual(m.replyReceived(r(b"250 ok")), [])
        events = m.replyReceived(r(b"354 go"))
        self.assertIsInstance(events[0], SendBody)
        self.assertEqual(m.bodySent(), [])
        [done] = m.replyReceived(r(b"250 2.0.0 queued as X"))
        self.assertIsInstance(done, TransactionDone)
        self.assertEqual(
            done.results,
            [
                {
                    "status": "perm",
                    "code": 550,
                    "reply": "550 5.1.1 no such user",
                    "where": "rcpt",
                },
                {
                    "status": "ok",
                    "code": 250,
                    "reply": "250 2.0.0 queued as X",
                    "where": "final_dot",
                },
            ],
        )
        self.assertTrue(done.reusable)
        self.assertEqual(m.state, "ready")

    def test_notPipelined(self) -> None:
        """Without PIPELINING, each command waits for the previous reply."""
        m = self.ready(b"250-mx.test\r\n250 SIZE")
        self.assertEqual(
            sent(m.startTransaction("", ["c@d"], 7)), b"MAIL FROM:<> SIZE=7\r\n"
        )
        self.assertEqual(sent(m.replyReceived(r(b"250 ok"))), b"RCPT TO:<c@d>\r\n")
        self.assertEqual(sent(m.replyReceived(r(b"251 ok"))), b"DATA\r\n")
        self.assertIsInstance(m.replyReceived(r(b"354 go"))[0], SendBody)
        m.bodySent()
        [done] = m.replyReceived(r(b"452 4.3.1 full"))
        self.assertEqual(done.results[0]["status"], "temp")
        self.assertEqual(done.results[0]["where"], "final_dot")

    def test_noSizeWithoutOffer(self) -> None:
        """SIZE= is only sent when offered."""
        m = self.ready(b"250 mx.test")
        self.assertEqual(
            sent(m.startTransaction("a@b", ["c@d"], 5, "7BIT")),
            b"MAIL FROM:<a@b>\r\n",
        )

    def test_no8bitWithoutOffer(self) -> None:
        """
        An 8-bit body is not sent to a server that does not offer 8BITMIME
        (RFC 6152 section 3): nothing is sent, every recipient fails
        permanently with 554 5.6.3 at MAIL, and the session can carry the
        next transaction.
        """
        m = self.ready(b"250 mx.test")
        events = m.startTransaction("a@b", ["c@d", "e@f"], 5, "8BITMIME")
        self.assertEqual(sent(events), b"")
        [done] = events
        self.assertIsInstance(done, TransactionDone)
        self.assertEqual(
            done.results,
            [
                {
                    "status": "perm",
                    "code": 554,
                    "reply": CONVERSION_REQUIRED,
                    "where": "mail",
                }
            ]
            * 2,
        )
        self.assertTrue(CONVERSION_REQUIRED.startswith("554 5.6.3 "))
        self.assertIsNone(done.mailReply)
        self.assertTrue(done.reusable)
        self.assertEqual(m.state, "ready")
        self.assertEqual(
            sent(m.startTransaction("a@b", ["c@d"], 5)), b"MAIL FROM:<a@b>\r\n"
        )

    def test_tooManyRecipients(self) -> None:
        """
        C{452 4.5.3} and C{452} without an enhanced code to RCPT are
        temporary and "too many recipients"; so is C{552 5.5.3} (RFC 5321
        4.5.3.1.10); a full mailbox (C{452 4.2.2}) or a refusal at MAIL is
        not.
        """
        m = self.ready()
        m.startTransaction("a@b", ["c@d", "e@f", "g@h", "i@j", "k@l"])
        for reply in [
            b"250 ok",
            b"250 ok",
            b"452 4.5.3 Error: too many recipients",
            b"452 too many recipients",
            b"552 5.5.3 too many recipients",
            b"452 4.2.2 mailbox full",
        ]:
            m.replyReceived(r(reply))
        m.replyReceived(r(b"354 go"))
        m.bodySent()
        [done] = m.replyReceived(r(b"250 ok"))
        self.assertEqual(
            [x["status"] for x in done.results], ["ok", "temp", "temp", "temp", "temp"]
        )
        self.assertEqual(
            [tooManyRecipients(x) for x in done.results],
            [False, True, True, True, False],
        )
        self.assertFalse(
            tooManyRecipients(
                {"status": "temp", "code": 452, "reply": "452 full", "where": "mail"}
            )
        )

    def test_enhancedStatus(self) -> None:
        """L{enhancedStatus} finds the RFC 3463 code of a reply, if any."""
        self.assertEqual(enhancedStatus("452 4.5.3 too many"), "4.5.3")
        self.assertEqual(enhancedStatus("550 5.1.10 null MX"), "5.1.10")
        self.assertEqual(enhancedStatus("452 too many"), "")
        self.assertEqual(enhancedStatus("452 4.5 x"), "")
        self.assertEqual(enhancedStatus("452"), "")

    def test_allRecipientsRejected(self) -> None:
        """
        Without an accepted recipient no DATA is sent; the server's
        transaction stays open (MAIL was taken), so the session is not
        reusable without RSET.
        """
        m = self.ready(b"250 mx.test")
        m.startTransaction("a@b", ["c@d"])
        m.replyReceived(r(b"250 ok"))
        [done] = m.replyReceived(r(b"450 4.2.0 later"))
        self.assertEqual(done.results[0]["status"], "temp")
        self.assertEqual(done.results[0]["where"], "rcpt")
        self.assertFalse(done.reusable)

    def test_mailRejected(self) -> None:
        """A rejected MAIL fails every recipient."""
        m = self.ready(b"250 mx.test")
        m.startTransaction("a@b", ["c@d", "e@f"])
        [done] = m.replyReceived(r(b"553 5.1.8 bad sender"))
        self.assertEqual([x["status"] for x in done.results], ["perm", "perm"])
        self.assertEqual(done.results[0]["where"], "mail")
        self.assertTrue(done.reusable)

    def test_pipelinedMailRejectedData354(self) -> None:
        """
        A server that takes DATA although MAIL failed gets an empty message
        ended at once, and nothing is reported delivered.
        """
        m = self.ready()
        m.startTransaction("a@b", ["c@d"])
        m.replyReceived(r(b"550 no"))
        m.replyReceived(r(b"503 no"))
        self.assertEqual(sent(m.replyReceived(r(b"354 go"))), b".\r\n")
        [done] = m.replyReceived(r(b"554 no"))
        self.assertEqual(done.results[0]["status"], "perm")
        self.assertTrue(done.reusable)

    def test_dataRejected(self) -> None:
        """A rejected DATA fails the accepted recipients."""
        m = self.ready()
        m.startTransaction("a@b", ["c@d"])
        m.replyReceived(r(b"250 ok"))
        m.replyReceived(r(b"250 ok"))
        [done] = m.replyReceived(r(b"451 4.3.0 try later"))
        self.assertEqual(done.results[0]["where"], "data")
        self.assertEqual(done.results[0]["status"], "temp")
        self.assertFalse(done.reusable)

    def test_sizeLimit(self) -> None:
        """A message larger than the server's SIZE limit is not sent."""
        m = self.ready()
        [done] = m.startTransaction("a@b", ["c@d"], 20000)
        self.assertEqual(done.results[0]["status"], "perm")
        self.assertEqual(done.results[0]["code"], 552)
        self.assertTrue(done.reusable)

    def test_sizeLimitNotAsciiDigits(self) -> None:
        """
        A SIZE limit with a character that str.isdigit() takes but int()
        does not (superscript two) is no limit, not a ValueError.
        """
        m = self.ready("250-mx.test\r\n250 SIZE 1\u00b2".encode("utf-8"))
        self.assertEqual(
            sent(m.startTransaction("", ["c@d"], 7)), b"MAIL FROM:<> SIZE=7\r\n"
        )

    def test_heloFallback(self) -> None:
        """A 5xx EHLO reply makes the client try HELO."""
        m = ClientMachine("me.test")
        m.replyReceived(r(b"220 hi"))
        self.assertEqual(sent(m.replyReceived(r(b"502 no"))), b"HELO me.test\r\n")
        events = m.replyReceived(r(b"250 hi"))
        self.assertIsInstance(events[0], SessionReady)
        self.assertEqual(m.extensions, {})

    def test_greeting421(self) -> None:
        """A 4xx greeting fails the session at the greeting."""
        m = ClientMachine("me.test")
        events = m.replyReceived(r(b"421 busy"))
        self.assertIsInstance(events[0], SessionFailed)
        self.assertEqual((events[0].where, events[0].code), ("greeting", 421))

    def test_ehlo4xx(self) -> None:
        """A 4xx EHLO reply fails the session (no HELO)."""
        m = ClientMachine("me.test")
        m.replyReceived(r(b"220 hi"))
        events = m.replyReceived(r(b"450 no"))
        self.assertIsInstance(events[0], SessionFailed)
        self.assertEqual(events[0].where, "ehlo")

    def test_starttls(self) -> None:
        """
        STARTTLS is used when offered; after the handshake EHLO is sent
        again and the old extensions are forgotten.
        """
        m = ClientMachine("me.test", canTLS=True)
        m.replyReceived(r(b"220 hi"))
        events = m.replyReceived(ReplyParser().feed(b"250-mx\r\n250 STARTTLS\r\n")[0])
        self.assertEqual(sent(events), b"STARTTLS\r\n")
        events = m.replyReceived(r(b"220 go ahead"))
        self.assertIsInstance(events[0], StartTLS)
        self.assertEqual(sent(m.tlsStarted()), b"EHLO me.test\r\n")
        self.assertEqual(m.extensions, {})
        events = m.replyReceived(r(b"250 mx"))
        self.assertIsInstance(events[0], SessionReady)
        self.assertTrue(m.tls)

    def test_starttlsRefused(self) -> None:
        """A refused STARTTLS continues in clear text."""
        m = ClientMachine("me.test", canTLS=True)
        m.replyReceived(r(b"220 hi"))
        m.replyReceived(ReplyParser().feed(b"250-mx\r\n250 STARTTLS\r\n")[0])
        events = m.replyReceived(r(b"454 4.7.0 not now"))
        self.assertIsInstance(events[0], SessionReady)

    def test_replyBeforeHandshake(self) -> None:
        """
        A reply that arrives after 220 to STARTTLS but before the
        handshake (injected in clear text) ends the session.
        """
        m = ClientMachine("me.test", canTLS=True)
        m.replyReceived(r(b"220 hi"))
        m.replyReceived(ReplyParser().feed(b"250-mx\r\n250 STARTTLS\r\n")[0])
        m.replyReceived(r(b"220 go ahead"))
        events = m.replyReceived(r(b"250 injected"))
        self.assertIsInstance(events[0], SessionFailed)

    def test_requireTLSNotOffered(self) -> None:
        """
        With C{requireTLS}, a server that does not offer STARTTLS ends
        the session before any mail command (C{where="starttls"}).
        """
        m = ClientMachine("me.test", canTLS=True, requireTLS=True)
        m.replyReceived(r(b"220 hi"))
        events = m.replyReceived(ReplyParser().feed(b"250-mx\r\n250 PIPELINING\r\n")[0])
        self.assertIsInstance(events[0], SessionFailed)
        self.assertEqual(events[0].where, "starttls")
        self.assertEqual([e.data for e in events[1:]], [b"QUIT\r\n"])
        self.assertEqual(m.state, "closed")

    def test_requireTLSRefused(self) -> None:
        """
        With C{requireTLS}, a refused STARTTLS ends the session too.
        """
        m = ClientMachine("me.test", canTLS=True, requireTLS=True)
        m.replyReceived(r(b"220 hi"))
        m.replyReceived(ReplyParser().feed(b"250-mx\r\n250 STARTTLS\r\n")[0])
        events = m.replyReceived(r(b"454 4.7.0 not now"))
        self.assertIsInstance(events[0], SessionFailed)
        self.assertEqual(events[0].where, "starttls")
        self.assertIn("454 4.7.0 not now", events[0].reply)

    def test_requireTLSNoEhlo(self) -> None:
        """
        With C{requireTLS}, a refused EHLO is not followed by HELO (which
        cannot lead to STARTTLS).
        """
        m = ClientMachine("me.test", canTLS=True, requireTLS=True)
        m.replyReceived(r(b"220 hi"))
        events = m.replyReceived(r(b"502 5.5.1 no EHLO"))
        self.assertIsInstance(events[0], SessionFailed)
        self.assertEqual(events[0].where, "starttls")

    def test_requireTLSAfterHandshake(self) -> None:
        """
        With C{requireTLS}, the session is ready once TLS is up.
        """
        m = ClientMachine("me.test", canTLS=True, requireTLS=True)
        m.replyReceived(r(b"220 hi"))
        m.replyReceived(ReplyParser().feed(b"250-mx\r\n250 STARTTLS\r\n")[0])
        m.replyReceived(r(b"220 go ahead"))
        m.tlsStarted()
        events = m.replyReceived(ReplyParser().feed(b"250-mx\r\n250 SIZE\r\n")[0])
        self.assertIsInstance(events[0], SessionReady)

    def test_mailRequireTLS(self) -> None:
        """
        A REQUIRETLS transaction (RFC 8689) goes with C{MAIL ...
        REQUIRETLS} to a TLS session whose server offers it; without the
        extension, or without TLS, every recipient fails with 5.7.30
        before MAIL.
        """
        m = ClientMachine("me.test", canTLS=True)
        m.replyReceived(r(b"220 hi"))
        m.replyReceived(ReplyParser().feed(b"250-mx\r\n250 STARTTLS\r\n")[0])
        m.replyReceived(r(b"220 go ahead"))
        m.tlsStarted()
        m.replyReceived(ReplyParser().feed(b"250-mx\r\n250 REQUIRETLS\r\n")[0])
        [send] = m.startTransaction("a@b.test", ["c@d.test"], requireTLS=True)
        self.assertEqual(send.data, b"MAIL FROM:<a@b.test> REQUIRETLS\r\n")
        plain = self.ready(EHLO_PIPE)
        [done] = plain.startTransaction("a@b.test", ["c@d.test"], requireTLS=True)
        self.assertIsInstance(done, TransactionDone)
        self.assertEqual(done.results[0]["status"], "perm")
        self.assertIn("5.7.30", done.results[0]["reply"])

    def test_noStarttlsWithoutTLS(self) -> None:
        """A client that cannot do TLS does not send STARTTLS."""
        m = ClientMachine("me.test", canTLS=False)
        m.replyReceived(r(b"220 hi"))
        events = m.replyReceived(ReplyParser().feed(b"250-mx\r\n250 STARTTLS\r\n")[0])
        self.assertIsInstance(events[0], SessionReady)

    def test_lostMidData(self) -> None:
        """
        A connection lost while sending the content makes accepted
        recipients temporary failures; rejected ones keep their answer.
        """
        m = self.ready()
        m.startTransaction("a@b", ["c@d", "e@f"])
        for line in [b"250 ok", b"250 ok", b"550 no", b"354 go"]:
            m.replyReceived(r(line))
        [done] = m.connectionFailed("connection lost")
        self.assertEqual([x["status"] for x in done.results], ["temp", "perm"])
        self.assertEqual(done.results[0]["where"], "data")
        self.assertFalse(done.reusable)

    def test_lostAfterDot(self) -> None:
        """No reply to the final dot: not delivered (temporary failure)."""
        m = self.ready()
        m.startTransaction("a@b", ["c@d"])
        for line in [b"250 ok", b"250 ok", b"354 go"]:
            m.replyReceived(r(line))
        m.bodySent()
        [done] = m.connectionFailed("timeout")
        self.assertEqual(done.results[0]["status"], "temp")
        self.assertEqual(done.results[0]["where"], "final_dot")

    def test_421MidTransaction(self) -> None:
        """A 421 reply in a transaction ends it with temporary failures."""
        m = self.ready()
        m.startTransaction("a@b", ["c@d"])
        [done] = m.replyReceived(r(b"421 4.3.2 shutting down"))
        self.assertEqual(done.results[0]["status"], "temp")
        self.assertEqual(done.results[0]["code"], 421)
        self.assertEqual(m.state, "closed")

    def test_lostBeforeReady(self) -> None:
        """A connection lost during EHLO fails the session."""
        m = ClientMachine("me.test")
        m.replyReceived(r(b"220 hi"))
        [failed] = m.connectionFailed("lost")
        self.assertIsInstance(failed, SessionFailed)
        self.assertEqual(failed.where, "ehlo")

    def test_reset(self) -> None:
        """RSET on a ready session is answered by L{SessionReady}."""
        m = self.ready()
        self.assertEqual(sent(m.reset()), b"RSET\r\n")
        self.assertIsInstance(m.replyReceived(r(b"250 ok"))[0], SessionReady)

    def test_quit(self) -> None:
        """QUIT closes the machine; later replies are ignored."""
        m = self.ready()
        self.assertEqual(sent(m.quit()), b"QUIT\r\n")
        self.assertEqual(m.replyReceived(r(b"221 bye")), [])


class LMTPMachineTests(SynchronousTestCase):
    """
    Tests for L{ClientMachine} speaking LMTP (RFC 2033).
    """

    def test_lhloAndPerRecipientReplies(self) -> None:
        """
        LMTP greets with LHLO and gets one reply per accepted recipient
        after the final dot.
        """
        m = ClientMachine("me.test", lmtp=True, canTLS=True)
        self.assertEqual(sent(m.replyReceived(r(b"220 lmtp"))), b"LHLO me.test\r\n")
        m.replyReceived(
            ReplyParser().feed(b"250-lmtp\r\n250-STARTTLS\r\n250 PIPELINING\r\n")[0]
        )
        self.assertEqual(m.state, "ready")
        m.startTransaction("a@b", ["u1@l", "u2@l", "u3@l"])
        for line in [b"250 ok", b"250 ok", b"550 no", b"250 ok", b"354 go"]:
            m.replyReceived(r(line))
        m.bodySent()
        self.assertEqual(m.replyReceived(r(b"250 2.0.0 u1 saved")), [])
        [done] = m.replyReceived(r(b"452 4.2.2 u3 over quota"))
        self.assertEqual(
            [(x["status"], x["where"]) for x in done.results],
            [("ok", "final_dot"), ("perm", "rcpt"), ("temp", "final_dot")],
        )

    def test_lostBetweenLMTPReplies(self) -> None:
        """
        A connection lost after some LMTP replies keeps those, the others
        are temporary failures.
        """
        m = ClientMachine("me.test", lmtp=True)
        m.replyReceived(r(b"220 lmtp"))
        m.replyReceived(r(b"250 lmtp"))
        m.startTransaction("a@b", ["u1@l", "u2@l"])
        for line in [b"250 ok", b"250 ok", b"250 ok", b"354 go"]:
            m.replyReceived(r(line))
        m.bodySent()
        m.replyReceived(r(b"250 saved"))
        [done] = m.connectionFailed("lost")
        self.assertEqual([x["status"] for x in done.results], ["ok", "temp"])

    def test_noHeloFallback(self) -> None:
        """An LMTP server refusing LHLO fails the session."""
        m = ClientMachine("me.test", lmtp=True)
        m.replyReceived(r(b"220 lmtp"))
        self.assertIsInstance(m.replyReceived(r(b"500 no"))[0], SessionFailed)


EHLO_DSN = b"250-mx.test\r\n250-PIPELINING\r\n250-SIZE 10000\r\n250 DSN"


class DSNClientTests(SynchronousTestCase):
    """The DSN parameters (RFC 3461) on MAIL and RCPT."""

    DSN = (
        "HDRS",
        "env+1",
        [("SUCCESS,FAILURE", "rfc822;C+x@d"), (None, "utf-8;j\u00f6rg@d")],
    )

    def ready(self, ehlo: bytes, **kw: Any) -> ClientMachine:
        return MachineTests.ready(self, ehlo, **kw)  # type: ignore[arg-type]

    def finish(self, m: ClientMachine, rcpts: int) -> Any:
        for _ in range(1 + rcpts):
            m.replyReceived(r(b"250 ok"))
        m.replyReceived(r(b"354 go"))
        m.bodySent()
        [done] = m.replyReceived(r(b"250 2.0.0 queued"))
        return done

    def test_offered(self) -> None:
        """
        A server that offers DSN gets RET, ENVID (xtext), NOTIFY and ORCPT
        (xtext, or utf-8-addr-xtext for a UTF-8 address); every result
        says dsnPassed.
        """
        m = self.ready(EHLO_DSN)
        events = m.startTransaction("a@b", ["c@d", "e@d"], dsn=self.DSN)
        self.assertEqual(
            events[0].data,
            b"MAIL FROM:<a@b> SIZE=0 RET=HDRS ENVID=env+2B1\r\n"
            b"RCPT TO:<c@d> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;C+2Bx@d\r\n"
            b"RCPT TO:<e@d> ORCPT=utf-8;j\\x{F6}rg@d\r\nDATA\r\n",
        )
        done = self.finish(m, 2)
        self.assertEqual([x.get("dsnPassed") for x in done.results], [True, True])

    def test_notOffered(self) -> None:
        """Without DSN offered (or with LMTP) the parameters are left out."""
        for ehlo, kw in [(EHLO_PIPE, {}), (EHLO_DSN, {"lmtp": True})]:
            m = ClientMachine("me.test", **kw)
            m.replyReceived(r(b"220 mx.test ESMTP"))
            m.replyReceived(ReplyParser().feed(ehlo + b"\r\n")[0])
            events = m.startTransaction("a@b", ["c@d"], dsn=self.DSN)
            self.assertNotIn(b"NOTIFY", events[0].data)
            self.assertNotIn(b"RET=", events[0].data)


class ClientTimerTests(SynchronousTestCase):
    """
    L{ClientProtocol}'s io_timeout: the peer has C{timeout} seconds from
    its last reply (the deadline moves with each reply).
    """

    def test_deadlineMovesWithReplies(self) -> None:
        clock = Clock()
        proto = ClientProtocol(ClientMachine("me.test"), clock, 60)
        ready = proto.whenReady()
        transport = StringTransport()
        proto.makeConnection(transport)
        clock.advance(50)
        proto.dataReceived(b"220 mx.test ESMTP\r\n")
        self.assertEqual(transport.value(), b"EHLO me.test\r\n")
        clock.advance(59)
        self.assertNoResult(ready)
        clock.advance(1)
        reason = self.failureResultOf(ready)
        self.assertIn("timeout after 60s", str(reason.value))
        self.assertEqual(clock.getDelayedCalls(), [])

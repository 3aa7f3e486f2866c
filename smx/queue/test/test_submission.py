# -*- test-case-name: smx.queue.test.test_submission -*-
"""
Tests for L{smx.queue.submission}: one ESMTP transaction against a
scripted server on a loopback socket, served by a thread (the client
blocks).
"""

from __future__ import annotations

import socket
import threading
from typing import Callable, Dict, List, Optional

from twisted.trial import unittest

from smx.queue.maildrop import DropEnvelope, DropRecipient
from smx.queue.submission import dotStuffed, replyText, submit, xtext

CONTENT = b"Subject: hi\r\n\r\n.leading dot\r\nhello\r\n"


class ScriptedServer:
    """
    An SMTP server for one session that answers each command by a rule.

    @ivar commands: the command lines received.
    @ivar data: the DATA stream received (up to and with the final dot).
    """

    def __init__(
        self,
        testCase: unittest.TestCase,
        extensions: List[str] = ("PIPELINING", "SIZE 1000000", "8BITMIME"),  # type: ignore[assignment]
        rules: Optional[Dict[str, str]] = None,
        greeting: str = "220 scripted ESMTP",
        finalReply: str = "250 2.0.0 queued",
        closeAfter: Optional[str] = None,
        answer: Optional[Callable[[str], Optional[str]]] = None,
    ) -> None:
        self.extensions = list(extensions)
        self.rules = rules or {}
        self.greeting = greeting
        self.finalReply = finalReply
        self.closeAfter = closeAfter
        self.answer = answer
        self.commands = []  # type: List[str]
        self.data = b""
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.listener.settimeout(5)
        self.address = self.listener.getsockname()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()
        testCase.addCleanup(self.stop)

    def stop(self) -> None:
        self.listener.close()
        self.thread.join(5)

    def serve(self) -> None:
        try:
            connection, _ = self.listener.accept()
        except OSError:
            return
        connection.settimeout(5)
        reader = connection.makefile("rb")
        try:
            self.session(connection, reader)
        except OSError:
            pass
        finally:
            reader.close()
            connection.close()

    def session(self, connection: socket.socket, reader) -> None:
        def send(text: str) -> None:
            connection.sendall(text.encode("utf-8") + b"\r\n")

        send(self.greeting)
        if not self.greeting.startswith("220"):
            return
        while True:
            line = reader.readline()
            if not line:
                return
            command = line.decode("utf-8").rstrip("\r\n")
            self.commands.append(command)
            verb = command.split(" ", 1)[0].upper()
            if self.closeAfter and command.startswith(self.closeAfter):
                return
            reply = self.answer(command) if self.answer else None
            if reply is None:
                reply = self.rules.get(command) or self.rules.get(verb)
            if reply is not None:
                send(reply)
                continue
            if verb == "EHLO":
                lines = ["scripted"] + self.extensions
                for i, text in enumerate(lines):
                    send(("250-" if i < len(lines) - 1 else "250 ") + text)
            elif verb == "DATA":
                send("354 go ahead")
                while True:
                    chunk = reader.readline()
                    if not chunk:
                        return
                    self.data += chunk
                    if chunk == b".\r\n":
                        break
                if self.closeAfter == ".":
                    return
                send(self.finalReply)
            elif verb == "QUIT":
                send("221 bye")
                return
            else:
                send("250 ok")


def envelope(*recipients: str, **kw) -> DropEnvelope:
    return DropEnvelope(
        kw.pop("sender", "alice@example.test"),
        tuple(DropRecipient(r, kw.get("notify")) for r in recipients),
        ret=kw.get("ret"),
        envid=kw.get("envid"),
        bodyType=kw.get("bodyType", "7BIT"),
    )


class SubmitTests(unittest.TestCase):
    """
    L{submit}: what each reply makes of the recipients.
    """

    def submit(self, server: ScriptedServer, env: DropEnvelope, **kw):
        trace = []  # type: List[str]
        outcome = submit(
            server.address, env, CONTENT, "client.test", trace=trace.append, **kw
        )
        server.thread.join(5)
        return outcome, trace

    def test_accepted(self) -> None:
        """
        With 250 to the final dot every recipient is accepted; SIZE and
        BODY=8BITMIME are sent because the server offers them, the content
        is dot-stuffed, and the dialogue is traced.
        """
        server = ScriptedServer(self)
        outcome, trace = self.submit(
            server, envelope("bob@b.test", "carol@c.test", bodyType="8BITMIME")
        )
        self.assertEqual(outcome.accepted, ["bob@b.test", "carol@c.test"])
        self.assertEqual((outcome.temporary, outcome.permanent), ([], []))
        self.assertEqual(
            server.commands[1],
            "MAIL FROM:<alice@example.test> SIZE=%d BODY=8BITMIME" % (len(CONTENT),),
        )
        self.assertEqual(
            server.commands[2:4], ["RCPT TO:<bob@b.test>", "RCPT TO:<carol@c.test>"]
        )
        self.assertIn(b"\r\n..leading dot\r\n", server.data)
        self.assertIn(">>> EHLO client.test", trace)
        self.assertIn("<<< 250 2.0.0 queued", trace)

    def test_dsnOffered(self) -> None:
        """
        When the server offers DSN, RET, ENVID (as xtext) and NOTIFY are
        passed on.
        """
        server = ScriptedServer(self, extensions=["DSN"])
        outcome, _ = self.submit(
            server,
            envelope("bob@b.test", notify="SUCCESS,FAILURE", ret="HDRS", envid="a+b=c"),
        )
        self.assertEqual(outcome.accepted, ["bob@b.test"])
        self.assertEqual(
            server.commands[1],
            "MAIL FROM:<alice@example.test> RET=HDRS ENVID=a+2Bb+3Dc",
        )
        self.assertEqual(
            server.commands[2], "RCPT TO:<bob@b.test> NOTIFY=SUCCESS,FAILURE"
        )

    def test_dsnNotOffered(self) -> None:
        """
        Without DSN the DSN parameters are left out, and that is no error.
        """
        server = ScriptedServer(self, extensions=[])
        outcome, _ = self.submit(
            server, envelope("bob@b.test", notify="NEVER", ret="FULL", envid="x")
        )
        self.assertEqual(outcome.accepted, ["bob@b.test"])
        self.assertEqual(server.commands[1], "MAIL FROM:<alice@example.test>")
        self.assertEqual(server.commands[2], "RCPT TO:<bob@b.test>")

    def test_nullSender(self) -> None:
        """
        The null sender is sent as C{<>}.
        """
        server = ScriptedServer(self, extensions=[])
        self.submit(server, envelope("bob@b.test", sender=""))
        self.assertEqual(server.commands[1], "MAIL FROM:<>")

    def test_recipientRefused(self) -> None:
        """
        A 5xx to one RCPT makes that recipient permanent, a 4xx temporary;
        the others get the message.
        """
        server = ScriptedServer(
            self,
            rules={
                "RCPT TO:<nobody@b.test>": "550 5.1.1 User unknown",
                "RCPT TO:<later@b.test>": "451 4.3.0 Try later",
            },
        )
        outcome, _ = self.submit(
            server, envelope("nobody@b.test", "bob@b.test", "later@b.test")
        )
        self.assertEqual(outcome.accepted, ["bob@b.test"])
        [perm] = outcome.permanent
        self.assertEqual(
            (perm.address, perm.code, perm.reply, perm.where),
            ("nobody@b.test", 550, "550 5.1.1 User unknown", "rcpt"),
        )
        [temp] = outcome.temporary
        self.assertEqual(
            (temp.address, temp.code, temp.where), ("later@b.test", 451, "rcpt")
        )

    def test_allRefused(self) -> None:
        """
        When no recipient is accepted no DATA is sent (RSET instead).
        """
        server = ScriptedServer(self, rules={"RCPT": "550 5.7.1 Relaying denied"})
        outcome, _ = self.submit(server, envelope("x@remote.test"))
        self.assertEqual(outcome.accepted, [])
        self.assertEqual(len(outcome.permanent), 1)
        self.assertNotIn("DATA", server.commands)
        self.assertIn("RSET", server.commands)

    def test_senderRefused(self) -> None:
        """
        A 5xx to MAIL refuses every recipient at C{mail}.
        """
        server = ScriptedServer(self, rules={"MAIL": "553 5.1.8 Bad sender"})
        outcome, _ = self.submit(server, envelope("a@b.test", "c@d.test"))
        self.assertEqual([r.where for r in outcome.permanent], ["mail", "mail"])

    def test_finalDotTemporary(self) -> None:
        """
        A 4xx to the final dot makes the accepted recipients temporary.
        """
        server = ScriptedServer(
            self, finalReply="452 4.3.1 Insufficient system storage"
        )
        outcome, _ = self.submit(server, envelope("bob@b.test"))
        self.assertEqual(outcome.accepted, [])
        [temp] = outcome.temporary
        self.assertEqual((temp.code, temp.where), (452, "final_dot"))

    def test_finalDotPermanent(self) -> None:
        """
        A 5xx to the final dot (content refused) is permanent.
        """
        server = ScriptedServer(self, finalReply="554 5.6.0 Message contains NUL")
        outcome, _ = self.submit(server, envelope("bob@b.test"))
        [perm] = outcome.permanent
        self.assertEqual((perm.code, perm.where), (554, "final_dot"))

    def test_lostAfterDot(self) -> None:
        """
        A connection lost before the reply to the final dot leaves the
        recipients temporary: the message is tried again (at worst it
        arrives twice), never taken as delivered.
        """
        server = ScriptedServer(self, closeAfter=".")
        outcome, _ = self.submit(server, envelope("bob@b.test"))
        self.assertEqual(outcome.accepted, [])
        [temp] = outcome.temporary
        self.assertEqual(temp.where, "final_dot")
        self.assertIn("connection lost", temp.reply)

    def test_lostAtRcpt(self) -> None:
        """
        A connection lost in the middle makes every open recipient
        temporary.
        """
        server = ScriptedServer(self, closeAfter="RCPT")
        outcome, _ = self.submit(server, envelope("a@b.test", "c@d.test"))
        self.assertEqual([r.where for r in outcome.temporary], ["rcpt", "rcpt"])

    def test_connectionRefused(self) -> None:
        """
        Nothing listening: every recipient is temporary at C{connect}, and
        the reply says where and why.
        """
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        address = s.getsockname()
        s.close()
        outcome = submit(address, envelope("a@b.test"), CONTENT, "client.test")
        [temp] = outcome.temporary
        self.assertEqual((temp.code, temp.where), (0, "connect"))
        self.assertIn("Connection refused", temp.reply)
        self.assertIn("127.0.0.1:%d" % (address[1],), temp.reply)

    def test_greeting(self) -> None:
        """
        A 554 greeting refuses for good, a 421 greeting is temporary.
        """
        server = ScriptedServer(self, greeting="554 5.7.1 Go away")
        outcome, _ = self.submit(server, envelope("a@b.test"))
        self.assertEqual([r.where for r in outcome.permanent], ["greeting"])
        server = ScriptedServer(self, greeting="421 4.3.2 Busy")
        outcome, _ = self.submit(server, envelope("a@b.test"))
        self.assertEqual([r.code for r in outcome.temporary], [421])

    def test_utf8(self) -> None:
        """
        A non-ASCII recipient needs SMTPUTF8: without it, it is refused
        with 553 5.6.7 and the others are sent; with it, MAIL carries
        SMTPUTF8 and the address goes out in UTF-8.
        """
        server = ScriptedServer(self, extensions=[])
        outcome, _ = self.submit(server, envelope("jörg@b.test", "bob@b.test"))
        self.assertEqual(outcome.accepted, ["bob@b.test"])
        self.assertEqual([r.code for r in outcome.permanent], [553])
        server = ScriptedServer(self, extensions=["SMTPUTF8"])
        outcome, _ = self.submit(server, envelope("jörg@b.test"))
        self.assertEqual(outcome.accepted, ["jörg@b.test"])
        self.assertEqual(server.commands[1], "MAIL FROM:<alice@example.test> SMTPUTF8")
        self.assertEqual(server.commands[2], "RCPT TO:<jörg@b.test>")

    def test_onlyPending(self) -> None:
        """
        Recipients already refused for good (waiting for their bounce) are
        not submitted again.
        """
        server = ScriptedServer(self)
        env = DropEnvelope(
            "a@b.test",
            (DropRecipient("done@b.test", None, "550 no"), DropRecipient("bob@b.test")),
        )
        outcome, _ = self.submit(server, env)
        self.assertEqual(outcome.accepted, ["bob@b.test"])
        self.assertEqual(
            [c for c in server.commands if c.startswith("RCPT")],
            ["RCPT TO:<bob@b.test>"],
        )


class HelperTests(unittest.TestCase):
    """
    The encoding helpers.
    """

    def test_xtext(self) -> None:
        """
        C{+}, C{=}, spaces and non-ASCII are written as C{+HH}.
        """
        self.assertEqual(xtext("a+b=c d"), "a+2Bb+3Dc+20d")
        self.assertEqual(xtext("é"), "+C3+A9")

    def test_dotStuffed(self) -> None:
        """
        Lines starting with a dot get another; the stream ends with a
        line end and a dot.
        """
        self.assertEqual(dotStuffed(b".a\r\nb\r\n"), b"..a\r\nb\r\n.\r\n")
        self.assertEqual(dotStuffed(b"a"), b"a\r\n.\r\n")

    def test_replyText(self) -> None:
        """
        A multi-line reply becomes one printable line.
        """
        self.assertEqual(
            replyText(550, b"5.1.1 no\nsuch\x01user"), "550 5.1.1 no such?user"
        )

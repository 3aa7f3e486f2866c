# -*- test-case-name: smx.mail.test.test_milterhooks -*-
"""
Tests for L{smx.mail.milterhooks}: SMTPS with fake milters
(L{smx.milter.testing.FakeMilterClient}), a L{StringTransport} and a
L{Clock}; the configuration of C{milter} sections.  The tests with real
milters and a real twistd are in
L{smx.mail.test.test_integration_milter}.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from twisted.internet import defer
from twisted.trial import unittest

from smx.config import ConfigError, configurationFromText
from smx.log import Logger, MemorySink
from smx.mail.milterhooks import (
    MilterChain,
    macroListsFromSection,
    milterClients,
    replyOf,
)
from smx.mail.milterinternal import InternalMilters
from smx.mail.test.test_smtps import Harness
from smx.milter.client import MilterClient
from smx.milter.macros import DEFAULT_MACROS
from smx.milter.modifications import (
    AddHeader,
    AddRecipient,
    ChangeFrom,
    ChangeHeader,
    DeleteHeader,
    DeleteRecipient,
    InsertHeader,
    Quarantine,
    ReplaceBody,
)
from smx.milter.protocol import (
    ACCEPT,
    CONTINUE,
    DISCARD,
    SHUTDOWN,
    TEMPFAIL,
    Decision,
    failureDecision,
)
from smx.milter.testing import FakeMilterClient

TRANSACTION = (
    b"EHLO client.test\r\nMAIL FROM:<a@b.test>\r\n"
    b"RCPT TO:<u@local.test>\r\nRCPT TO:<v@local.test>\r\nDATA\r\n"
)
MESSAGE = b"Subject: hello\r\nX-Old: 1\r\n\r\nbody\r\n..dot\r\n.\r\n"


def reject(code: int = 550, *lines: str) -> Decision:
    return Decision(
        "reject" if code >= 500 else "tempfail",
        code,
        lines or ("5.7.1 Command rejected",),
    )


class HookTests(unittest.TestCase):
    """
    The milters' decisions as SMTPS applies them, and what is queued.
    """

    def harness(self, *milters: FakeMilterClient, **settings: Any) -> Harness:
        h = Harness(**settings)
        h.factory.milters = list(milters)
        return h

    def milter(
        self, name: str = "m", decisions: Optional[Dict[str, Decision]] = None
    ) -> FakeMilterClient:
        return FakeMilterClient(name, decisions)

    def calls(self, client: FakeMilterClient) -> list:
        return [stage for stage, _ in client.sessions[-1].calls]

    def queued(self, h: Harness) -> bytes:
        [envelope] = h.qmgr.envelopes
        return h.store.contents[envelope["id"]]

    def test_stages(self):
        """
        Every stage in SMTP order, the message at its end (header without
        smx's Received:, end of header, body without dot-stuffing, end of
        message), the macros of Postfix's names; quit at the end.
        """
        m = self.milter()
        h = self.harness(m)
        self.assertTrue(h.connect().startswith(b"220 "))
        h.send(TRANSACTION)
        out = h.send(MESSAGE + b"XYZZY\r\nQUIT\r\n")
        self.assertIn(b"250 2.0.0 ", out)
        h.protocol.connectionLost()
        self.assertEqual(
            [c for c in self.calls(m) if c != "abort"],
            ["connect", "helo", "mail", "rcpt", "rcpt", "data"]
            + ["header", "eoh", "body", "eom", "unknown", "quit"],
        )
        calls = dict(m.sessions[-1].calls)
        info, macros = calls["connect"]
        self.assertEqual(
            (info.family, info.address, info.port), ("inet", "10.1.2.3", 40000)
        )
        self.assertEqual(macros["j"], "mx.test")
        self.assertEqual(macros["{client_addr}"], "10.1.2.3")
        self.assertEqual(macros["{daemon_name}"], "smtps")
        self.assertEqual(calls["mail"][0], "a@b.test")
        self.assertEqual(calls["mail"][2]["i"], h.qmgr.envelopes[0]["id"])
        self.assertEqual(calls["header"][0], (("Subject", " hello"), ("X-Old", " 1")))
        self.assertEqual(calls["body"][0], b"body\r\n.dot\r\n")
        self.assertEqual(calls["unknown"][0], "XYZZY")

    def test_bodyChunks(self):
        """The body goes in chunks of at most 65,535 bytes."""
        m = self.milter()
        h = self.harness(m)
        h.connect()
        h.send(TRANSACTION)
        body = b"".join(b"%07d\r\n" % i for i in range(20000))
        h.send(b"Subject: x\r\n\r\n" + body + b".\r\n")
        chunks = [a[0] for s, a in m.sessions[-1].calls if s == "body"]
        self.assertEqual(b"".join(chunks), body)
        self.assertEqual(max(len(c) for c in chunks), 65535)

    def test_modifications(self):
        """
        Every end-of-message change is made to what is queued: smx's
        Received: stays first (an insert at 0 lands below it), headers
        added, changed and deleted, the body replaced, the sender
        changed, recipients added and deleted.
        """
        eom = Decision(
            "accept",
            modifications=(
                AddHeader("X-Added", " yes"),
                InsertHeader(0, "DKIM-Signature", " v=1"),
                ChangeHeader(1, "Subject", " changed"),
                DeleteHeader(1, "X-Old"),
                ReplaceBody(b"new body\r\n"),
                ChangeFrom("new@b.test"),
                AddRecipient("w@local.test", ("NOTIFY=NEVER",)),
                DeleteRecipient("u@local.test"),
            ),
        )
        m = self.milter(decisions={"eom": eom})
        h = self.harness(m)
        h.connect()
        h.send(TRANSACTION)
        out = h.send(MESSAGE)
        self.assertTrue(out.startswith(b"250 2.0.0 "), out)
        content = self.queued(h)
        self.assertTrue(content.startswith(b"Received: from client.test"), content)
        header, _, body = content.partition(b"\r\n\r\n")
        self.assertEqual(body, b"new body\r\n")
        fields = [
            line.split(b":")[0] for line in header.split(b"\r\n") if line[:1] != b"\t"
        ]
        self.assertEqual(
            fields, [b"Received", b"DKIM-Signature", b"Subject", b"X-Added"]
        )
        self.assertIn(b"Subject: changed\r\n", header)
        [envelope] = h.qmgr.envelopes
        self.assertEqual(envelope["sender"], "new@b.test")
        self.assertEqual(
            [
                (r["address"], r["index"], r.get("notify"))
                for r in envelope["recipients"]
            ],
            [("v@local.test", 0, None), ("w@local.test", 1, "NEVER")],
        )
        self.assertEqual(envelope["size"], len(content))
        self.assertIn("modified=", "\n".join(h.sink.lines()))

    def test_chunking(self):
        """
        With BDAT the milters get the data stage at the first chunk and
        the whole message at the end of the LAST one.
        """
        m = self.milter(
            decisions={"eom": Decision("accept", modifications=(AddHeader("X", " 1"),))}
        )
        h = self.harness(m)
        h.connect()
        part1, part2 = b"Subject: hi\r\n\r\nfirst ", b"second\r\n"
        out = h.send(
            b"EHLO client.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@local.test>\r\n"
            + b"BDAT %d\r\n" % len(part1)
            + part1
            + b"BDAT %d LAST\r\n" % len(part2)
            + part2
        )
        self.assertIn(b"250 2.0.0 ", out)
        self.assertEqual(self.calls(m).count("data"), 1)
        [body] = [a[0] for s, a in m.sessions[-1].calls if s == "body"]
        self.assertEqual(body, b"first second\r\n")
        self.assertTrue(self.queued(h).endswith(b"X: 1\r\n\r\nfirst second\r\n"))

    def test_unchanged(self):
        """Without modifications the content is queued byte for byte."""
        h = self.harness(self.milter())
        h.connect()
        h.send(TRANSACTION)
        h.send(b"no header line\r\nat all\r\n.\r\n")
        content = self.queued(h)
        self.assertTrue(content.endswith(b"\r\nno header line\r\nat all\r\n"))

    def test_orderAndChanges(self):
        """
        Several milters are asked in the configured order; the second
        sees the header the first added; the first that rejects decides
        and the later ones are not asked.
        """
        first = self.milter(
            "first",
            {"eom": Decision("continue", modifications=(AddHeader("X-1", " a"),))},
        )
        second = self.milter("second", {"rcpt": reject(550, "5.1.1 no")})
        h = self.harness(first, second)
        h.connect()
        out = h.send(TRANSACTION)
        self.assertIn(b"550 5.1.1 no", out)
        self.assertIn(b"554 5.5.1 No valid recipients", out)
        self.assertIn("milter=second", "\n".join(h.sink.lines()))
        second.decisions.clear()
        second.sessions[-1].decisions.clear()
        out = h.send(b"RSET\r\n" + TRANSACTION)
        self.assertIn(b"354 ", out)
        h.send(MESSAGE)
        headers = [a[0] for s, a in second.sessions[-1].calls if s == "header"]
        self.assertEqual(headers[-1][-1], ("X-1", " a"))
        self.assertEqual(self.calls(first).count("rcpt"), 4)

    def test_rejections(self):
        """
        A rejection at MAIL, RCPT, DATA or the end of the message is the
        reply to that command, multi-line as the milter wrote it; nothing
        is queued after a rejected end of message.
        """
        for stage, at in [
            ("mail", b"MAIL"),
            ("rcpt", b"RCPT"),
            ("data", b"DATA"),
            ("eom", b"."),
        ]:
            m = self.milter(
                decisions={stage: reject(554, "5.7.1 one", "5.7.1 two 100%")}
            )
            h = self.harness(m)
            h.connect()
            out = h.send(TRANSACTION + (MESSAGE if stage == "eom" else b""))
            self.assertIn(b"554-5.7.1 one\r\n554 5.7.1 two 100%\r\n", out, stage)
            self.assertEqual(h.qmgr.envelopes, [], stage)

    def test_tempfail(self):
        """A tempfail (or a failed milter's default action) is a 4xx."""
        m = self.milter(decisions={"eom": failureDecision("tempfail", "no reply")})
        h = self.harness(m)
        h.connect()
        h.send(TRANSACTION)
        out = h.send(MESSAGE)
        self.assertEqual(out, b"451 4.7.1 Service unavailable - try again later\r\n")
        self.assertEqual(h.qmgr.envelopes, [])
        self.assertEqual(h.store.contents, {})

    def test_connectRejected(self):
        """
        A rejection at connect: the session opens, HELO is answered, and
        every MAIL gets the rejection (Postfix's behaviour); a shutdown
        refuses the session with 421.
        """
        h = self.harness(self.milter(decisions={"connect": TEMPFAIL}))
        self.assertTrue(h.connect().startswith(b"220 "))
        out = h.send(b"EHLO client.test\r\nMAIL FROM:<a@b.test>\r\n")
        self.assertIn(b"250 HELP", out)
        self.assertIn(b"451 4.7.1 Service unavailable - try again later", out)
        out = h.send(b"MAIL FROM:<a@b.test>\r\nQUIT\r\n")
        self.assertIn(b"451 4.7.1", out)
        self.assertIn("mail=<a@b.test>, stat=451", "\n".join(h.sink.lines()))
        self.assertIn("milter=m", h.sink.lines()[-1])
        self.assertIn(b"221 ", out)
        h = self.harness(self.milter(decisions={"connect": SHUTDOWN}))
        self.assertTrue(h.connect().startswith(b"421 4.7.0 "))
        self.assertTrue(h.transport.disconnecting)

    def test_heloRejected(self):
        """A rejection at HELO is the reply to HELO."""
        h = self.harness(self.milter(decisions={"helo": reject(550, "5.7.1 bad")}))
        h.connect()
        self.assertEqual(h.send(b"EHLO client.test\r\n"), b"550 5.7.1 bad\r\n")

    def test_discard(self):
        """
        A discard at RCPT or at the end of the message: 250, nothing
        queued.
        """
        for stage in ("mail", "rcpt", "data", "eom"):
            h = self.harness(self.milter(decisions={stage: DISCARD}))
            h.connect()
            h.send(TRANSACTION)
            out = h.send(MESSAGE)
            self.assertTrue(out.startswith(b"250 2.0.0 "), (stage, out))
            self.assertEqual(h.qmgr.envelopes, [], stage)

    def test_shutdownAtEom(self):
        """A shutdown at the end of the message: 421, the session closes."""
        h = self.harness(self.milter(decisions={"eom": SHUTDOWN}))
        h.connect()
        h.send(TRANSACTION)
        out = h.send(MESSAGE)
        self.assertEqual(out, b"421 4.7.0 Server closing connection\r\n")
        self.assertTrue(h.transport.disconnecting)

    def test_quarantine(self):
        """A quarantine goes with the envelope to QMGR, which holds it."""
        eom = Decision("accept", modifications=(Quarantine("suspicious"),))
        h = self.harness(self.milter(decisions={"eom": eom}))
        h.connect()
        h.send(TRANSACTION)
        h.send(MESSAGE)
        [envelope] = h.qmgr.envelopes
        self.assertEqual(envelope["quarantine"], "suspicious")

    def test_allRecipientsDeleted(self):
        """A message left without recipients is accepted and dropped."""
        eom = Decision(
            "continue",
            modifications=(
                DeleteRecipient("u@local.test"),
                DeleteRecipient("v@local.test"),
            ),
        )
        h = self.harness(self.milter(decisions={"eom": eom}))
        h.connect()
        h.send(TRANSACTION)
        out = h.send(MESSAGE)
        self.assertTrue(out.startswith(b"250 2.0.0 "), out)
        self.assertEqual(h.qmgr.envelopes, [])

    def test_clientLeaves(self):
        """
        A client that leaves while the milters look at its message: the
        message is not queued (it never got its 250).
        """
        m = self.milter()
        h = self.harness(m)
        h.connect()
        h.send(TRANSACTION)
        pending = defer.Deferred()
        m.sessions[-1].endOfMessage = lambda macros=None: pending
        self.assertEqual(h.send(MESSAGE), b"")
        h.protocol.connectionLost()
        pending.callback(CONTINUE)
        self.assertEqual(h.qmgr.envelopes, [])
        self.assertEqual(h.store.contents, {})

    def test_unexpectedFailure(self):
        """
        A failure while the changes are made: 451 4.3.0, logged, the
        content dropped, the session goes on.
        """
        eom = Decision("continue", modifications=("not a modification",))  # type: ignore[arg-type]
        h = self.harness(self.milter(decisions={"eom": eom}))
        h.connect()
        h.send(TRANSACTION)
        out = h.send(MESSAGE)
        self.assertTrue(out.startswith(b"451 4.3.0 "), out)
        self.assertEqual(h.qmgr.envelopes, [])
        self.assertEqual(h.store.contents, {})
        self.assertIn("func=_mlEndOfMessage", "\n".join(h.sink.lines()))
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)
        self.assertTrue(h.send(b"NOOP\r\n").startswith(b"250 "))

    def test_rsetAborts(self):
        """RSET after MAIL aborts the milters' transaction."""
        m = self.milter()
        h = self.harness(m)
        h.connect()
        h.send(b"EHLO client.test\r\nMAIL FROM:<a@b.test>\r\nRSET\r\n")
        self.assertIn("abort", self.calls(m))

    def test_acceptAtConnect(self):
        """
        C{accept} ends the milter's part; the mail goes through.
        """
        h = self.harness(self.milter(decisions={"connect": ACCEPT}))
        h.connect()
        h.send(TRANSACTION)
        self.assertTrue(h.send(MESSAGE).startswith(b"250 2.0.0 "))

    def test_replyOf(self):
        """
        A decision becomes C{(code, dsn, text)}: status codes out of the
        lines, lines joined by newlines; a default status by class.
        """
        self.assertEqual(
            replyOf(reject(550, "5.7.1 one", "5.7.1 two")), (550, "5.7.1", "one\ntwo")
        )
        self.assertEqual(
            replyOf(Decision("tempfail", 451, ("try later",))),
            (451, "4.7.1", "try later"),
        )

    def test_chainQuit(self):
        """A chain's quit ends every session."""
        a, b = self.milter("a"), self.milter("b")
        chain = MilterChain([a, b], "S1")
        chain.quit()
        self.assertEqual(self.calls(a), ["quit"])
        self.assertEqual(self.calls(b), ["quit"])


CONFIG = """
hostname = mx.test;
milter dkim { socket = "unix:/run/opendkim/opendkim.sock"; }
milter filter {
    socket = "inet:8891@127.0.0.1";
    default_action = accept;
    content_timeout = 10s;
    macros { connect = { j, client_addr }; }
}
smtps { milters = { dkim, filter }; }
"""


class ConfigurationTests(unittest.TestCase):
    """
    The C{milter} sections and the C{milters} lists.
    """

    def test_clients(self):
        """
        One client per name of the list, in its order, with the
        section's settings; macro names get their braces.
        """
        cfg = configurationFromText(CONFIG)
        clients = milterClients(cfg, cfg.section("smtps")["milters"], None, None)
        self.assertEqual([c.name for c in clients], ["dkim", "filter"])
        self.assertIsInstance(clients[0], MilterClient)
        dkim, flt = (c.settings for c in clients)
        self.assertEqual(str(dkim.socket), "unix:/run/opendkim/opendkim.sock")
        self.assertEqual(
            (dkim.connectTimeout, dkim.commandTimeout, dkim.contentTimeout),
            (30, 30, 300),
        )
        self.assertEqual(dkim.defaultAction, "tempfail")
        self.assertEqual(dkim.macros, DEFAULT_MACROS)
        self.assertEqual((flt.defaultAction, flt.contentTimeout), ("accept", 10))
        self.assertEqual(str(flt.socket), "inet:8891@127.0.0.1")
        filterSection = cfg.section("milter", "filter")
        lists = macroListsFromSection(filterSection)
        self.assertEqual(lists.connect, ("j", "{client_addr}"))
        self.assertEqual(lists.helo, DEFAULT_MACROS.helo)

    def test_undeclared(self):
        """
        A C{milters} list naming a milter that is not declared is an
        error at file:line of the list (smtps and qmgr).
        """
        text = CONFIG.replace("{ dkim, filter }", "{ dkim, spam }")
        with self.assertRaises(ConfigError) as e:
            configurationFromText(text)
        self.assertIn("milter 'spam', which is not declared", str(e.exception))
        self.assertIn(":9:", str(e.exception))
        with self.assertRaises(ConfigError) as e:
            configurationFromText(CONFIG + "qmgr { milters = { nothing }; }\n")
        self.assertIn("'nothing'", str(e.exception))
        self.assertIn(":11:", str(e.exception))

    def test_badValues(self):
        """
        A bad socket, default action or missing socket is an error that
        names the place.
        """
        for text, message in [
            ('milter m { socket = "tcp:1@x"; }', "milter socket"),
            ('milter m { socket = "inet:99999@x"; }', "port"),
            ('milter m { socket = "unix:/x"; default_action = quarantine; }', "one of"),
            ("milter m { connect_timeout = 1s; }", "socket"),
            ('milter { socket = "unix:/x"; }', "needs a name"),
        ]:
            with self.assertRaises(ConfigError) as e:
                configurationFromText(text)
            self.assertIn(message, str(e.exception), text)
            self.assertIn(":1:", str(e.exception), text)


class InternalMiltersTests(unittest.TestCase):
    """
    L{InternalMilters}: QMGR's reports through qmgr's milters.
    """

    ENVELOPE = {
        "id": "T1",
        "sender": "",
        "recipients": [{"address": "alice@local.test", "index": 0}],
        "size": 30,
    }
    REPORT = b"Subject: Delivery Status\r\n\r\nreport\r\n"

    def filtered(self, decisions: Dict[str, Decision]) -> Any:
        self.sink = MemorySink()
        self.client = FakeMilterClient("dkim", decisions)
        milters = InternalMilters(
            [self.client], "mx.test", Logger("qmgr", sink=self.sink)
        )
        return self.successResultOf(milters(self.REPORT, dict(self.ENVELOPE)))

    def test_stages(self):
        """
        Every stage, as a session from localhost with HELO the host name
        and the null sender; the milter's changes are made.
        """
        eom = Decision(
            "accept",
            modifications=(
                InsertHeader(0, "DKIM-Signature", " v=1"),
                AddRecipient("postmaster@local.test"),
                Quarantine("why"),
            ),
        )
        content, envelope = self.filtered({"eom": eom})
        session = self.client.sessions[0]
        self.assertEqual(
            [s for s, _ in session.calls],
            ["connect", "helo", "mail", "rcpt", "data"]
            + ["header", "eoh", "body", "eom", "quit"],
        )
        calls = dict(session.calls)
        self.assertEqual(calls["connect"][0].hostname, "localhost")
        self.assertEqual(calls["connect"][1]["{daemon_name}"], "qmgr")
        self.assertEqual(calls["helo"][0], "mx.test")
        self.assertEqual(calls["mail"][0], "")
        self.assertEqual(
            content,
            b"DKIM-Signature: v=1\r\nSubject: Delivery Status\r\n\r\nreport\r\n",
        )
        self.assertEqual(
            [r["address"] for r in envelope["recipients"]],
            ["alice@local.test", "postmaster@local.test"],
        )
        self.assertEqual(envelope["quarantine"], "why")

    def test_dropped(self):
        """A rejection or discard drops the report, logged."""
        self.assertIsNone(self.filtered({"rcpt": reject(550, "5.7.1 no")}))
        self.assertIn("report dropped by the milter", self.sink.lines()[-1])
        self.assertIsNone(self.filtered({"eom": DISCARD}))

    def test_failed(self):
        """
        A milter that failed (or tempfails): the report is queued as it
        was, with a warning.
        """
        result = self.filtered({"connect": failureDecision("tempfail", "down")})
        self.assertEqual(result, (self.REPORT, self.ENVELOPE))
        self.assertIn("sev=WARN", self.sink.lines()[-1])
        self.assertIn("report queued unfiltered", self.sink.lines()[-1])
        result = self.filtered({"eom": TEMPFAIL})
        self.assertEqual(result, (self.REPORT, self.ENVELOPE))

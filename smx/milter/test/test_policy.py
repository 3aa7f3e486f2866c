# -*- test-case-name: smx.milter.test.test_policy -*-
"""
Unit tests of the Postfix policy delegation protocol
(L{smx.milter.policy}): building and encoding requests, splitting
replies, every action and the SMTP reply Postfix makes of it.
"""

from __future__ import annotations

import datetime
from typing import Any, List, Tuple

from twisted.trial import unittest

from smx.milter import policy
from smx.milter.policy import (
    PolicyDecision,
    PolicySession,
    PolicyTransaction,
    ReplyError,
    ReplyReader,
    UnknownAction,
    certificateFields,
    defaultDecision,
    encodeRequest,
    fingerprint,
    parseAction,
    policyAttributes,
    sanitize,
    xtext,
)

#: the attributes of SMTPD_POLICY_README (Postfix 3.8)
POSTFIX_ATTRIBUTES = {
    "request",
    "protocol_state",
    "protocol_name",
    "helo_name",
    "queue_id",
    "sender",
    "recipient",
    "recipient_count",
    "client_address",
    "client_name",
    "reverse_client_name",
    "instance",
    "sasl_method",
    "sasl_username",
    "sasl_sender",
    "size",
    "ccert_subject",
    "ccert_issuer",
    "ccert_fingerprint",
    "encryption_protocol",
    "encryption_cipher",
    "encryption_keysize",
    "etrn_domain",
    "stress",
    "ccert_pubkey_fingerprint",
    "client_port",
    "policy_context",
    "server_address",
    "server_port",
    "compatibility_level",
    "mail_version",
}

SESSION = PolicySession(
    clientAddress="192.0.2.1",
    clientPort=40000,
    clientName="mx.example.com",
    reverseClientName="mx.example.com",
    serverAddress="127.0.0.1",
    serverPort=25,
    heloName="mx.example.com",
    protocolName="ESMTP",
)

TRANSACTION = PolicyTransaction(
    instance="S0000000000000001",
    queueId="S0000000000000001",
    sender="alice@example.com",
    recipients=("bob@example.org",),
    size=1234,
)


def decode(data: bytes) -> List[Tuple[str, str]]:
    """The C{(name, value)} lines of an encoded request."""
    text = data.decode("utf-8")
    assert text.endswith("\n\n"), text
    return [tuple(line.split("=", 1)) for line in text[:-2].split("\n")]  # type: ignore[misc]


class RequestTests(unittest.TestCase):
    """
    Building and encoding requests.
    """

    def test_attributes(self):
        """
        Every attribute of SMTPD_POLICY_README is sent, C{request} first,
        each once.
        """
        attributes = policyAttributes("RCPT", SESSION, TRANSACTION, "bob@example.org")
        self.assertEqual(set(attributes), POSTFIX_ATTRIBUTES)
        lines = decode(encodeRequest(attributes))
        self.assertEqual(lines[0], ("request", "smtpd_access_policy"))
        self.assertEqual(len(lines), len(POSTFIX_ATTRIBUTES))
        values = dict(lines)
        self.assertEqual(values["protocol_state"], "RCPT")
        self.assertEqual(values["protocol_name"], "ESMTP")
        self.assertEqual(values["client_address"], "192.0.2.1")
        self.assertEqual(values["client_port"], "40000")
        self.assertEqual(values["server_port"], "25")
        self.assertEqual(values["sender"], "alice@example.com")
        self.assertEqual(values["recipient"], "bob@example.org")
        self.assertEqual(values["recipient_count"], "0")
        self.assertEqual(values["instance"], "S0000000000000001")
        self.assertEqual(values["queue_id"], "S0000000000000001")
        self.assertEqual(values["size"], "1234")
        self.assertEqual(values["stress"], "")
        self.assertEqual(values["mail_version"], policy.MAIL_VERSION)

    def test_unknownClient(self):
        """
        A client without a (verified) name is C{unknown}, as in Postfix;
        outside a transaction C{instance} and C{sender} are empty.
        """
        values = policyAttributes("CONNECT", PolicySession(clientAddress="192.0.2.9"))
        self.assertEqual(values["client_name"], "unknown")
        self.assertEqual(values["reverse_client_name"], "unknown")
        self.assertEqual(values["instance"], "")
        self.assertEqual(values["sender"], "")
        self.assertEqual(values["recipient"], "")

    def test_dataStates(self):
        """
        C{recipient_count} is set only in DATA and END-OF-MESSAGE, and
        C{recipient} there only when there is exactly one recipient.
        """
        one = policyAttributes("DATA", SESSION, TRANSACTION)
        self.assertEqual(one["recipient_count"], "1")
        self.assertEqual(one["recipient"], "bob@example.org")
        two = PolicyTransaction(sender="a@b.example", recipients=("x@y", "z@y"))
        values = policyAttributes("END-OF-MESSAGE", SESSION, two)
        self.assertEqual(values["recipient_count"], "2")
        self.assertEqual(values["recipient"], "")
        values = policyAttributes("MAIL", SESSION, two)
        self.assertEqual(values["recipient_count"], "0")

    def test_etrnDomain(self):
        """
        C{etrn_domain} is sent in the ETRN state only.
        """
        self.assertEqual(
            policyAttributes("ETRN", SESSION, etrnDomain="example.org")["etrn_domain"],
            "example.org",
        )
        self.assertEqual(
            policyAttributes("HELO", SESSION, etrnDomain="example.org")["etrn_domain"],
            "",
        )

    def test_tlsAndSasl(self):
        """
        TLS, certificate, SASL, stress and context attributes; certificate
        names are xtext-encoded.
        """
        session = PolicySession(
            saslMethod="PLAIN",
            saslUsername="alice",
            encryptionProtocol="TLSv1.3",
            encryptionCipher="TLS_AES_256_GCM_SHA384",
            encryptionKeysize=256,
            ccertSubject="Alice Smith",
            ccertIssuer="Test CA=1",
            ccertFingerprint="AB:CD",
            ccertPubkeyFingerprint="EF:01",
            stress=True,
        )
        values = policyAttributes(
            "MAIL",
            session,
            PolicyTransaction(saslSender="alice@example.com"),
            policyContext="submission",
        )
        self.assertEqual(values["sasl_method"], "PLAIN")
        self.assertEqual(values["sasl_username"], "alice")
        self.assertEqual(values["sasl_sender"], "alice@example.com")
        self.assertEqual(values["encryption_protocol"], "TLSv1.3")
        self.assertEqual(values["encryption_keysize"], "256")
        self.assertEqual(values["ccert_subject"], "Alice+20Smith")
        self.assertEqual(values["ccert_issuer"], "Test+20CA+3D1")
        self.assertEqual(values["ccert_fingerprint"], "AB:CD")
        self.assertEqual(values["ccert_pubkey_fingerprint"], "EF:01")
        self.assertEqual(values["stress"], "yes")
        self.assertEqual(values["policy_context"], "submission")

    def test_badState(self):
        """
        A protocol state that Postfix does not know is a programming error.
        """
        self.assertRaises(ValueError, policyAttributes, "RSET", SESSION)

    def test_noLineBreaks(self):
        """
        A value never contains CR, LF, NUL or another control character:
        a HELO name cannot add an attribute.
        """
        session = PolicySession(heloName="evil\nrecipient=root@example.org\r\x00")
        data = encodeRequest(policyAttributes("HELO", session))
        lines = decode(data)
        self.assertEqual(dict(lines)["helo_name"], "evil?recipient=root@example.org??")
        self.assertEqual([n for n, _ in lines].count("recipient"), 1)

    def test_sanitize(self):
        """
        Values of every plain type become text.
        """
        self.assertEqual(sanitize(None), "")
        self.assertEqual(sanitize(12), "12")
        self.assertEqual(sanitize(True), "yes")
        self.assertEqual(sanitize(False), "")
        self.assertEqual(sanitize(b"a\nb"), "a?b")
        self.assertEqual(sanitize("caf\u00e9\t"), "caf\u00e9?")

    def test_encodeExtra(self):
        """
        C{request} is added when missing; UTF-8 values are sent as UTF-8.
        """
        data = encodeRequest(
            {"protocol_state": "RCPT", "sender": "j\u00f6rg@example.de"}
        )
        self.assertEqual(
            data,
            "request=smtpd_access_policy\nprotocol_state=RCPT\n"
            "sender=j\u00f6rg@example.de\n\n".encode("utf-8"),
        )

    def test_badNames(self):
        """
        An attribute name that is empty or contains C{=} or a line break is
        refused.
        """
        for name in ("", "a=b", "a\nb", "a\x00"):
            self.assertRaises(ValueError, encodeRequest, {name: "x"})

    def test_xtext(self):
        """
        C{+}, C{=}, space and non-ASCII characters are C{+XX}.
        """
        self.assertEqual(xtext("a+b=c d"), "a+2Bb+3Dc+20d")
        self.assertEqual(xtext("\u00e9"), "+C3+A9")
        self.assertEqual(xtext(""), "")


class CertificateTests(unittest.TestCase):
    """
    The C{ccert_*} fields of a client certificate.
    """

    def makeCertificate(self):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
        subject = x509.Name(
            [x509.NameAttribute(x509.NameOID.COMMON_NAME, "client one")]
        )
        issuer = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "Test CA")])
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(1)
            .not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256())
        )

    def test_fingerprint(self):
        """
        SHA-256, upper-case hexadecimal bytes separated by colons.
        """
        self.assertEqual(
            fingerprint(b"abc"),
            "BA:78:16:BF:8F:01:CF:EA:41:41:40:DE:5D:AE:22:23:"
            "B0:03:61:A3:96:17:7A:9C:B4:10:FF:61:F2:00:15:AD",
        )

    def test_verified(self):
        """
        A verified certificate gives its names and both fingerprints; the
        fields fit L{PolicySession}.
        """
        from cryptography.hazmat.primitives import serialization

        certificate = self.makeCertificate()
        fields = certificateFields(certificate, verified=True)
        self.assertEqual(fields["ccertSubject"], "client one")
        self.assertEqual(fields["ccertIssuer"], "Test CA")
        der = certificate.public_bytes(serialization.Encoding.DER)
        self.assertEqual(fields["ccertFingerprint"], fingerprint(der))
        self.assertEqual(len(fields["ccertPubkeyFingerprint"]), 95)
        session = PolicySession(**fields)
        self.assertEqual(
            policyAttributes("RCPT", session)["ccert_subject"], "client+20one"
        )

    def test_unverified(self):
        """
        An unverified certificate gives only the fingerprints, as Postfix;
        a pyOpenSSL certificate is accepted too.
        """
        from OpenSSL import crypto

        certificate = crypto.X509.from_cryptography(self.makeCertificate())
        fields = certificateFields(certificate, verified=False)
        self.assertEqual(fields["ccertSubject"], "")
        self.assertEqual(fields["ccertIssuer"], "")
        self.assertEqual(len(fields["ccertFingerprint"]), 95)


class ReplyReaderTests(unittest.TestCase):
    """
    Splitting replies off the stream.
    """

    def test_oneReply(self):
        """
        C{action=...} and an empty line make a reply.
        """
        reader = ReplyReader()
        self.assertEqual(reader.feed(b"action=DUNNO\n\n"), [{"action": "DUNNO"}])
        self.assertFalse(reader.pending)

    def test_pieces(self):
        """
        A reply may arrive a byte at a time, with CRLF line ends.
        """
        reader = ReplyReader()
        out = []  # type: List[Any]
        for byte in b"action=OK\r\n\r\n":
            out.extend(reader.feed(bytes([byte])))
            if not out:
                self.assertTrue(reader.pending)
        self.assertEqual(out, [{"action": "OK"}])

    def test_several(self):
        """
        Several replies in one chunk; other attributes are kept; the first
        C{action} wins, as in Postfix.
        """
        reader = ReplyReader()
        replies = reader.feed(
            b"action=DUNNO\n\nlog=x\naction=REJECT no\naction=OK\n\naction=O"
        )
        self.assertEqual(
            replies, [{"action": "DUNNO"}, {"log": "x", "action": "REJECT no"}]
        )
        self.assertEqual(reader.feed(b"K\n\n"), [{"action": "OK"}])

    def test_longLine(self):
        """
        A line over 4 KB is an error, with or without its line end.
        """
        self.assertRaises(
            ReplyError, ReplyReader().feed, b"action=" + b"x" * policy.MAX_LINE
        )
        self.assertRaises(
            ReplyError,
            ReplyReader().feed,
            b"action=" + b"x" * policy.MAX_LINE + b"\n\n",
        )

    def test_longReply(self):
        """
        A reply of many short lines without its end is an error.
        """
        reader = ReplyReader()
        self.assertRaises(
            ReplyError, reader.feed, b"x=y\n" * (policy.MAX_REPLY // 4 + 1)
        )

    def test_noAction(self):
        """
        A reply without C{action} is an error (Postfix's "missing
        attribute action").
        """
        self.assertRaises(ReplyError, ReplyReader().feed, b"result=ok\n\n")
        self.assertRaises(ReplyError, ReplyReader().feed, b"\n")

    def test_notAttribute(self):
        """
        A line that is not C{name=value} is an error, and so is one that
        is not UTF-8.
        """
        self.assertRaises(ReplyError, ReplyReader().feed, b"hello\n\n")
        self.assertRaises(ReplyError, ReplyReader().feed, b"=x\n\n")
        self.assertRaises(ReplyError, ReplyReader().feed, b"action=\xff\n\n")


class ActionTests(unittest.TestCase):
    """
    Every access(5) action and the reply Postfix makes of it.
    """

    def check(self, text, action, code=0, dsn="", reply=""):
        decision = parseAction(text)
        self.assertEqual(
            (decision.action, decision.code, decision.dsn, decision.text),
            (action, code, dsn, reply),
            text,
        )
        self.assertEqual(decision.raw, text)
        self.assertFalse(decision.default)
        return decision

    def test_accept(self):
        """
        OK, RELAY, PERMIT and a bare number accept; DUNNO decides nothing;
        the words are not case-sensitive; text after them is ignored.
        """
        for text in ("OK", "ok", "RELAY", "permit", "OK fine", "12345", "550"):
            self.check(text, "OK")
        for text in ("DUNNO", "dunno", "DUNNO whatever"):
            self.check(text, "DUNNO")

    def test_reject(self):
        """
        REJECT: 554 5.7.1, "Access denied" unless text is given; an
        enhanced status code at the start of the text is used, its class
        made to agree with the code.
        """
        self.check("REJECT", "REJECT", 554, "5.7.1", "Access denied")
        self.check("reject go away", "REJECT", 554, "5.7.1", "go away")
        self.check("REJECT 5.7.23 SPF fail", "REJECT", 554, "5.7.23", "SPF fail")
        self.check("REJECT 4.1.1 bad", "REJECT", 554, "5.1.1", "bad")
        self.check("REJECT 5.7.1", "REJECT", 554, "5.7.1", "Access denied")
        self.check("REJECT 5.7 short", "REJECT", 554, "5.7.1", "5.7 short")

    def test_defer(self):
        """
        DEFER: 450 4.7.1, "Access denied" by default.
        """
        self.check("DEFER", "DEFER", 450, "4.7.1", "Access denied")
        self.check("defer 4.3.2 later", "DEFER", 450, "4.3.2", "later")

    def test_conditional(self):
        """
        DEFER_IF_PERMIT and DEFER_IF_REJECT: 450 4.7.1, "Service
        unavailable" by default.
        """
        self.check(
            "DEFER_IF_PERMIT Greylisted, see http://x.test/",
            "DEFER_IF_PERMIT",
            450,
            "4.7.1",
            "Greylisted, see http://x.test/",
        )
        self.check(
            "defer_if_permit 4.7.24 SPF temperror",
            "DEFER_IF_PERMIT",
            450,
            "4.7.24",
            "SPF temperror",
        )
        self.check(
            "DEFER_IF_REJECT", "DEFER_IF_REJECT", 450, "4.7.1", "Service unavailable"
        )

    def test_codes(self):
        """
        4NN and 5NN with text: that code, the status X.7.1 unless given.
        """
        self.check("450 try later", "DEFER", 450, "4.7.1", "try later")
        self.check("550 5.1.1 no such user", "REJECT", 550, "5.1.1", "no such user")
        self.check("554 4.7.1 x", "REJECT", 554, "5.7.1", "x")
        self.check("421 4.3.2 closing", "DEFER", 421, "4.3.2", "closing")

    def test_prepend(self):
        """
        PREPEND a valid header; a header with a space before the colon is
        valid too; trailing space is dropped.
        """
        self.check(
            "PREPEND X-Greylist: delayed 1 seconds",
            "PREPEND",
            reply="X-Greylist: delayed 1 seconds",
        )
        self.check(
            "prepend Received-SPF: Pass (mailfrom) ",
            "PREPEND",
            reply="Received-SPF: Pass (mailfrom)",
        )
        self.check("PREPEND X-A : b", "PREPEND", reply="X-A : b")

    def test_prependBad(self):
        """
        PREPEND without a header, or at END-OF-MESSAGE, is DUNNO with a
        warning, as Postfix.
        """
        for text in ("PREPEND", "PREPEND no header here", "PREPEND : x"):
            decision = parseAction(text)
            self.assertEqual(decision.action, "DUNNO")
            self.assertIn("header", decision.warning)
        decision = parseAction("PREPEND X-A: b", "END-OF-MESSAGE")
        self.assertEqual(decision.action, "DUNNO")
        self.assertIn("END-OF-MESSAGE", decision.warning)
        self.assertEqual(parseAction("PREPEND X-A: b", "DATA").action, "PREPEND")

    def test_messageActions(self):
        """
        DISCARD and HOLD with optional text, REDIRECT and BCC with an
        address, WARN and INFO with optional text.
        """
        self.check("DISCARD", "DISCARD")
        self.check("DISCARD spam", "DISCARD", reply="spam")
        self.check("HOLD", "HOLD")
        self.check("hold look at it", "HOLD", reply="look at it")
        self.check("REDIRECT abuse@example.org", "REDIRECT", reply="abuse@example.org")
        self.check("BCC archive@example.org", "BCC", reply="archive@example.org")
        self.check("WARN suspicious", "WARN", reply="suspicious")
        self.check("INFO", "INFO")

    def test_addressRequired(self):
        """
        REDIRECT and BCC without C{user@domain} are DUNNO with a warning.
        """
        for text in ("REDIRECT", "REDIRECT postmaster", "BCC"):
            decision = parseAction(text)
            self.assertEqual(decision.action, "DUNNO")
            self.assertIn("user@domain", decision.warning)

    def test_filter(self):
        """
        FILTER is not supported: DUNNO with a warning.
        """
        decision = parseAction("FILTER smtp:[127.0.0.1]:10025")
        self.assertEqual(decision.action, "DUNNO")
        self.assertEqual(decision.warning, "FILTER is not supported")

    def test_unknown(self):
        """
        An empty action, an unknown word and a lookup table raise
        L{UnknownAction}.
        """
        for text in (
            "",
            "  ",
            "MAYBE",
            "reject_unauth_destination",
            "hash:/x",
            "2xx",
            "4\u00b2\u00b2 superscript digits",
            "5\u0661\u0661 Arabic-Indic digits",
            "\u0661",
        ):
            self.assertRaises(UnknownAction, parseAction, text)

    def test_default(self):
        """
        C{tempfail}, C{dunno}, C{reject} and access(5) actions as the
        default action.
        """
        tempfail = defaultDecision("tempfail")
        self.assertEqual(
            tempfail.reply(),
            {"code": 451, "dsn": "4.3.5", "text": "Server configuration problem"},
        )
        self.assertTrue(tempfail.default)
        self.assertEqual(defaultDecision("DUNNO").action, "DUNNO")
        self.assertEqual(defaultDecision("dunno").action, "DUNNO")
        reject = defaultDecision("reject")
        self.assertEqual((reject.code, reject.dsn), (554, "5.7.1"))
        custom = defaultDecision("450 4.7.1 See https://example.com/support")
        self.assertEqual(custom.code, 450)
        self.assertTrue(custom.default)

    def test_badDefault(self):
        """
        A default action that is not one is a C{ValueError} naming it.
        """
        for text in ("maybe", "", "FILTER smtp:x", "PREPEND"):
            e = self.assertRaises(ValueError, defaultDecision, text)
            self.assertIn("default_action", str(e))


class ReplyTests(unittest.TestCase):
    """
    L{PolicyDecision.reply} and the plain-data form.
    """

    def test_postfixWording(self):
        """
        C{<subject>: Class rejected: text}, as Postfix words it.
        """
        decision = parseAction("DEFER_IF_PERMIT Greylisted")
        self.assertEqual(
            decision.reply("bob@example.org", "Recipient address"),
            {
                "code": 450,
                "dsn": "4.7.1",
                "text": "<bob@example.org>: Recipient address rejected: Greylisted",
            },
        )
        self.assertEqual(decision.reply()["text"], "Greylisted")

    def test_noReply(self):
        """
        Decisions that do not reject or defer have no reply.
        """
        for text in ("OK", "DUNNO", "PREPEND X: y", "DISCARD", "HOLD", "WARN x"):
            self.assertIsNone(parseAction(text).reply("x", "Client host"))
            self.assertFalse(parseAction(text).rejects)
        self.assertTrue(parseAction("REJECT").rejects)
        self.assertTrue(parseAction("450 x").rejects)
        self.assertFalse(parseAction("DEFER_IF_PERMIT").rejects)

    def test_dsnFix(self):
        """
        An address status about the other kind of address is adjusted
        (Postfix's smtpd_dsn_fix); non-address statuses are kept.
        """
        unknown = parseAction("550 5.1.1 unknown user")
        self.assertEqual(unknown.reply("a@b", "Sender address")["dsn"], "5.1.7")
        self.assertEqual(unknown.reply("a@b", "Recipient address")["dsn"], "5.1.1")
        self.assertEqual(unknown.reply("h", "Client host")["dsn"], "5.0.0")
        self.assertEqual(unknown.reply()["dsn"], "5.1.1")
        sender = parseAction("550 5.1.8 bad sender domain")
        self.assertEqual(sender.reply("a@b", "Recipient address")["dsn"], "5.1.2")
        self.assertEqual(sender.reply("a@b", "Sender address")["dsn"], "5.1.8")
        self.assertEqual(
            parseAction("550 5.7.1 x").reply("a@b", "Sender address")["dsn"], "5.7.1"
        )

    def test_replyClasses(self):
        """
        Every protocol state has Postfix's name for what it rejects.
        """
        self.assertEqual(set(policy.REPLY_CLASSES), set(policy.PROTOCOL_STATES))
        self.assertEqual(policy.REPLY_CLASSES["RCPT"], "Recipient address")

    def test_printableAndShort(self):
        """
        The reply text is printable ASCII and the reply fits 512 bytes.
        """
        decision = parseAction("REJECT caf\u00e9 \x01" + "x" * 600)
        reply = decision.reply("a@b", "Sender address")
        line = "%d %s %s" % (reply["code"], reply["dsn"], reply["text"])
        self.assertEqual(len(line), 510)
        self.assertTrue(
            reply["text"].startswith("<a@b>: Sender address rejected: caf  ")
        )
        self.assertTrue(all(" " <= c <= "~" for c in line))

    def test_plainData(self):
        """
        A decision survives L{PolicyDecision.toDict} and
        L{PolicyDecision.fromDict}; a bad one is refused.
        """
        for text in ("REJECT 5.7.2 no", "PREPEND X: y", "DUNNO"):
            decision = parseAction(text)
            self.assertEqual(PolicyDecision.fromDict(decision.toDict()), decision)
        default = defaultDecision("tempfail")
        self.assertEqual(PolicyDecision.fromDict(default.toDict()), default)
        self.assertRaises(ValueError, PolicyDecision.fromDict, {"action": "NOPE"})

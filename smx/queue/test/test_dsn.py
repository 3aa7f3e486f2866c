# -*- test-case-name: smx.queue.test.test_dsn -*-
"""
Tests for L{smx.queue.dsn}: reports are parsed back with Python's C{email}
package.
"""

import email
import email.policy

from twisted.trial import unittest

from smx.queue import dsn

ORIGINAL = b"From: a@x.test\r\nSubject: hello\r\n\r\nthe body\r\n"
ENVELOPE = {
    "id": "S00000000407CE49200",
    "sender": "a@x.test",
    "received": 1000000000.0,
    "envid": "ENV123",
}
FAILURE = {
    "address": "user@example.com",
    "code": 550,
    "reply": "550 5.7.1 <user@example.com>... Access denied",
    "remoteMTA": "10.2.3.4",
    "where": "rcpt",
    "lastAttempt": 1000000100.0,
}


def parse(data):
    return email.message_from_bytes(data, policy=email.policy.compat32)


class BuildReportTests(unittest.TestCase):
    """
    Tests for L{dsn.buildReport}.
    """

    def test_bounceStructure(self):
        """
        A bounce is a multipart/report of type delivery-status with a text
        part, a message/delivery-status part and the returned message.
        """
        msg = parse(
            dsn.buildReport(
                "failed", "mx.smx.test", ENVELOPE, [FAILURE], ORIGINAL, now=1e9
            )
        )
        self.assertEqual(msg.get_content_type(), "multipart/report")
        self.assertEqual(msg.get_param("report-type"), "delivery-status")
        self.assertEqual(msg["To"], "<a@x.test>")
        self.assertIn("MAILER-DAEMON@mx.smx.test", msg["From"])
        self.assertEqual(msg["Auto-Submitted"], "auto-replied")
        parts = msg.get_payload()
        self.assertEqual(
            [p.get_content_type() for p in parts],
            ["text/plain", "message/delivery-status", "message/rfc822"],
        )
        self.assertIn("<user@example.com>", parts[0].get_payload())
        returned = parts[2].get_payload()[0]
        self.assertEqual(returned["Subject"], "hello")

    def test_deliveryStatusFields(self):
        """
        The delivery-status part has the per-message and per-recipient
        fields of RFC 3464 with the right values.
        """
        msg = parse(
            dsn.buildReport(
                "failed", "mx.smx.test", ENVELOPE, [FAILURE], ORIGINAL, now=1e9
            )
        )
        perMessage, perRecipient = msg.get_payload()[1].get_payload()
        self.assertEqual(perMessage["Reporting-MTA"], "dns; mx.smx.test")
        self.assertEqual(perMessage["Original-Envelope-Id"], "ENV123")
        self.assertIsNotNone(perMessage["Arrival-Date"])
        self.assertEqual(perRecipient["Final-Recipient"], "rfc822; user@example.com")
        self.assertEqual(perRecipient["Action"], "failed")
        self.assertEqual(perRecipient["Status"], "5.7.1")
        self.assertEqual(perRecipient["Remote-MTA"], "dns; 10.2.3.4")
        self.assertEqual(
            " ".join(perRecipient["Diagnostic-Code"].split()),
            "smtp; 550 5.7.1 <user@example.com>... Access denied",
        )

    def test_headersOnly(self):
        """
        With C{headersOnly} only the header is returned, as
        text/rfc822-headers.
        """
        data = dsn.buildReport(
            "failed", "h", ENVELOPE, [FAILURE], ORIGINAL, headersOnly=True
        )
        msg = parse(data)
        part = msg.get_payload()[2]
        self.assertEqual(part.get_content_type(), "text/rfc822-headers")
        self.assertNotIn(b"the body", data)

    def test_delayed(self):
        """
        A delay warning says C{Action: delayed} with a 4.x.x status and
        C{Will-Retry-Until}.
        """
        r = dict(FAILURE, code=451, reply="451 try later")
        msg = parse(
            dsn.buildReport("delayed", "h", ENVELOPE, [r], ORIGINAL, willRetryUntil=2e9)
        )
        block = msg.get_payload()[1].get_payload()[1]
        self.assertEqual(block["Action"], "delayed")
        self.assertEqual(block["Status"], "4.0.0")
        self.assertIsNotNone(block["Will-Retry-Until"])
        self.assertIn("Delayed", msg["Subject"])

    def test_success(self):
        """
        A success notice has the recipient's C{action} (delivered or
        relayed), a 2.x.x status, the ORCPT and ENVID, no
        C{Will-Retry-Until}.
        """
        r = dict(
            FAILURE,
            code=250,
            reply="250 2.0.0 ok",
            action="relayed",
            orcpt="rfc822;User@example.com",
        )
        msg = parse(
            dsn.buildReport("success", "h", ENVELOPE, [r], ORIGINAL, willRetryUntil=2e9)
        )
        self.assertEqual(msg["Subject"], "Successful Mail Delivery Report")
        perMessage, block = msg.get_payload()[1].get_payload()
        self.assertEqual(perMessage["Original-Envelope-Id"], "ENV123")
        self.assertEqual(block["Original-Recipient"], "rfc822;User@example.com")
        self.assertEqual(block["Action"], "relayed")
        self.assertEqual(block["Status"], "2.0.0")
        self.assertIsNone(block["Will-Retry-Until"])
        r = dict(r, reply="250 ok", action="delivered")
        msg = parse(dsn.buildReport("success", "h", ENVELOPE, [r], ORIGINAL))
        block = msg.get_payload()[1].get_payload()[1]
        self.assertEqual((block["Action"], block["Status"]), ("delivered", "2.0.0"))

    def test_expiredTemporary(self):
        """
        A temporary failure that expired in the queue is reported as failed
        with status 4.4.7.
        """
        r = dict(FAILURE, code=451, reply="451 4.3.0 try later")
        msg = parse(dsn.buildReport("failed", "h", ENVELOPE, [r], ORIGINAL))
        block = msg.get_payload()[1].get_payload()[1]
        self.assertEqual(block["Status"], "4.4.7")

    def test_noInjection(self):
        """
        CR/LF in a remote reply cannot add header fields to the report.
        """
        r = dict(FAILURE, reply="550 no\r\nAction: delivered\r\n")
        msg = parse(dsn.buildReport("failed", "h", ENVELOPE, [r], ORIGINAL))
        block = msg.get_payload()[1].get_payload()[1]
        self.assertEqual(block.get_all("Action"), ["failed"])

    def test_enhancedStatus(self):
        """
        The enhanced status is taken from the reply or derived from the
        code.
        """
        self.assertEqual(dsn.enhancedStatus("550 5.1.1 no such user", 550), "5.1.1")
        self.assertEqual(dsn.enhancedStatus("550 no such user", 550), "5.0.0")
        self.assertEqual(dsn.enhancedStatus("421 busy", 421), "4.0.0")


class GlobalReportTests(unittest.TestCase):
    """
    Global DSNs (RFC 6533) for messages received with SMTPUTF8.
    """

    def build(self, envelope, failure, original, headersOnly=False):
        return dsn.buildReport(
            "failed",
            "mx.smx.test",
            envelope,
            [failure],
            original,
            headersOnly=headersOnly,
            now=1e9,
        )

    def test_global(self):
        """
        With SMTPUTF8 and a UTF-8 recipient the report is of type
        global-delivery-status: a UTF-8 text part, a
        message/global-delivery-status part with the utf-8 address type,
        the message as message/global; the addresses keep their UTF-8.
        """
        envelope = dict(ENVELOPE, sender="jörg@x.test", smtputf8=True)
        failure = dict(FAILURE, address="zoë@bücher.test", orcpt="rfc822;zoë@a.test")
        original = "Subject: Grüße\r\n\r\nbody\r\n".encode("utf-8")
        data = self.build(envelope, failure, original)
        text = data.decode("utf-8")
        self.assertIn("To: <jörg@x.test>\r\n", text)
        self.assertIn("report-type=global-delivery-status", text)
        self.assertIn("Content-Type: text/plain; charset=utf-8\r\n", text)
        self.assertIn("Content-Type: message/global-delivery-status\r\n", text)
        self.assertIn("Final-Recipient: utf-8; zoë@bücher.test\r\n", text)
        self.assertIn("Original-Recipient: utf-8; zoë@a.test\r\n", text)
        self.assertIn("Content-Type: message/global\r\n", text)
        self.assertIn("Subject: Grüße", text)
        headers = self.build(envelope, failure, original, headersOnly=True)
        self.assertIn(b"Content-Type: message/global-headers\r\n", headers)

    def test_asciiStaysClassic(self):
        """
        A message received with SMTPUTF8 that is all ASCII, or one with
        UTF-8 that came without it, gets the classic report.
        """
        envelope = dict(ENVELOPE, smtputf8=True)
        msg = parse(self.build(envelope, FAILURE, ORIGINAL))
        self.assertEqual(msg.get_param("report-type"), "delivery-status")
        failure = dict(FAILURE, address="zoë@bücher.test")
        data = self.build(ENVELOPE, failure, ORIGINAL)
        self.assertIn(b"report-type=delivery-status", data)
        self.assertIn(b"Final-Recipient: rfc822; zo?@b?cher.test", data)

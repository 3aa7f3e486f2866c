# -*- test-case-name: smx.queue.test.test_bounce -*-
"""
Tests for L{smx.queue.bounce.Bouncer}: reports queued as new transactions
of QMGR's own, through L{Bouncer.report}, with the in-memory content store
of L{smx.queue.testing}, time from a L{Clock} and a recording C{submit}.
"""

import email

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from smx.interfaces import IContentStore
from smx.log import Logger, MemorySink
from smx.queue.bounce import Bouncer
from smx.queue.envelope import Transaction
from smx.queue.testing import MemoryContentStore, defaultQueueSettings

ORIGINAL = b"From: a@x.test\r\nSubject: hello\r\n\r\nthe body text\r\n"
RECEIVED = 1000000.0


def failure(address, code=550, reply="550 5.1.1 no such user"):
    return {
        "address": address,
        "code": code,
        "reply": reply,
        "remoteMTA": "mx.y.test",
        "where": "rcpt",
        "lastAttempt": RECEIVED + 10,
    }


class BouncerTests(unittest.TestCase):
    """
    Tests for L{Bouncer.report}.
    """

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(RECEIVED + 60)
        self.store = MemoryContentStore()
        self.sink = MemorySink()
        self.submitted = []
        self.ids = iter(range(1, 100))
        self.bouncer = self.makeBouncer()

    def makeBouncer(self, **changes):
        """
        @param changes: fields of the L{QueueSettings} to change.
        """
        settings = defaultQueueSettings(**changes)
        return Bouncer(
            self.store,
            self.submit,
            lambda: "S%016X00" % (0x9000 + next(self.ids),),
            "mx.smx.test",
            self.clock,
            Logger("qmgr", level=14, sink=self.sink),
            maxErrors=settings.maxErrorsPerBounce,
            headersOnly=settings.headerOnlyInBounce,
            queuereturnTimeout=settings.queuereturnTimeout,
        )

    def submit(self, envelope):
        self.submitted.append(envelope)
        return defer.succeed(None)

    def transaction(self, sender="a@x.test", taId="S0000000000001000", **extra):
        envelope = {
            "id": taId,
            "sender": sender,
            "recipients": [{"address": "b@y.test"}],
            "size": len(ORIGINAL),
            "received": RECEIVED,
        }
        envelope.update(extra)
        ta = Transaction.fromEnvelope(envelope)
        self.store.contents[ta.id] = ORIGINAL
        return ta

    def report(self, envelope):
        """The report queued with C{envelope}, parsed."""
        return email.message_from_bytes(self.store.contents[envelope["id"]])

    def test_fakes(self):
        """
        The content store fake provides L{IContentStore}.
        """
        self.assertTrue(verifyObject(IContentStore, MemoryContentStore()))

    def test_failed(self):
        """
        A bounce is a new transaction from the null sender to the original
        sender, its content (an RFC 3464 report with the whole original
        message) in the content store before it is submitted.
        """
        ta = self.transaction()
        self.assertIsNone(
            self.successResultOf(
                self.bouncer.report("failed", ta, [failure("b@y.test")])
            )
        )
        [envelope] = self.submitted
        self.assertEqual(envelope["sender"], "")
        self.assertEqual(envelope["recipients"], [{"address": "a@x.test", "index": 0}])
        self.assertEqual(envelope["dsnFor"], ta.id)
        self.assertEqual(envelope["received"], self.clock.seconds())
        self.assertEqual(envelope["bodyType"], "7BIT")
        self.assertEqual(envelope["size"], len(self.store.contents[envelope["id"]]))
        msg = self.report(envelope)
        self.assertEqual(msg.get_content_type(), "multipart/report")
        text, status, returned = msg.get_payload()
        block = status.get_payload()[1]
        self.assertEqual(block["Final-Recipient"], "rfc822; b@y.test")
        self.assertEqual(block["Action"], "failed")
        self.assertEqual(block["Status"], "5.1.1")
        self.assertEqual(returned.get_content_type(), "message/rfc822")
        self.assertIn(b"the body text", self.store.contents[envelope["id"]])
        self.assertEqual((self.bouncer.sent, ta.bounces), (1, 1))
        self.assertTrue(
            any("dsn_for=%s" % (ta.id,) in line for line in self.sink.lines())
        )

    def test_laterBouncesHeadersOnly(self):
        """
        The first bounce of a transaction returns the whole message, later
        ones only its header.
        """
        ta = self.transaction()
        self.bouncer.report("failed", ta, [failure("b@y.test")])
        self.bouncer.report("failed", ta, [failure("c@y.test")])
        first, second = [self.report(e) for e in self.submitted]
        self.assertEqual(first.get_payload()[2].get_content_type(), "message/rfc822")
        self.assertEqual(
            second.get_payload()[2].get_content_type(), "text/rfc822-headers"
        )
        self.assertNotIn(b"the body text", self.store.contents[self.submitted[1]["id"]])

    def test_headersOnly(self):
        """
        With C{header_only_in_bounce}, or for a transaction sent with
        C{RET=HDRS}, even the first bounce returns only the header.
        """
        self.bouncer.report(
            "failed", self.transaction(ret="HDRS"), [failure("b@y.test")]
        )
        bouncer = self.makeBouncer(headerOnlyInBounce=True)
        bouncer.report(
            "failed", self.transaction(taId="S0000000000002000"), [failure("b@y.test")]
        )
        for envelope in self.submitted:
            self.assertNotIn(b"the body text", self.store.contents[envelope["id"]])

    def test_maxErrors(self):
        """
        At most C{max_errors_per_bounce} recipients go in one report.
        """
        bouncer = self.makeBouncer(maxErrorsPerBounce=2)
        ta = self.transaction()
        failures = [failure("r%d@y.test" % (i,)) for i in range(5)]
        self.successResultOf(bouncer.report("failed", ta, failures))
        self.assertEqual(len(self.submitted), 3)
        counts = [
            len(self.report(e).get_payload()[1].get_payload()) - 1
            for e in self.submitted
        ]
        self.assertEqual(counts, [2, 2, 1])
        self.assertEqual((bouncer.sent, ta.bounces), (3, 3))

    def test_delayed(self):
        """
        A delay warning says C{delayed} and until when smx retries
        (C{queuereturn_timeout} after arrival); it does not count as a
        bounce of the transaction.
        """
        bouncer = self.makeBouncer(queuereturnTimeout=86400)
        ta = self.transaction()
        self.successResultOf(
            bouncer.report("delayed", ta, [failure("b@y.test", 451, "451 4.3.0 later")])
        )
        block = self.report(self.submitted[0]).get_payload()[1].get_payload()[1]
        self.assertEqual(block["Action"], "delayed")
        self.assertEqual(
            email.utils.parsedate_to_datetime(block["Will-Retry-Until"]).timestamp(),
            RECEIVED + 86400,
        )
        self.assertEqual(ta.bounces, 0)

    def test_nullSender(self):
        """
        Nothing is sent to the null sender: a failed bounce is logged and
        dropped (a double bounce when the transaction is itself a report);
        a delay warning is dropped silently.
        """
        ta = self.transaction(sender="")
        self.successResultOf(self.bouncer.report("failed", ta, [failure("b@y.test")]))
        dsn = self.transaction(sender="", taId="S0000000000002000", dsnFor="S1")
        self.successResultOf(self.bouncer.report("failed", dsn, [failure("b@y.test")]))
        self.successResultOf(self.bouncer.report("delayed", ta, [failure("b@y.test")]))
        self.assertEqual(self.submitted, [])
        self.assertEqual((self.bouncer.sent, self.bouncer.dropped), (0, 2))
        warnings = [line for line in self.sink.lines() if "sev=WARN" in line]
        self.assertEqual(len(warnings), 2)
        self.assertIn("no bounce to <>", warnings[0])
        self.assertIn("double bounce dropped", warnings[1])

    def test_nothingToReport(self):
        """
        An empty list of failures queues nothing.
        """
        self.successResultOf(self.bouncer.report("failed", self.transaction(), []))
        self.assertEqual((self.submitted, self.bouncer.sent), ([], 0))

    def test_contentMissing(self):
        """
        A report whose original content is gone is still sent (without
        it), and the missing content is logged.
        """
        ta = self.transaction()
        del self.store.contents[ta.id]
        self.successResultOf(self.bouncer.report("failed", ta, [failure("b@y.test")]))
        self.assertEqual(len(self.submitted), 1)
        self.assertTrue(
            any("sev=ERR" in line and "content" in line for line in self.sink.lines())
        )

    def test_eightBitOriginal(self):
        """
        A report returning 8-bit content is queued as C{8BITMIME}.
        """
        ta = self.transaction()
        self.store.contents[ta.id] = ORIGINAL.replace(b"body", "b\u00f6dy".encode())
        self.successResultOf(self.bouncer.report("failed", ta, [failure("b@y.test")]))
        self.assertEqual(self.submitted[0]["bodyType"], "8BITMIME")

    def test_storeFails(self):
        """
        A report whose content cannot be stored, or whose envelope cannot
        be submitted, makes L{Bouncer.report} fail (the caller retries);
        nothing counts as sent.
        """
        self.store.failCommit = OSError("disk full")
        self.failureResultOf(
            self.bouncer.report("failed", self.transaction(), [failure("b@y.test")])
        )
        self.assertEqual(self.submitted, [])
        self.store.failCommit = None
        self.bouncer.submit = lambda envelope: defer.fail(OSError("IBDB"))
        self.failureResultOf(
            self.bouncer.report("failed", self.transaction(), [failure("b@y.test")])
        )
        self.assertEqual(self.bouncer.sent, 0)

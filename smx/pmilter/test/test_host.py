# -*- test-case-name: smx.pmilter.test.test_host -*-
"""
Tests for L{smx.pmilter.host}: SMTPS's side of the pmilters, driven by
L{FakeSMTPSession} as SMTPS will drive it, with a L{Clock} for timeouts.
"""

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from smx.interfaces import IPolicyMilterHost, IPolicyMilterSession
from smx.log import Logger, MemorySink
from smx.pmilter import (
    CAP_RCPT_ST,
    CONT,
    DISCARD,
    OK,
    PERM,
    PMM_DOT_MSGID,
    PMM_MAIL_TAID,
    PMM_SEID,
    PMM_SRVHOSTNAME,
    SMST_CONNECT,
    SMST_DOT,
    SMST_EHLO,
    SMST_MAIL,
    SMST_RCPT,
    TEMP,
    Negotiation,
    PolicyMilterUnavailable,
    quick,
)
from smx.pmilter.host import HostChain, PolicyMilterHost
from smx.pmilter.testing import FakePolicyMilter, FakeSMTPSession

TIMEOUT = 5

#: a whole session with one transaction
SESSION = [
    ("connect", ()),
    ("helo", ()),
    ("mail", "a@example.com"),
    ("rcpt", "b@example.org"),
    ("data", ()),
    ("content", b"Message-ID: <m1@example.com>\r\nSubject: hi\r\n\r\nbody\r\n"),
    ("quit", ()),
]


class HostTestMixin:
    """
    A host over some pmilters, with a Clock and a log in memory.
    """

    onFailure = "tempfail"

    def makeHost(self, *pmilters, **kwargs):
        self.clock = Clock()
        self.sink = MemorySink()
        self.log = Logger("smtps", level=20, sink=self.sink)
        host = PolicyMilterHost(
            list(pmilters),
            self.clock,
            TIMEOUT,
            kwargs.pop("onFailure", self.onFailure),
            "mx.example.net",
            self.log,
            **kwargs,
        )
        host.startService()
        return host

    def drive(self, host, steps=SESSION, sessionId="S1"):
        driver = FakeSMTPSession(host, sessionId)
        self.successResultOf(driver.run(steps))
        return driver

    def errors(self):
        return [line for line in self.sink.lines() if line.startswith("sev=")]


class NegotiationTests(HostTestMixin, SynchronousTestCase):
    """
    Only what a pmilter negotiated is sent to it (App. B.3, B.6, B.7).
    """

    def test_interfaces(self):
        """
        The host and its sessions provide the interfaces SMTPS uses.
        """
        host = self.makeHost(FakePolicyMilter())
        self.assertTrue(verifyObject(IPolicyMilterHost, host))
        self.assertTrue(verifyObject(IPolicyMilterSession, host.openSession("S1")))

    def test_everything(self):
        """
        A pmilter that wants every stage gets every callback in order.
        """
        p = FakePolicyMilter()
        self.drive(self.makeHost(p))
        self.assertEqual(
            p.callbacks(),
            [
                "negotiate",
                "connect",
                "helo",
                "mail",
                "rcpt",
                "data",
                "body",
                "eom",
                "close",
            ],
        )
        self.assertEqual(p.calls[3], ("mail", "<a@example.com>", []))
        self.assertTrue(p.calls[6][1].endswith(b"body\r\n.\r\n"))

    def test_onlyNegotiatedStages(self):
        """
        Stages it did not ask for are not sent; abort and close are.
        """
        p = FakePolicyMilter(negotiation=Negotiation(stages={SMST_RCPT}))
        driver = self.drive(
            self.makeHost(p),
            SESSION[:4] + [("rset", ()), ("quit", ())],
        )
        self.assertEqual(p.callbacks(), ["negotiate", "rcpt", "abort", "close"])
        self.assertEqual(driver.codes()[-1], ("RCPT", 250))

    def test_onlyDefinedCallbacks(self):
        """
        A pmilter with only C{negotiate} and C{rcpt} works: the other
        callbacks are optional.
        """

        class Minimal:
            name = "minimal"
            seen = []

            def negotiate(self, server):
                return Negotiation()

            def rcpt(self, session, address, args):
                self.seen.append(address)
                session.setreply("550 5.7.1 no")
                return PERM

        m = Minimal()
        driver = self.drive(self.makeHost(m))
        self.assertEqual(m.seen, ["<b@example.org>"])
        self.assertEqual(driver.codes()[3], ("RCPT", 550))
        self.assertEqual(self.errors(), [])

    def test_negotiationError(self):
        """
        A pmilter asking for a macro too early is reported once at
        negotiation, with its name and sev=ERR; sessions get the failure
        policy (tempfail: 451 4.3.0 at connect).
        """
        p = FakePolicyMilter("early", Negotiation(macros={SMST_EHLO: [PMM_MAIL_TAID]}))
        host = self.makeHost(p)
        [line] = self.errors()
        self.assertIn("sev=ERR", line)
        self.assertIn("pmilter=early", line)
        self.assertIn("mail_taid", line)
        driver = self.drive(host)
        self.assertEqual(driver.transcript[0][1], 451)
        self.assertEqual(driver.transcript[0][2].enhanced, "4.3.0")
        self.assertTrue(driver.transcript[0][2].failed)
        self.assertEqual(len(self.errors()), 1)
        self.assertEqual(host.describe()[0]["state"], "down")

    def test_negotiateNotANegotiation(self):
        """
        C{negotiate} must return a Negotiation.
        """
        p = FakePolicyMilter("odd")
        p.answers["negotiate"] = {"stages": "all"}
        self.makeHost(p)
        [line] = self.errors()
        self.assertIn("not a Negotiation", line)

    def test_macros(self):
        """
        Macros are known from the stage they were requested at; the
        transaction id during the transaction, the Message-Id (found in
        the content) at the final dot.
        """
        seen = []
        p = FakePolicyMilter(
            negotiation=Negotiation(
                macros={
                    SMST_CONNECT: [PMM_SEID, PMM_SRVHOSTNAME],
                    SMST_MAIL: [PMM_MAIL_TAID],
                    SMST_DOT: [PMM_DOT_MSGID],
                }
            )
        )

        def record(name):
            def answer(session, *args):
                seen.append(
                    (
                        name,
                        session.getmac(PMM_SEID),
                        session.getmac(PMM_SRVHOSTNAME),
                        session.getmac(PMM_MAIL_TAID),
                        session.getmac(PMM_DOT_MSGID),
                    )
                )
                return CONT

            return answer

        for name in ("connect", "mail", "rcpt", "eom", "close"):
            p.answers[name] = record(name)
        self.drive(self.makeHost(p))
        self.assertEqual(
            seen,
            [
                ("connect", "S1", "mx.example.net", None, None),
                ("mail", "S1", "mx.example.net", "S1-T1", None),
                ("rcpt", "S1", "mx.example.net", "S1-T1", None),
                ("eom", "S1", "mx.example.net", "S1-T1", "<m1@example.com>"),
                ("close", "S1", "mx.example.net", None, None),
            ],
        )

    def test_serverContext(self):
        """
        Each pmilter gets a server context with its options, the host
        name and the reactor; its sessions link to it.
        """
        p = FakePolicyMilter("p")
        self.drive(self.makeHost(p, options={"p": {"x": 1}}))
        [server] = p.servers
        self.assertEqual(server.options, {"x": 1})
        self.assertEqual(server.hostname, "mx.example.net")
        self.assertIs(server.reactor, self.clock)
        for session in p.sessions.values():
            self.assertIs(session.server, server)
            self.assertIs(session.server.pmilter, p)


class DecisionTests(HostTestMixin, SynchronousTestCase):
    """
    What the pmilters answer becomes SMTPS's decision.
    """

    def test_reply(self):
        """
        The reply set with a rejection is the decision.
        """
        p = FakePolicyMilter("gl")
        p.answers["rcpt"] = TEMP
        p.replies["rcpt"] = "451 4.7.1 greylisted"
        driver = self.drive(self.makeHost(p))
        command, code, decision = driver.transcript[3]
        self.assertEqual((command, code), ("RCPT", 451))
        self.assertEqual(
            decision.reply(), {"code": 451, "dsn": "4.7.1", "text": "greylisted"}
        )
        self.assertEqual(decision.pmilter, "gl")

    def test_deferred(self):
        """
        A callback may answer with a Deferred.
        """
        p = FakePolicyMilter()
        d = defer.Deferred()
        p.answers["helo"] = lambda session, helohost: d
        host = self.makeHost(p)
        driver = FakeSMTPSession(host)
        result = driver.run(SESSION[:2])
        self.assertNoResult(result)
        d.callback(PERM)
        self.successResultOf(result)
        self.assertEqual(driver.codes()[1], ("EHLO", 550))

    def test_order(self):
        """
        The first rejection decides; later pmilters are not asked; an
        acceptance of an earlier one does not save the command.
        """
        a, b, c = FakePolicyMilter("a"), FakePolicyMilter("b"), FakePolicyMilter("c")
        a.answers["rcpt"] = OK
        b.answers["rcpt"] = PERM
        driver = self.drive(self.makeHost(a, b, c))
        self.assertEqual(driver.transcript[3][2].pmilter, "b")
        self.assertNotIn("rcpt", c.callbacks())

    def test_quickAccept(self):
        """
        A quick acceptance ends the chain for the command.
        """
        a, b = FakePolicyMilter("a"), FakePolicyMilter("b")
        a.answers["mail"] = quick(OK)
        b.answers["mail"] = PERM
        driver = self.drive(self.makeHost(a, b))
        decision = driver.transcript[2][2]
        self.assertTrue(decision.accept and decision.quick)
        self.assertNotIn("mail", b.callbacks())

    def test_discard(self):
        """
        DISCARD is a decision of its own.
        """
        p = FakePolicyMilter()
        p.answers["rcpt"] = DISCARD
        driver = self.drive(self.makeHost(p))
        self.assertTrue(driver.transcript[3][2].discard)
        self.assertEqual(driver.codes()[3], ("RCPT", 250))

    def test_rcptStatus(self):
        """
        A recipient SMTPS rejected goes only to pmilters with CAP_RCPT_ST,
        which see its code with getstatus (App. B.7); the rejection
        stands.
        """
        statuses = []
        a = FakePolicyMilter("a", Negotiation(capabilities={CAP_RCPT_ST}))
        a.answers["rcpt"] = lambda s, addr, args: statuses.append(s.getstatus()) or OK
        b = FakePolicyMilter("b")
        steps = SESSION[:3] + [("rcpt", ("unknown@example.org", (), 550))]
        steps += [("rcpt", "b@example.org")]
        driver = self.drive(self.makeHost(a, b), steps)
        self.assertEqual(statuses, [550, 250])
        self.assertEqual(driver.codes()[3:], [("RCPT", 550), ("RCPT", 250)])
        self.assertEqual(
            [c for c in b.calls if c[0] == "rcpt"], [("rcpt", "<b@example.org>", [])]
        )


class TransactionTests(HostTestMixin, SynchronousTestCase):
    """
    Every pmilter in a transaction gets eom or abort, never both (B.4).
    """

    def test_eom(self):
        """
        A transaction that ends with the final dot gets eom, no abort.
        """
        p = FakePolicyMilter()
        self.drive(self.makeHost(p))
        self.assertIn("eom", p.callbacks())
        self.assertNotIn("abort", p.callbacks())

    def test_rset(self):
        """
        RSET aborts; a second abort does nothing.
        """
        p = FakePolicyMilter()
        steps = SESSION[:4] + [("rset", ()), ("rset", ()), ("quit", ())]
        self.drive(self.makeHost(p), steps)
        self.assertEqual(p.callbacks()[-2:], ["abort", "close"])
        self.assertEqual(p.callbacks().count("abort"), 1)

    def test_dropped(self):
        """
        A session that ends in a transaction: abort, then close.
        """
        p = FakePolicyMilter()
        self.drive(self.makeHost(p), SESSION[:5] + [("quit", ())])
        self.assertEqual(p.callbacks()[-2:], ["abort", "close"])
        self.assertNotIn("eom", p.callbacks())

    def test_newMail(self):
        """
        A new MAIL (or EHLO) in a transaction aborts it first.
        """
        p = FakePolicyMilter()
        steps = SESSION[:4] + [("mail", "c@example.com"), ("helo", ()), ("quit", ())]
        self.drive(self.makeHost(p), steps)
        self.assertEqual(p.callbacks()[5:], ["abort", "mail", "abort", "helo", "close"])

    def test_rejectedMail(self):
        """
        When a MAIL is rejected, those that accepted it get abort.
        """
        a, b = FakePolicyMilter("a"), FakePolicyMilter("b")
        b.answers["mail"] = PERM
        driver = self.drive(self.makeHost(a, b), SESSION[:3] + [("quit", ())])
        self.assertEqual(driver.codes()[2], ("MAIL", 550))
        self.assertEqual(a.callbacks()[-2:], ["abort", "close"])
        self.assertEqual(b.callbacks()[-2:], ["abort", "close"])

    def test_bodyDecision(self):
        """
        A rejection in body is the decision of the final dot; the pmilter
        gets no more chunks and abort instead of eom.
        """
        a, b = FakePolicyMilter("a"), FakePolicyMilter("b")
        a.answers["body"] = PERM
        a.replies["body"] = "554 5.7.1 bad content"
        big = b"X: y\r\n\r\n" + b"z" * 100000 + b"\r\n"
        host = self.makeHost(a, b)
        driver = FakeSMTPSession(host)
        self.successResultOf(driver.run(SESSION[:5] + [("content", big)]))
        self.assertEqual(driver.codes()[-1], ("DOT", 554))
        self.assertEqual(a.callbacks().count("body"), 1)
        self.assertEqual(a.callbacks()[-1], "abort")
        self.assertGreater(b.callbacks().count("body"), 1)
        self.assertNotIn("eom", b.callbacks())
        self.assertEqual(b.callbacks()[-1], "abort")

    def test_eomRejectionAbortsTheRest(self):
        """
        When one pmilter rejects at the final dot, those after it get
        abort.
        """
        a, b = FakePolicyMilter("a"), FakePolicyMilter("b")
        a.answers["eom"] = TEMP
        self.drive(self.makeHost(a, b))
        self.assertEqual(a.callbacks()[-2:], ["eom", "close"])
        self.assertEqual(b.callbacks()[-3:], ["body", "abort", "close"])

    def test_quickAcceptAtEom(self):
        """
        After a quick acceptance at the final dot the others still get
        eom (their answer does not matter).
        """
        a, b = FakePolicyMilter("a"), FakePolicyMilter("b")
        a.answers["eom"] = quick(OK)
        b.answers["eom"] = PERM
        driver = self.drive(self.makeHost(a, b))
        self.assertEqual(driver.codes()[-1], ("DOT", 250))
        self.assertIn("eom", b.callbacks())
        self.assertNotIn("abort", b.callbacks())

    def test_notWaiting(self):
        """
        Calls made without waiting for the one before are run in order.
        """
        p = FakePolicyMilter()
        d = defer.Deferred()
        p.answers["mail"] = lambda *a: d
        host = self.makeHost(p)
        s = host.openSession("S1")
        results = [
            s.connect(None, None),
            s.mail("<a@b>", []),
            s.rcpt("<c@d>", []),
            s.close(),
        ]
        self.assertNoResult(results[2])
        self.assertEqual(p.callbacks(), ["negotiate", "connect", "mail"])
        d.callback(CONT)
        self.assertEqual(
            p.callbacks(), ["negotiate", "connect", "mail", "rcpt", "abort", "close"]
        )
        for r in results:
            self.successResultOf(r)
        self.assertIsNotNone(self.successResultOf(s.rcpt("<x@y>", [])))


class FailureTests(HostTestMixin, SynchronousTestCase):
    """
    A pmilter that fails gives the failure policy's decision and one log
    record with its name and sev=.
    """

    def assertOneError(self, name, text):
        [line] = self.errors()
        self.assertTrue(line.startswith("sev=ERR, func=PolicyMilterHost.call"), line)
        self.assertIn("pmilter=%s" % (name,), line)
        self.assertIn(text, line)
        return line

    def test_timeout(self):
        """
        No answer within the timeout: 451 4.3.0; the late answer is
        dropped.
        """
        p = FakePolicyMilter("slow")
        late = defer.Deferred()
        p.answers["rcpt"] = lambda *a: late
        host = self.makeHost(p)
        driver = FakeSMTPSession(host)
        d = driver.run(SESSION[:4])
        self.assertNoResult(d)
        self.clock.advance(TIMEOUT - 0.1)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.successResultOf(d)
        self.assertEqual(driver.codes()[3], ("RCPT", 451))
        self.assertTrue(driver.transcript[3][2].failed)
        self.assertOneError("slow", "no answer within 5s")
        late.callback(PERM)
        self.assertEqual(len(driver.transcript), 4)
        # a late failure is dropped too (no unhandled error)
        late2 = defer.Deferred()
        p.answers["rcpt"] = lambda *a: late2
        d = driver.run([("rcpt", "c@example.org")])
        self.clock.advance(TIMEOUT)
        self.successResultOf(d)
        late2.errback(RuntimeError("late"))
        self.assertEqual(len(self.errors()), 2)

    def test_timeoutChained(self):
        """
        A Deferred that fired but waits for another one it was chained to
        has no result yet: the timeout applies to it too.
        """
        p = FakePolicyMilter("chained")
        p.answers["rcpt"] = lambda *a: defer.succeed(None).addCallback(
            lambda _: defer.Deferred()
        )
        host = self.makeHost(p)
        driver = FakeSMTPSession(host)
        d = driver.run(SESSION[:4])
        self.assertNoResult(d)
        self.clock.advance(TIMEOUT)
        self.successResultOf(d)
        self.assertEqual(driver.codes()[3], ("RCPT", 451))
        self.assertOneError("chained", "no answer within 5s")

    def test_raises(self):
        """
        An exception: 451 4.3.0, logged once (and its traceback on
        Twisted's log).
        """
        p = FakePolicyMilter("buggy")

        def boom(*a):
            raise ZeroDivisionError("oops")

        p.answers["mail"] = boom
        driver = self.drive(self.makeHost(p))
        self.assertEqual(driver.codes()[2], ("MAIL", 451))
        self.assertOneError("buggy", "ZeroDivisionError: oops")
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_nonsenseValue(self):
        """
        A value that is not of App. B.9 is a failure.
        """
        p = FakePolicyMilter("odd")
        p.answers["helo"] = "OK"
        driver = self.drive(self.makeHost(p))
        self.assertEqual(driver.codes()[1], ("EHLO", 451))
        self.assertOneError("odd", "not a value of App. B.9")

    def test_replyMismatch(self):
        """
        A reply whose code does not match the value is a failure.
        """
        p = FakePolicyMilter("odd")
        p.answers["rcpt"] = TEMP
        p.replies["rcpt"] = "550 5.7.1 permanent"
        driver = self.drive(self.makeHost(p))
        self.assertEqual(driver.codes()[3], ("RCPT", 451))
        self.assertEqual(driver.transcript[3][2].enhanced, "4.3.0")
        self.assertOneError("odd", "does not match")

    def test_replyWithoutEnhancedCode(self):
        """
        A reply without an enhanced status code is a failure.
        """
        p = FakePolicyMilter("odd")
        p.answers["rcpt"] = PERM
        p.replies["rcpt"] = "550 go away"
        driver = self.drive(self.makeHost(p))
        self.assertEqual(driver.codes()[3], ("RCPT", 451))
        self.assertOneError("odd", "enhanced status code")

    def test_accept(self):
        """
        With on_failure = accept, a failing pmilter is no objection (and
        the next one is still asked); it is logged all the same.
        """
        a, b = FakePolicyMilter("a"), FakePolicyMilter("b")
        a.answers["rcpt"] = "nonsense"
        b.answers["rcpt"] = TEMP
        driver = self.drive(self.makeHost(a, b, onFailure="accept"))
        self.assertEqual(driver.transcript[3][2].pmilter, "b")
        line = self.assertOneError("a", "nonsense")
        self.assertIn("action=accept", line)

    def test_acceptFailureOnly(self):
        """
        With on_failure = accept and nothing else deciding, the command
        goes on (the decision is flagged failed).
        """
        p = FakePolicyMilter("a")
        p.answers["rcpt"] = lambda *a: 1 / 0
        driver = self.drive(self.makeHost(p, onFailure="accept"))
        self.assertEqual(driver.codes()[3], ("RCPT", 250))
        self.assertTrue(driver.transcript[3][2].failed)
        self.flushLoggedErrors(ZeroDivisionError)

    def test_abortAndCloseFailures(self):
        """
        A failing abort or close is logged; the session still ends.
        """
        p = FakePolicyMilter("a")
        p.answers["abort"] = lambda s: 1 / 0
        p.answers["close"] = lambda s: defer.Deferred()
        host = self.makeHost(p)
        driver = FakeSMTPSession(host)
        d = driver.run(SESSION[:4] + [("quit", ())])
        self.clock.advance(TIMEOUT)
        self.successResultOf(d)
        self.assertEqual(len(self.errors()), 2)
        self.flushLoggedErrors(ZeroDivisionError)

    def test_unavailable(self):
        """
        A pmilter that says it is unavailable is down: logged once, the
        failure policy for the rest of the session and for new sessions,
        until it is negotiated again (at most once per timeout), which is
        logged too.
        """
        p = FakePolicyMilter("remote")
        p.answers["helo"] = lambda *a: defer.fail(PolicyMilterUnavailable("gone"))
        host = self.makeHost(p)
        driver = self.drive(host)
        # (SMTPS would not go on after the 451 to MAIL)
        self.assertEqual(
            driver.codes()[:5],
            [
                ("connect", 220),
                ("EHLO", 451),
                ("MAIL", 451),
                ("RCPT", 451),
                ("DATA", 451),
            ],
        )
        self.assertOneError("remote", "gone")
        self.assertNotIn("mail", p.callbacks())
        del p.answers["helo"]
        driver = self.drive(host, sessionId="S2")
        self.assertEqual(driver.codes()[0], ("connect", 451))
        self.assertEqual(p.callbacks().count("negotiate"), 1)
        self.clock.advance(TIMEOUT)
        driver = self.drive(host, sessionId="S3")
        self.assertEqual(driver.codes()[-1], ("DOT", 250))
        self.assertEqual(p.callbacks().count("negotiate"), 2)
        self.assertIn("pmilter=remote, status=up", self.sink.lines()[-1])
        self.assertEqual(len(self.errors()), 1)

    def test_slowNegotiation(self):
        """
        A session that opens while a negotiation is under way waits for
        it; one that does not end in time is a failure.
        """
        p = FakePolicyMilter("slow")
        d = defer.Deferred()
        p.answers["negotiate"] = lambda server: d
        host = self.makeHost(p)
        driver = FakeSMTPSession(host)
        result = driver.run(SESSION[:1])
        self.assertNoResult(result)
        d.callback(Negotiation())
        self.successResultOf(result)
        self.assertEqual(driver.codes(), [("connect", 220)])

        q = FakePolicyMilter("stuck")
        q.answers["negotiate"] = lambda server: defer.Deferred()
        host = self.makeHost(q)
        driver = FakeSMTPSession(host)
        result = driver.run(SESSION[:1])
        self.clock.advance(TIMEOUT)
        self.successResultOf(result)
        self.assertEqual(driver.codes(), [("connect", 451)])
        self.assertIn("no answer within", self.errors()[0])


class ChainTests(HostTestMixin, SynchronousTestCase):
    """
    L{HostChain}: two hosts asked in a row, as one.
    """

    def test_chain(self):
        """
        The first host's rejection decides; a MAIL rejected by the second
        is aborted in the first; both end the session.
        """
        a, b = FakePolicyMilter("a"), FakePolicyMilter("b")
        b.answers["mail"] = PERM
        chain = HostChain([self.makeHost(a), self.makeHost(b)])
        self.assertTrue(verifyObject(IPolicyMilterHost, chain))
        driver = FakeSMTPSession(chain)
        self.assertTrue(verifyObject(IPolicyMilterSession, chain.openSession("S0")))
        self.successResultOf(driver.run(SESSION[:3] + [("quit", ())]))
        self.assertEqual(driver.codes()[2], ("MAIL", 550))
        self.assertEqual(a.callbacks()[-3:], ["mail", "abort", "close"])
        self.assertEqual(b.callbacks()[-2:], ["abort", "close"])

    def test_chainEom(self):
        """
        A rejection at the final dot by the first host: the second gets
        abort.
        """
        a, b = FakePolicyMilter("a"), FakePolicyMilter("b")
        a.answers["eom"] = PERM
        driver = FakeSMTPSession(HostChain([self.makeHost(a), self.makeHost(b)]))
        self.successResultOf(driver.run(SESSION))
        self.assertEqual(driver.codes()[-1], ("DOT", 550))
        self.assertNotIn("eom", b.callbacks())
        self.assertIn("abort", b.callbacks())


class ReloadTests(HostTestMixin, SynchronousTestCase):
    """
    L{PolicyMilterHost.reload} (SIGUSR1).
    """

    def test_reload(self):
        """
        Each pmilter with C{reload} is reloaded; a failure is logged and
        does not stop the others.
        """
        calls = []
        a, b, c = FakePolicyMilter("a"), FakePolicyMilter("b"), FakePolicyMilter("c")
        a.reload = lambda: 1 / 0
        b.reload = lambda: calls.append("b")
        host = self.makeHost(a, b, c)
        host.reload()
        self.assertEqual(calls, ["b"])
        [line] = self.errors()
        self.assertIn("pmilter=a", line)
        self.flushLoggedErrors(ZeroDivisionError)

# -*- test-case-name: smx.pmilter.test.test_remote -*-
"""
Tests for L{smx.pmilter.remote} and L{smx.pmilter.server}: the pmilters of
a pmilter server as a host, over AMP connections in memory
(L{twisted.test.iosim}) with L{Clock}s for the timeouts.  The same over a
real Unix socket to a real C{smx pmilter-server} is in
L{smx.pmilter.test.test_integration_pmilterserver}.
"""

from twisted.internet import defer, error
from twisted.internet.task import Clock
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from smx.interfaces import IPolicyMilterHost, IPolicyMilterSession
from smx.log import Logger, MemorySink
from smx.pmilter import (
    CAP_RCPT_ST,
    CONT,
    OK,
    PERM,
    PMM_DOT_MSGID,
    PMM_MAIL_TAID,
    PMM_SEID,
    SMST_CONNECT,
    SMST_DOT,
    SMST_MAIL,
    SMST_RCPT,
    TEMP,
    Negotiation,
    quick,
)
from smx.pmilter.host import PolicyMilterHost
from smx.pmilter.protocol import MAX_CHUNK
from smx.pmilter.remote import RemotePolicyMilterHost
from smx.pmilter.server import PolicyMilterServerFactory, addressFields, makeAddress
from smx.pmilter.testing import FakePolicyMilter, FakeSMTPSession

TIMEOUT = 5

SESSION = [
    ("connect", ()),
    ("helo", ()),
    ("mail", "a@example.com"),
    ("rcpt", "b@example.org"),
    ("rcpt", "spamtrap@example.org"),
    ("data", ()),
    ("content", b"Message-ID: <m1@example.com>\r\nSubject: hi\r\n\r\nbody\r\n"),
    ("mail", "c@example.com"),
    ("rcpt", "d@example.org"),
    ("rset", ()),
    ("unknown", "XFOO bar"),
    ("quit", ()),
]


class Tracker:
    """
    A pmilter as someone else would write it: its own contexts, macros,
    replies, Deferred answers, body and eom.  It runs unchanged in SMTPS
    and in a pmilter server.
    """

    name = "tracker"

    def __init__(self):
        self.events = []

    def negotiate(self, server):
        server.context = {"sessions": 0}
        return Negotiation(
            stages={SMST_CONNECT, SMST_MAIL, SMST_RCPT, SMST_DOT},
            macros={
                SMST_CONNECT: [PMM_SEID],
                SMST_MAIL: [PMM_MAIL_TAID],
                SMST_DOT: [PMM_DOT_MSGID],
            },
        )

    def connect(self, session, hostname, address):
        session.server.context["sessions"] += 1
        session.context = {"client": address.host, "bytes": 0}
        self.events.append(
            ("connect", hostname, address.host, session.getmac(PMM_SEID))
        )
        return CONT

    def mail(self, session, address, args):
        self.events.append(("mail", address, session.getmac(PMM_MAIL_TAID)))
        return defer.succeed(OK)

    def rcpt(self, session, address, args):
        self.events.append(("rcpt", address))
        if "spamtrap" in address:
            session.setreply("550 5.7.1 <%s> is a trap" % (address[1:-1],))
            return quick(PERM)
        return CONT

    def body(self, session, chunk):
        session.context["bytes"] += len(chunk)
        return CONT

    def eom(self, session):
        self.events.append(
            ("eom", session.context["bytes"], session.getmac(PMM_DOT_MSGID))
        )
        session.setreply("451 4.7.1 come back later")
        return TEMP

    def abort(self, session):
        self.events.append(("abort",))

    def close(self, session):
        self.events.append(("close", session.server.context["sessions"]))


class RemoteTestMixin:
    """
    A pmilter server factory and a remote host connected to it in memory.
    """

    serverTimeout = 100

    def setUp(self):
        self.clock = Clock()
        self.serverClock = Clock()
        self.sink = MemorySink()
        self.serverSink = MemorySink()
        self.pumps = []
        self.down = False

    def makeRemote(self, *pmilters, **kwargs):
        self.factory = PolicyMilterServerFactory(
            list(pmilters),
            self.serverClock,
            self.serverTimeout,
            Logger("pmilter", level=20, sink=self.serverSink),
            kwargs.pop("options", None),
        )
        host = RemotePolicyMilterHost(
            None,
            "/nonexistent/pm.sock",
            TIMEOUT,
            kwargs.pop("onFailure", "tempfail"),
            "mx.example.net",
            Logger("smtps", level=20, sink=self.sink),
            clock=self.clock,
            connector=self.connector,
        )
        host.startService()
        self.settle()
        return host

    def connector(self, proto):
        if self.down:
            return defer.fail(error.ConnectionRefusedError("down"))
        server = self.factory.buildProtocol(None)
        self.pumps.append(
            iosim.connect(
                server,
                iosim.makeFakeServer(server),
                proto,
                iosim.makeFakeClient(proto),
                greet=False,
            )
        )
        return defer.succeed(proto)

    def settle(self, d=None):
        for _ in range(200):
            for pump in self.pumps:
                pump.flush()
            if d is not None and d.called:
                break
        return d

    def drive(self, host, steps, sessionId="S1"):
        driver = FakeSMTPSession(host, sessionId)
        self.successResultOf(self.settle(driver.run(steps)))
        return driver

    def errors(self, sink=None):
        sink = self.sink if sink is None else sink
        return [line for line in sink.lines() if line.startswith("sev=")]


class BothWaysTests(RemoteTestMixin, SynchronousTestCase):
    """
    The same pmilter inside SMTPS and behind a pmilter server decides the
    same.
    """

    def test_sameBothWays(self):
        """
        A session through a L{PolicyMilterHost} and through a
        L{RemotePolicyMilterHost} gives the same decisions and the same
        calls of the pmilter.
        """
        local = Tracker()
        host = PolicyMilterHost([local], self.clock, TIMEOUT, hostname="mx.example.net")
        host.startService()
        there = self.drive(host, SESSION)

        remote = Tracker()
        back = self.drive(self.makeRemote(remote), SESSION)
        self.assertEqual(back.transcript, there.transcript)
        self.assertEqual(remote.events, local.events)
        self.assertEqual(
            there.codes(),
            [
                ("connect", 220),
                ("EHLO", 250),
                ("MAIL", 250),
                ("RCPT", 250),
                ("RCPT", 550),
                ("DATA", 354),
                ("DOT", 451),
                ("MAIL", 250),
                ("RCPT", 250),
                ("XFOO", 500),
            ],
        )
        self.assertTrue(there.transcript[2][2].accept)
        self.assertTrue(there.transcript[4][2].quick)
        self.assertEqual(there.transcript[6][2].text, "come back later")
        self.assertEqual(
            local.events[:4],
            [
                ("connect", "client.example.com", "192.0.2.7", "S1"),
                ("mail", "<a@example.com>", "S1-T1"),
                ("rcpt", "<b@example.org>"),
                ("rcpt", "<spamtrap@example.org>"),
            ],
        )
        self.assertEqual(local.events[4][2], "<m1@example.com>")
        self.assertEqual(local.events[-2:], [("abort",), ("close", 1)])

    def test_interfaces(self):
        """
        The remote host and its sessions provide the host interfaces.
        """
        host = self.makeRemote(FakePolicyMilter())
        self.assertTrue(verifyObject(IPolicyMilterHost, host))
        self.assertTrue(verifyObject(IPolicyMilterSession, host.openSession("S1")))
        self.assertEqual(host.pmilters, ["fake"])

    def test_addresses(self):
        """
        Client addresses cross as fields and come back the same.
        """
        from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress

        for address in (
            IPv4Address("TCP", "192.0.2.1", 25),
            IPv6Address("TCP", "2001:db8::1", 25),
            UNIXAddress("/run/x"),
            None,
        ):
            f = addressFields(address)
            self.assertEqual(
                makeAddress(f["family"], f.get("host"), f.get("port")), address
            )


class TrafficTests(RemoteTestMixin, SynchronousTestCase):
    """
    Only what the server's pmilters want crosses the socket.
    """

    def commands(self):
        return [
            line.split("pmilter_cmd=")[1].split(",")[0]
            for line in self.serverSink.lines()
            if "pmilter_cmd=" in line
        ]

    def test_onlyWanted(self):
        """
        A pmilter that wants RCPT: no HELO, DATA, body, unknown command
        is sent; MAIL and the final dot are, to delimit transactions.
        """
        p = FakePolicyMilter(negotiation=Negotiation(stages={SMST_RCPT}))
        self.drive(self.makeRemote(p), SESSION)
        self.assertEqual(
            self.commands(),
            [
                "negotiate",
                "connect",
                "mail",
                "rcpt",
                "rcpt",
                "eom",
                "mail",
                "rcpt",
                "abort",
                "close",
            ],
        )
        self.assertEqual(
            p.callbacks(), ["negotiate", "rcpt", "rcpt", "rcpt", "abort", "close"]
        )

    def test_messageIdWithoutBody(self):
        """
        A pmilter that wants the Message-Id but not the body gets it
        without the content crossing.
        """
        ids = []

        class Eom:
            name = "eom"

            def negotiate(self, server):
                return Negotiation(
                    stages={SMST_DOT}, macros={SMST_DOT: [PMM_DOT_MSGID]}
                )

            def eom(self, session):
                ids.append(session.getmac(PMM_DOT_MSGID))
                return CONT

        self.drive(self.makeRemote(Eom()), SESSION)
        self.assertEqual(ids, ["<m1@example.com>"])
        self.assertNotIn("body", self.commands())

    def test_bigChunks(self):
        """
        A chunk larger than an AMP value crosses in pieces.
        """
        p = FakePolicyMilter()
        content = b"Subject: x\r\n\r\n" + b"y" * (3 * MAX_CHUNK) + b"\r\n"
        self.drive(
            self.makeRemote(p),
            SESSION[:6] + [("content", (content, 200000)), ("quit", ())],
        )
        chunks = [c[1] for c in p.calls if c[0] == "body"]
        self.assertTrue(all(len(c) <= MAX_CHUNK for c in chunks))
        self.assertEqual(len(chunks), 4)
        self.assertEqual(b"".join(chunks), content + b".\r\n")

    def test_rcptStatus(self):
        """
        A recipient SMTPS rejected crosses only for a pmilter with
        CAP_RCPT_ST.
        """
        statuses = []
        p = FakePolicyMilter(negotiation=Negotiation(capabilities={CAP_RCPT_ST}))
        p.answers["rcpt"] = lambda s, a, args: statuses.append(s.getstatus()) or PERM
        steps = SESSION[:3] + [("rcpt", ("x@example.org", (), 550)), ("quit", ())]
        driver = self.drive(self.makeRemote(p), steps)
        self.assertEqual(statuses, [550])
        self.assertEqual(driver.codes()[-1], ("RCPT", 550))
        self.assertFalse(driver.transcript[-1][2].rejected)

        q = FakePolicyMilter("q")
        self.drive(self.makeRemote(q), steps, "S2")
        self.assertNotIn("rcpt", q.callbacks())

    def test_reload(self):
        """
        C{reload} is passed to the server's pmilters.
        """
        calls = []
        p = FakePolicyMilter()
        p.reload = lambda: calls.append(1)
        host = self.makeRemote(p)
        host.reload()
        self.settle()
        self.assertEqual(calls, [1])


class RemoteFailureTests(RemoteTestMixin, SynchronousTestCase):
    """
    The failure policy for a pmilter server that is down, slow or gone.
    """

    def test_down(self):
        """
        A server that cannot be reached: 451 4.3.0 for every session,
        logged once; tried again at most once per timeout; its return is
        logged.
        """
        self.down = True
        p = FakePolicyMilter()
        host = self.makeRemote(p)
        driver = self.drive(host, SESSION[:2])
        self.assertEqual(driver.codes(), [("connect", 451), ("EHLO", 451)])
        self.assertTrue(driver.transcript[0][2].failed)
        [line] = self.errors()
        self.assertIn("sev=ERR, func=RemotePolicyMilterHost.connect", line)
        self.assertIn("pmilter=socket:/nonexistent/pm.sock", line)
        self.drive(host, SESSION[:1], "S2")
        self.assertEqual(len(self.errors()), 1)
        self.down = False
        self.clock.advance(TIMEOUT)
        driver = self.drive(host, SESSION, "S3")
        self.assertEqual(driver.codes()[0], ("connect", 220))
        self.assertIn("status=up", self.sink.lines()[-1])
        self.assertEqual(len(self.errors()), 1)

    def test_downAccept(self):
        """
        With on_failure = accept, a server that is down objects to
        nothing.
        """
        self.down = True
        host = self.makeRemote(FakePolicyMilter(), onFailure="accept")
        driver = self.drive(host, SESSION)
        self.assertEqual(driver.codes()[0], ("connect", 220))
        self.assertTrue(all(not d.rejected for _, _, d in driver.transcript))

    def test_slow(self):
        """
        A server that does not answer within the timeout: 451 4.3.0,
        logged with the pmilter's name.
        """
        p = FakePolicyMilter()
        p.answers["rcpt"] = lambda *a: defer.Deferred()
        host = self.makeRemote(p)
        driver = FakeSMTPSession(host)
        d = self.settle(driver.run(SESSION[:4]))
        self.assertNoResult(d)
        self.clock.advance(TIMEOUT)
        self.successResultOf(d)
        self.assertEqual(driver.codes()[3], ("RCPT", 451))
        [line] = self.errors()
        self.assertIn("pmilter=fake", line)
        self.assertIn("callback=rcpt", line)
        self.assertIn("no answer within 5s", line)

    def test_serverTimeout(self):
        """
        The server's own timeout (App. B.2 settimeout) makes the pmilter's
        failure; it is logged by the server with the pmilter's name.
        """
        self.serverTimeout = 1
        p = FakePolicyMilter()
        p.answers["rcpt"] = lambda *a: defer.Deferred()
        host = self.makeRemote(p)
        driver = FakeSMTPSession(host)
        d = self.settle(driver.run(SESSION[:4]))
        self.serverClock.advance(1)
        self.successResultOf(self.settle(d))
        self.assertEqual(driver.codes()[3], ("RCPT", 451))
        self.assertTrue(driver.transcript[3][2].failed)
        self.assertEqual(self.errors(), [])
        [line] = self.errors(self.serverSink)
        self.assertIn("pmilter=fake", line)

    def test_failurePolicyOnServer(self):
        """
        The server applies the SMTP server's failure policy: with accept,
        a pmilter that raises does not stop the next one.
        """
        a, b = FakePolicyMilter("a"), FakePolicyMilter("b")
        a.answers["rcpt"] = lambda *x: 1 / 0
        b.answers["rcpt"] = TEMP
        driver = self.drive(self.makeRemote(a, b, onFailure="accept"), SESSION[:4])
        self.assertEqual(driver.transcript[3][2].pmilter, "b")
        self.assertEqual(len(self.errors(self.serverSink)), 1)
        self.flushLoggedErrors(ZeroDivisionError)

    def test_connectionLost(self):
        """
        A connection lost in a session: the rest of the session gets the
        failure policy, logged once; the server closes the session; a new
        session connects again.
        """
        p = FakePolicyMilter()
        host = self.makeRemote(p)
        driver = FakeSMTPSession(host)
        self.successResultOf(self.settle(driver.run(SESSION[:3])))
        self.pumps[0].serverIO.loseConnection()
        self.settle()
        self.successResultOf(self.settle(driver.run(SESSION[3:7])))
        self.assertEqual(
            [c for c in driver.codes()[3:]],
            [("RCPT", 451), ("RCPT", 451), ("DATA", 451), ("DOT", 451)],
        )
        [line] = self.errors()
        self.assertIn("connection lost", line)
        self.assertEqual(p.callbacks()[-2:], ["abort", "close"])
        self.clock.advance(TIMEOUT)
        driver = self.drive(host, SESSION, "S2")
        self.assertEqual(driver.codes()[3], ("RCPT", 250))
        self.assertEqual(len(self.pumps), 2)

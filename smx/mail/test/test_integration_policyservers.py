# -*- test-case-name: smx.mail.test.test_integration_policyservers -*-
"""
Integration tests: SMTPS asking Postfix policy servers (doc/policy.md) in
a real C{twistd -n smx}, driven by smtplib over loopback, each test
starting and stopping its own servers on temporary sockets:

  - C{postgrey} (Debian package C{postgrey}) greylists at RCPT: the
    first try 450 4.2.0, accepted after the delay, its C{X-Greylist}
    header in the delivered message after smx's C{Received:};
  - C{policyd-spf} (Debian package C{postfix-policyd-spf-python}) behind
    C{socat} on a Unix socket, in a private mount namespace whose
    C{/etc/resolv.conf} names a Twisted Names server (L{smx.maps.test.
    dnsserver}) on 127.x.y.z port 53 serving the SPF records (root only):
    pass and softfail accepted with their C{Received-SPF} header, fail
    rejected 550 5.7.23, temperror deferred 450 4.7.24;
  - a policy server that is down: its C{default_action} (tempfail: 451
    4.3.5; dunno: accepted), logged with its name and C{sev=ERR}.
"""

from __future__ import annotations

import os
import pwd
import smtplib
import time
from typing import Any, List, Tuple

from twisted.internet import defer, protocol, reactor, threads
from twisted.internet.task import deferLater
from twisted.trial import unittest

from smx.milter.test.test_integration_policy import (
    POLICYD_SPF,
    POSTGREY,
    SOCAT,
    SPF_CONF,
    UNSHARE,
    _accepts,
    _Daemon,
    _loopbackDNS,
    requirePolicydSPF,
    _Misbehaving,
)
from smx.test.mta import MTA, configuration, tempDirectory, until, waitFor

USERS = ("alice", "bob", "carol", "dave")


class _Scripted(protocol.Protocol):
    """
    A policy server that answers each request with its factory's
    C{answer(request)} (a C{dict} of the attributes) and records it.
    """

    def connectionMade(self) -> None:
        self.buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\n\n" in self.buffer:
            raw, self.buffer = self.buffer.split(b"\n\n", 1)
            request = dict(
                line.split("=", 1) for line in raw.decode("utf-8").split("\n")
            )
            self.factory.requests.append(request)  # type: ignore[attr-defined]
            answer = self.factory.answer(request)  # type: ignore[attr-defined]
            self.transport.write(b"action=%s\n\n" % (answer.encode("utf-8"),))


class _Base(unittest.TestCase):
    """
    An smx whose smtps section asks the policy servers the test names.
    """

    def setUp(self) -> None:
        # short: Unix socket names must fit in sun_path
        self.root = tempDirectory(self, "smxpd")
        self.mta = MTA(self, os.path.join(self.root, "smx"))

    def startMTA(self, policies: str, smtps: str) -> None:
        self.mta.write(
            configuration(self.mta.port, smtps=smtps) + policies,
            aliases="".join("%s: local:\n" % (u,) for u in USERS),
            access="",
        )
        self.mta.start()

    def client(self) -> smtplib.SMTP:
        c = smtplib.SMTP("127.0.0.1", self.mta.port, timeout=20)
        self.addCleanup(c.close)
        c.ehlo("client.test")
        return c

    def send(self, sender: str, recipient: str, marker: str) -> Tuple[Any, Any]:
        """
        One transaction: @return: the RCPT reply and the DATA reply (or
        C{None} when RCPT was refused).
        """
        c = self.client()
        c.mail(sender)
        rcpt = c.rcpt(recipient)
        data = None
        if rcpt[0] == 250:
            try:
                data = c.data(("Subject: %s\r\n\r\n%s\r\n" % (marker, marker)).encode())
            except smtplib.SMTPDataError as e:
                data = (e.smtp_code, e.smtp_error)
        c.quit()
        return rcpt, data

    def delivered(self, user: str, marker: str) -> List[bytes]:
        return [m for m in self.mta.maildir(user) if marker.encode() in m]

    def headers(self, message: bytes) -> List[bytes]:
        head = message.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0]
        return [line for line in head.split(b"\n") if line[:1] not in (b" ", b"\t")]


class GreylistTests(_Base):
    """
    A real postgrey at RCPT, over a Unix socket.
    """

    def setUp(self) -> None:
        if not os.access(POSTGREY, os.X_OK):
            raise unittest.SkipTest(
                "%s (Debian package postgrey) is not installed" % (POSTGREY,)
            )
        _Base.setUp(self)
        dbdir = os.path.join(self.root, "db")
        os.mkdir(dbdir)
        if os.getuid() == 0:
            try:
                user = pwd.getpwnam("postgrey")
            except KeyError:
                raise unittest.SkipTest("no postgrey user")
            os.chown(dbdir, user.pw_uid, user.pw_gid)
            who = ["--user=postgrey", "--group=postgrey"]
        else:
            raise unittest.SkipTest("postgrey drops privileges: run as root")
        # a directory postgrey (its own user) can create its socket in
        sockets = os.path.join(self.root, "run")
        os.mkdir(sockets)
        os.chmod(sockets, 0o777)
        self.socket = os.path.join(sockets, "postgrey")
        postgrey = _Daemon(
            [
                POSTGREY,
                "--unix=" + self.socket,
                "--dbdir=" + dbdir,
                "--delay=1",
                "--hostname=smx-test",
                "--whitelist-clients=/dev/null",
                "--whitelist-recipients=/dev/null",
                "--pidfile=" + os.path.join(self.root, "postgrey.pid"),
            ]
            + who,
            os.path.join(self.root, "postgrey.log"),
        )
        self.addCleanup(postgrey.stop)
        postgrey.start(lambda: _accepts(self.socket))
        self.postgrey = postgrey

    def test_greylisting(self) -> None:
        """
        The first try of a triplet is 450 4.2.0 at RCPT; once the delay
        is over it is accepted and delivered with postgrey's
        C{X-Greylist} header right after smx's C{Received:} header.
        """
        self.startMTA(
            'policy greylist { socket = "unix:%s"; timeout = 10s; }\n' % (self.socket,),
            "policies = { greylist };",
        )
        rcpt, _ = self.send("sender@client.test", "alice@localhost", "GREY1")
        self.assertEqual(rcpt[0], 450, self.postgrey.log())
        self.assertTrue(rcpt[1].startswith(b"4.2.0 <alice@localhost>: Recipient "))
        self.assertIn(b"Greylisted", rcpt[1])
        # postgrey counts whole seconds: the delay of 1 s is over at the
        # start of the second after next
        time.sleep(2.05 - time.time() % 1)
        rcpt, data = self.send("sender@client.test", "alice@localhost", "GREY2")
        self.assertEqual(rcpt[0], 250, self.postgrey.log())
        self.assertEqual(data[0], 250)
        self.assertTrue(waitFor(lambda: self.delivered("alice", "GREY2"), 10))
        [message] = self.delivered("alice", "GREY2")
        headers = self.headers(message)
        received = [i for i, h in enumerate(headers) if h.startswith(b"Received:")]
        grey = [i for i, h in enumerate(headers) if h.startswith(b"X-Greylist:")]
        self.assertEqual(len(grey), 1, headers)
        self.assertEqual(grey[0], received[0] + 1, headers)
        self.assertIn(b"delayed", headers[grey[0]])
        log = self.mta.log()
        self.assertIn("policy=greylist", log)
        self.assertNotIn("sev=ERR", log)


class SPFTests(_Base):
    """
    A real policyd-spf at RCPT; its DNS from a loopback server.
    """

    ZONE = {
        "pass.test": [("TXT", "v=spf1 ip4:127.0.0.1 -all")],
        "fail.test": [("TXT", "v=spf1 ip4:192.0.2.99 -all")],
        "softfail.test": [("TXT", "v=spf1 ip4:192.0.2.99 ~all")],
        "client.test": [("A", "127.0.0.1")],
    }

    def setUp(self) -> None:
        requirePolicydSPF()
        _Base.setUp(self)
        address, stop = _loopbackDNS(self.ZONE, timeout={"temperror.test"})
        self.addCleanup(stop)
        resolv = os.path.join(self.root, "resolv.conf")
        with open(resolv, "w") as f:
            f.write("nameserver %s\noptions timeout:1 attempts:1\n" % (address,))
        conf = os.path.join(self.root, "policyd-spf.conf")
        with open(conf, "w") as f:
            f.write(SPF_CONF)
        self.socket = os.path.join(self.root, "spf.sock")
        script = (
            "mount --bind %s /etc/resolv.conf && exec %s UNIX-LISTEN:%s,fork "
            "EXEC:'%s %s'" % (resolv, SOCAT, self.socket, POLICYD_SPF, conf)
        )
        self.daemon = _Daemon(
            [UNSHARE, "-m", "--propagation", "private", "sh", "-c", script],
            os.path.join(self.root, "spf.log"),
        )
        self.addCleanup(self.daemon.stop)
        self.daemon.start(lambda: os.path.exists(self.socket))

    @defer.inlineCallbacks
    def test_spf(self):
        """
        pass and softfail are accepted and delivered with policyd-spf's
        C{Received-SPF} header after smx's C{Received:}; fail is 550
        5.7.23; a DNS server that does not answer is a temperror, 450
        4.7.24.  (The SMTP sessions run in a thread: the DNS server is
        this test's reactor.)
        """
        self.startMTA(
            'policy spf { socket = "unix:%s"; timeout = 10s; }\n' % (self.socket,),
            "policies = { spf };",
        )
        results = {}
        for user, domain in (
            ("alice", "pass.test"),
            ("bob", "fail.test"),
            ("carol", "softfail.test"),
            ("dave", "temperror.test"),
        ):
            results[domain] = yield threads.deferToThread(
                self.send, "sender@" + domain, user + "@localhost", domain.upper()
            )
        log = self.daemon.log()
        self.assertEqual(results["pass.test"][0][0], 250, log)
        self.assertEqual(results["pass.test"][1][0], 250, log)
        self.assertEqual(results["softfail.test"][1][0], 250, log)
        code, text = results["fail.test"][0]
        self.assertEqual(code, 550, log)
        self.assertTrue(text.startswith(b"5.7.23 <bob@localhost>: Recipient "), text)
        self.assertIn(b"SPF fail", text)
        code, text = results["temperror.test"][0]
        self.assertEqual((code, text[:6]), (450, b"4.7.24"), log)
        ok = yield until(
            lambda: self.delivered("alice", "PASS.TEST")
            and self.delivered("carol", "SOFTFAIL.TEST"),
            10,
        )
        self.assertTrue(ok, self.mta.log())
        for user, marker, result in (
            ("alice", "PASS.TEST", b"Received-SPF: Pass"),
            ("carol", "SOFTFAIL.TEST", b"Received-SPF: Softfail"),
        ):
            [message] = self.delivered(user, marker)
            headers = self.headers(message)
            # after the delivery agent's Return-Path and Delivered-To
            first = [i for i, h in enumerate(headers) if h.startswith(b"Received:")]
            self.assertTrue(headers[first[0] + 1].startswith(result), headers)
        self.assertEqual(self.delivered("bob", "FAIL.TEST"), [])
        self.assertEqual(self.delivered("dave", "TEMPERROR.TEST"), [])


class DownTests(_Base):
    """
    Policy servers that are not running.
    """

    def test_defaultAction(self) -> None:
        """
        A server that is down: tempfail (the default) gives 451 4.3.5 at
        RCPT, logged with the policy's name and C{sev=ERR}; the session
        goes on.  With C{default_action = dunno} the mail passes.
        """
        self.startMTA(
            'policy strict { socket = "unix:%s/none"; }\n'
            'policy lenient { socket = "unix:%s/none"; default_action = dunno; }\n'
            % (self.root, self.root),
            "policies = { strict }; mail_policies = { lenient };",
        )
        c = self.client()
        self.assertEqual(c.mail("sender@client.test")[0], 250)
        code, text = c.rcpt("alice@localhost")
        self.assertEqual(code, 451)
        self.assertTrue(text.startswith(b"4.3.5 <alice@localhost>: Recipient "), text)
        self.assertEqual(c.noop()[0], 250)
        c.quit()
        log = self.mta.logWith("policy=strict", "policy=lenient", "cannot connect")
        errors = [line for line in log.splitlines() if "sev=ERR" in line]
        self.assertTrue(any("policy=strict" in line for line in errors), log)
        self.assertTrue(any("policy=lenient" in line for line in errors), log)
        self.assertIn("cannot connect", log)

    @defer.inlineCallbacks
    def test_slowAndMalformed(self):
        """
        A server that does not answer within C{timeout} (asked at MAIL),
        and one that answers with something that is not the protocol
        (asked at RCPT): the default action, 451 4.3.5, logged with the
        policy's name and why; the session goes on, and the slow server
        is asked again on a new connection once it answers.  (The SMTP session
        runs in a thread: the servers are this test's reactor.)
        """
        paths = {}
        factories = {}
        for mode in ("silent", "garbage"):
            factory = protocol.Factory.forProtocol(_Misbehaving)
            factory.mode = mode  # type: ignore[attr-defined]
            factory.connections = 0  # type: ignore[attr-defined]
            factory.requests = 0  # type: ignore[attr-defined]
            paths[mode] = os.path.join(self.root, mode)
            factories[mode] = factory
            port = reactor.listenUNIX(paths[mode], factory)
            self.addCleanup(port.stopListening)
        self.startMTA(
            'policy slow { socket = "unix:%s"; timeout = 1s; }\n'
            'policy bad { socket = "unix:%s"; }\n'
            % (paths["silent"], paths["garbage"]),
            "mail_policies = { slow }; policies = { bad };",
        )

        def wake() -> None:
            factories["silent"].mode = "ok"  # type: ignore[attr-defined]

        def session():
            c = self.client()
            replies = [c.mail("sender@client.test")]
            threads.blockingCallFromThread(reactor, wake)
            replies.append(c.mail("sender@client.test"))
            replies.append(c.rcpt("alice@localhost"))
            replies.append(c.noop())
            c.quit()
            return replies

        started = time.monotonic()
        replies = yield threads.deferToThread(session)
        self.assertGreaterEqual(time.monotonic() - started, 1.0)
        self.assertEqual([r[0] for r in replies], [451, 250, 451, 250], replies)
        self.assertTrue(replies[0][1].startswith(b"4.3.5 <sender@client.test>: "))
        self.assertTrue(replies[2][1].startswith(b"4.3.5 <alice@localhost>: "))
        errors = [line for line in self.mta.log().splitlines() if "sev=ERR" in line]
        self.assertTrue(
            any("policy=bad" in e and "not name=value" in e for e in errors), errors
        )
        self.assertTrue(
            any("policy=slow" in e and "timeout after 1s" in e for e in errors), errors
        )

    @defer.inlineCallbacks
    def test_oneConnection(self):
        """
        One policy asked at MAIL and RCPT by two sessions, one after the
        other: every request goes over one kept-open connection.
        """
        factory = protocol.Factory.forProtocol(_Misbehaving)
        factory.mode = "ok"  # type: ignore[attr-defined]
        factory.connections = 0  # type: ignore[attr-defined]
        factory.requests = 0  # type: ignore[attr-defined]
        path = os.path.join(self.root, "ok")
        port = reactor.listenUNIX(path, factory)
        self.addCleanup(port.stopListening)
        self.startMTA(
            'policy ok { socket = "unix:%s"; }\n' % (path,),
            "mail_policies = { ok }; policies = { ok };",
        )

        def session():
            c = self.client()
            replies = [c.mail("sender@client.test")]
            replies += [c.rcpt("%s@localhost" % (u,)) for u in ("alice", "bob")]
            c.quit()
            return [r[0] for r in replies]

        for _ in range(2):
            codes = yield threads.deferToThread(session)
            self.assertEqual(codes, [250, 250, 250])
        self.assertEqual(
            (factory.connections, factory.requests), (1, 6)  # type: ignore[attr-defined]
        )

    @defer.inlineCallbacks
    def test_actions(self):
        """
        A policy server's PREPEND (at MAIL and DATA), REDIRECT (at RCPT),
        DISCARD and HOLD, through a real smx: the redirected message
        reaches only the new address, with both headers after smx's
        Received:; a discarded one is answered 250 and not delivered; a
        held one is answered 250, kept in the queue (C{smx mailq} says
        held) and delivered after C{smx qmgrctl release}.
        """

        def answer(request):
            sender = request["sender"]
            state = request["protocol_state"]
            if state == "MAIL":
                return "PREPEND X-Mail-Policy: %s" % (sender,)
            if state == "RCPT" and sender.startswith("redirect"):
                return "REDIRECT carol@localhost"
            if state == "RCPT" and sender.startswith("discard"):
                return "DISCARD"
            if state == "RCPT" and sender.startswith("hold"):
                return "HOLD check this"
            if state == "DATA":
                return "PREPEND X-Data-Policy: %s" % (request["recipient_count"],)
            return "DUNNO"

        factory = protocol.Factory.forProtocol(_Scripted)
        factory.answer = answer  # type: ignore[attr-defined]
        factory.requests = []  # type: ignore[attr-defined]
        path = os.path.join(self.root, "scripted")
        port = reactor.listenUNIX(path, factory)
        self.addCleanup(port.stopListening)
        self.startMTA(
            'policy script { socket = "unix:%s"; }\n' % (path,),
            "mail_policies = { script }; policies = { script }; "
            "data_policies = { script };",
        )
        redirect = yield threads.deferToThread(
            self.send, "redirect@client.test", "alice@localhost", "REDIRECTED"
        )
        discard = yield threads.deferToThread(
            self.send, "discard@client.test", "bob@localhost", "DISCARDED"
        )
        hold = yield threads.deferToThread(
            self.send, "hold@client.test", "dave@localhost", "HELD"
        )
        self.assertEqual((redirect[0][0], redirect[1][0]), (250, 250))
        self.assertEqual((discard[0][0], discard[1][0]), (250, 250))
        self.assertEqual((hold[0][0], hold[1][0]), (250, 250))
        ok = yield until(lambda: self.delivered("carol", "REDIRECTED"), 10)
        self.assertTrue(ok, self.mta.log())
        [message] = self.delivered("carol", "REDIRECTED")
        headers = self.headers(message)
        first = [i for i, h in enumerate(headers) if h.startswith(b"Received:")][0]
        self.assertEqual(
            headers[first + 1 : first + 3],
            [b"X-Mail-Policy: redirect@client.test", b"X-Data-Policy: 1"],
        )
        # give QMGR time to deliver what it should not
        yield deferLater(reactor, 1.0, lambda: None)
        self.assertEqual(self.mta.maildir("alice"), [])
        self.assertEqual(self.mta.maildir("bob"), [])
        self.assertEqual(self.mta.maildir("dave"), [])
        self.assertIn("policy=script, hold=1", self.mta.log())
        stdout, stderr, code = yield self.mta.smx("mailq", "--json")
        self.assertEqual(code, 0, stderr)
        self.assertIn(b"held", stdout)
        self.assertIn(b"dave@localhost", stdout)
        [record] = [r for r in self.mta.records("smtps") if "hold=1" in r]
        taId = record.split("ss_ta=")[1].split(",")[0]
        stdout, stderr, code = yield self.mta.smx("qmgrctl", "release", taId)
        self.assertEqual(code, 0, stderr)
        ok = yield until(lambda: self.delivered("dave", "HELD"), 10)
        self.assertTrue(ok, self.mta.log())

# -*- test-case-name: smx.mail.test.test_integration_milter -*-
"""
Integration tests of SMTPS with sendmail milters (L{smx.mail.milterhooks},
doc/milter.md): smx run as users run it (C{twistd -n smx} with an
smx.conf that declares C{milter} sections), real clients (swaks), a real
next hop (Postfix's C{smtp-sink}) reached by MX from a loopback Twisted
Names server, and real milters started by each test on temporary Unix
sockets:

  - opendkim signs the mail smx relays; the message that reaches the sink
    verifies with dkimpy against the key the test DNS server serves, and
    a changed copy does not;
  - a milter written with python3-milter (Debian's libmilter binding, run
    by C{/usr/bin/python3}; the script of
    L{smx.milter.test.test_integration_milter}, kind C{relay}) rejects,
    tempfails, discards and makes every end-of-message change, checked
    against what reaches the sink;
  - a milter that hangs gives 4xx; one that is down gives its
    C{default_action}.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any, Iterator, List

from twisted.internet import defer, protocol, reactor
from twisted.names import client as dnsclient
from twisted.names import dns
from twisted.trial import unittest

from smx.maps.test.dnsserver import startDNSServer
from smx.milter.test.test_integration_milter import (
    HAVE_OPENDKIM,
    HAVE_PYMILTER,
    OPENDKIM,
    OPENDKIM_GENKEY,
    PEER,
    SYSTEM_PYTHON,
    MilterProcess,
    _publicKey,
)
from smx.test.mta import (
    SMTP_SINK,
    SWAKS,
    MTATestCase,
    SmtpSink,
    configuration,
    swaks,
    until,
)

try:
    import dkim
except ImportError:
    dkim = None


def crlf(message: bytes) -> bytes:
    """A message as smtp-sink dumps it (LF line ends) with CRLF."""
    return message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


class MilterMTATestCase(MTATestCase):
    """
    smx relaying for 127.0.0.1 by MX to an smtp-sink, with the milters a
    test declares; a test DNS server that may also serve TXT records.
    """

    def setUp(self) -> None:
        MTATestCase.setUp(self)
        self.need(SMTP_SINK, SWAKS)

    def startMilterProcess(self, argv: List[str], name: str) -> Any:
        path = os.path.join(self.root, name + ".sock")
        process = MilterProcess(argv, path, os.path.join(self.root, name + ".out"))
        self.addCleanup(process.stop)
        return process

    def peerProcess(self) -> Any:
        """
        The python3-milter milter of L{smx.milter.test.test_integration_milter}
        (kind C{relay}: the first label of the HELO name says what it
        does), not started; it records what it sees in C{self.peerLog}.
        """
        script = os.path.join(self.root, "peer.py")
        with open(script, "w") as f:
            f.write(PEER)
        self.peerLog = os.path.join(self.root, "peer.log")
        return self.startMilterProcess(
            [SYSTEM_PYTHON, script, os.path.join(self.root, "peer.sock")]
            + [self.peerLog, "relay"],
            "peer",
        )

    def startSMX(self, milters: str, smtps: str = "", records: Any = None) -> SmtpSink:
        """
        Start the sink, the DNS server and smx with C{milters} (the text
        of the C{milter} sections) and C{smtps} (more smtps options, e.g.
        its C{milters} list).
        """
        sink = SmtpSink(self, self.root)
        sink.start()
        zone = {
            "remote.test": [("MX", 10, "mx.remote.test")],
            "mx.remote.test": [("A", "127.0.0.2")],
        }
        zone.update(records or {})
        self.dnsPort, stopDNS = startDNSServer(zone)
        self.addCleanup(stopDNS)
        self.mta.write(
            configuration(
                self.mta.port,
                smtps=smtps,
                smar='nameserver = { "127.0.0.1:%d" };' % (self.dnsPort,),
                smtpc="remote_port = %d;" % (sink.port,),
            )
            + milters,
            access="cltaddr:127.0.0.1 relay\n",
        )
        self.mta.start()
        return sink

    def send(self, *args: str) -> defer.Deferred:
        """swaks from 127.0.0.1; fires with (output, status)."""
        d = swaks(self.mta.port, "--timeout", "20", *args)
        return d.addCallback(lambda r: (r[0].decode("utf-8", "replace"), r[2]))


class PythonMilterTests(MilterMTATestCase):
    """
    A python3-milter milter named in an smtps section's C{milters}: its
    decisions become SMTP replies, its changes are what is queued.
    """

    if not HAVE_PYMILTER:
        skip = "python3-milter for %s is not installed" % (SYSTEM_PYTHON,)

    @defer.inlineCallbacks
    def startPeer(self, options: str = "") -> Iterator[Any]:
        self.peer = self.peerProcess()
        yield self.peer.start()
        self.sink = self.startSMX(
            'milter filter { socket = "unix:%s"; %s }\n'
            % (self.peer.socketPath, options),
            smtps="milters = { filter };",
        )

    def seen(self) -> List[List[Any]]:
        with open(self.peerLog) as f:
            return [json.loads(line) for line in f]

    @defer.inlineCallbacks
    def test_everyChange(self) -> Iterator[Any]:
        """
        Every end-of-message change of the milter (add, insert, change and
        delete a header, replace the body, change the sender, add and
        delete recipients) is in what reaches the next hop; smx's
        C{Received:} is the first header; the milter saw the stages with
        Postfix's macros (C{j}, C{{daemon_name}}, C{i}).
        """
        yield self.startPeer()
        out, status = yield self.send(
            "--helo",
            "edit.client.test",
            "--from",
            "a@example.org",
            "--to",
            "b@remote.test,c@remote.test",
            "--header",
            "Subject: hello",
            "--header",
            "X-Remove: me",
            "--body",
            "original body START",
        )
        self.assertEqual(status, 0, out)
        self.assertTrue(
            (yield until(lambda: self.sink.containing(b"replaced body"), 15))
        )
        [message] = [crlf(m) for m in self.sink.containing(b"replaced body")]
        header, _, body = message.partition(b"\r\n\r\n")
        # (smtp-sink ends its dump with an empty line)
        self.assertEqual(body.rstrip(b"\r\n"), b"replaced body")
        self.assertNotIn(b"original body", message)
        lines = header.split(b"\r\n")
        received = [i for i, line in enumerate(lines) if line.startswith(b"Received:")]
        # smtp-sink may put its own lines on top; smx's Received: comes
        # before every header the milter added
        inserted = lines.index(b"X-Inserted: at the top")
        self.assertLess(received[0], inserted)
        self.assertIn(b"by smx.test", b"\n".join(lines[received[0] : inserted]))
        self.assertIn(b"X-Second: line one", header)
        self.assertIn(b"\r\n\tline two", header)
        self.assertIn(b"Subject: changed subject", header)
        self.assertNotIn(b"Subject: hello", header)
        self.assertNotIn(b"X-Remove", header)
        self.assertTrue(header.endswith(b"X-Added: added value"), header)
        # smtp-sink's record of the envelope it got
        self.assertIn(b"X-Mail-Args: <new-sender@example.org>\r\n", header)
        rcpts = sorted(
            line[len(b"X-Rcpt-Args: ") :]
            for line in lines
            if line.startswith(b"X-Rcpt-Args: ")
        )
        self.assertEqual(
            rcpts,
            [
                b"<added-par@remote.test> NOTIFY=NEVER",
                b"<added@remote.test>",
                b"<c@remote.test>",
            ],
        )
        records = self.mta.records("smtpc")
        log = self.mta.log()
        self.assertIn("mail=<new-sender@example.org>", log)
        self.assertIn("modified=", log)
        delivered = "\n".join(r for r in records if "stat=" in r)
        for address in ("c@remote.test", "added@remote.test", "added-par@remote.test"):
            self.assertIn("<%s>" % (address,), delivered)
        self.assertNotIn("<b@remote.test>", delivered)
        stages = [e[0] for e in self.seen()]
        for stage in ("connect", "helo", "mail", "rcpt", "header", "body", "eom"):
            self.assertIn(stage, stages)
        [connect] = [e for e in self.seen() if e[0] == "connect"]
        self.assertEqual(
            (connect[4]["{daemon_name}"], connect[4]["j"]), ("smtps", "smx.test")
        )
        [mail] = [e for e in self.seen() if e[0] == "mail"]
        [eom] = [e for e in self.seen() if e[0] == "eom"]
        self.assertTrue(mail[3]["i"])
        self.assertEqual(mail[3]["i"], eom[3]["i"])

    @defer.inlineCallbacks
    def test_rejections(self) -> Iterator[Any]:
        """
        A recipient the milter rejects gets its multi-line reply and the
        others go on; a milter's rejection at the end of the message is
        the reply to the final dot; a tempfail at MAIL is a 4xx; a
        discard at RCPT accepts the message and drops it; the session
        goes on after each.
        """
        yield self.startPeer()
        out, status = yield self.send(
            "--helo",
            "plain.client.test",
            "--from",
            "a@example.org",
            "--to",
            "reject@remote.test,ok@remote.test",
            "--body",
            "partly rejected END1",
        )
        self.assertIn("550-5.1.1 no such user", out)
        self.assertIn("550 5.1.1 try 100% again", out)
        self.assertTrue(
            (yield until(lambda: self.sink.containing(b"partly rejected END1"), 15))
        )
        out, status = yield self.send(
            "--helo", "rejecteom.client.test", "--to", "x@remote.test"
        )
        self.assertIn("554-5.7.1 spam", out)
        self.assertIn("554 5.7.1 100% spam", out)
        self.assertNotEqual(status, 0)
        out, status = yield self.send(
            "--helo", "tempfailmail.client.test", "--to", "x@remote.test"
        )
        self.assertIn("451 4.7.1", out)
        out, status = yield self.send(
            "--helo",
            "plain.client.test",
            "--to",
            "discard@remote.test",
            "--body",
            "discarded END2",
        )
        self.assertEqual(status, 0, out)
        self.assertIn("Message accepted for delivery", out)
        out, status = yield self.send(
            "--helo", "rejecthelo.client.test", "--to", "x@remote.test"
        )
        self.assertIn("550 5.7.1 go away", out)
        # the last good message is there, the discarded one is not
        out, status = yield self.send(
            "--helo", "plain.client.test", "--to", "y@remote.test", "--body", "END3"
        )
        self.assertEqual(status, 0, out)
        self.assertTrue((yield until(lambda: self.sink.containing(b"END3"), 15)))
        self.assertEqual(self.sink.containing(b"discarded END2"), [])
        self.assertIn("milter=filter", self.mta.log())

    @defer.inlineCallbacks
    def test_quarantine(self) -> Iterator[Any]:
        """
        A quarantine holds the message in the queue (C{mailq} shows its
        recipient held, QMGR logs the reason) instead of delivering it;
        C{smx qmgrctl release} lets it go.
        """
        yield self.startPeer()
        out, status = yield self.send(
            "--helo", "quarantine.client.test", "--to", "q@remote.test"
        )
        self.assertEqual(status, 0, out)
        self.assertTrue(
            (
                yield until(
                    lambda: any("quarantine=" in r for r in self.mta.records("qmgr")),
                    10,
                )
            ),
            self.mta.log(),
        )
        self.assertIn("held by the test milter", self.mta.log())
        stdout, stderr, code = yield self.mta.smx("mailq", "--json")
        self.assertEqual(code, 0, stderr)
        self.assertIn(b"held", stdout)
        self.assertEqual(self.sink.messages(), [])
        [record] = [r for r in self.mta.records("qmgr") if "quarantine=" in r]
        taId = record.split("ss_ta=")[1].split(",")[0]
        stdout, stderr, code = yield self.mta.smx("qmgrctl", "release", taId)
        self.assertEqual(code, 0, stderr)
        self.assertTrue((yield until(lambda: self.sink.messages(), 10)))

    @defer.inlineCallbacks
    def test_hangs(self) -> Iterator[Any]:
        """
        A milter that does not answer the end of the message within
        content_timeout: the final dot gets 451 4.7.1 (default_action
        tempfail), never acceptance; it is logged with the milter's name
        and sev=WARN; the session goes on (QUIT is answered).
        """
        yield self.startPeer("content_timeout = 1s;")
        out, status = yield self.send(
            "--helo", "hang.client.test", "--to", "h@remote.test", "--body", "HUNG"
        )
        self.assertIn("451 4.7.1", out)
        self.assertIn("221", out)
        self.assertNotIn("accepted for delivery", out)
        log = self.mta.logWith("no reply to eom within 1s")
        self.assertIn("sev=WARN", log)
        self.assertIn("milter=filter", log)
        self.assertIn("no reply to eom within 1s", log)
        self.assertEqual(self.sink.containing(b"HUNG"), [])

    @defer.inlineCallbacks
    def test_dies(self) -> Iterator[Any]:
        """
        A milter that closes the connection in the middle of a message
        (its process exits at the end of the message): 451 4.7.1 to the
        final dot, logged; nothing is queued.
        """
        yield self.startPeer()
        out, status = yield self.send(
            "--helo", "die.client.test", "--to", "x@remote.test", "--body", "DIED"
        )
        self.assertIn("451 4.7.1", out)
        self.assertNotIn("accepted for delivery", out)
        self.assertIn(
            "connection closed by the milter",
            self.mta.logWith("connection closed by the milter"),
        )
        self.assertEqual(self.sink.containing(b"DIED"), [])


class _Garbage(protocol.Protocol):
    """A milter that answers with a packet of 2 GB."""

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(b"\x7f\xff\xff\xffA")


class DownMilterTests(MilterMTATestCase):
    """
    A milter that is not running: its default_action.
    """

    @defer.inlineCallbacks
    def down(self, action: str) -> Iterator[Any]:
        self.sink = self.startSMX(
            'milter gone { socket = "unix:%s"; default_action = %s; }\n'
            % (os.path.join(self.root, "nothing.sock"), action),
            smtps="milters = { gone };",
        )
        result = yield self.send("--to", "d@remote.test", "--body", "DOWN END")
        return result

    @defer.inlineCallbacks
    def test_tempfail(self) -> Iterator[Any]:
        """
        The default, tempfail: MAIL gets 451 4.7.1, logged with the
        milter's name; the session goes on to QUIT.
        """
        out, status = yield self.down("tempfail")
        self.assertIn("451 4.7.1", out)
        self.assertIn("221", out)
        log = self.mta.logWith("cannot connect")
        self.assertIn("milter=gone", log)
        self.assertIn("sev=WARN", log)
        self.assertIn("cannot connect", log)

    @defer.inlineCallbacks
    def test_oversized(self) -> Iterator[Any]:
        """
        A milter that answers with a packet longer than the protocol
        allows: its default action (451), logged; smx does not allocate
        the packet and goes on.
        """
        path = os.path.join(self.root, "garbage.sock")
        port = reactor.listenUNIX(path, protocol.Factory.forProtocol(_Garbage))
        self.addCleanup(port.stopListening)
        self.sink = self.startSMX(
            'milter garbage { socket = "unix:%s"; }\n' % (path,),
            smtps="milters = { garbage };",
        )
        out, status = yield self.send("--to", "d@remote.test")
        self.assertIn("451 4.7.1", out)
        self.assertIn("221", out)
        log = self.mta.logWith("milter=garbage")
        self.assertIn("milter=garbage", log)
        self.assertIn("sev=WARN", log)

    @defer.inlineCallbacks
    def test_reject(self) -> Iterator[Any]:
        """default_action = reject: 550 5.5.0."""
        out, status = yield self.down("reject")
        self.assertIn("550 5.5.0", out)

    @defer.inlineCallbacks
    def test_accept(self) -> Iterator[Any]:
        """default_action = accept: the mail goes through without it."""
        out, status = yield self.down("accept")
        self.assertEqual(status, 0, out)
        self.assertTrue((yield until(lambda: self.sink.containing(b"DOWN END"), 15)))


class OpenDKIMTests(MilterMTATestCase):
    """
    opendkim, named in the smtps section's milters, signs the mail smx
    relays.
    """

    if not HAVE_OPENDKIM:
        skip = "opendkim and opendkim-tools are not installed"
    elif dkim is None:
        skip = "dkimpy is not installed"

    @defer.inlineCallbacks
    def startOpenDKIM(self) -> Iterator[Any]:
        """
        opendkim signing for example.test with a new key (selector smx)
        on C{dkim.sock}; returns the TXT record of its public key.
        """
        subprocess.run(
            [OPENDKIM_GENKEY, "-D", self.root]
            + ["-d", "example.test", "-s", "smx", "-b", "1024"],
            check=True,
        )
        record = _publicKey(os.path.join(self.root, "smx.txt"))
        self.dkimSocket = os.path.join(self.root, "dkim.sock")
        config = os.path.join(self.root, "opendkim.conf")
        with open(config, "w") as f:
            f.write(
                "Syslog no\nSocket local:%s\nMode sv\nDomain example.test\n"
                "Selector smx\nKeyFile %s\nBackground no\n"
                "Canonicalization relaxed/simple\nRequireSafeKeys false\n"
                % (self.dkimSocket, os.path.join(self.root, "smx.private"))
            )
        process = self.startMilterProcess([OPENDKIM, "-f", "-x", config], "dkim")
        yield process.start()
        return record.decode()

    @defer.inlineCallbacks
    def relay(self, sink: SmtpSink, *options: str) -> Iterator[Any]:
        """
        Send a message from alice@example.test through smx; return it as
        the next hop got it (from smx's Received:) and a dkimpy
        C{dnsfunc} that asks the test DNS server.
        """
        out, status = yield self.send(
            "--from",
            "alice@example.test",
            "--to",
            "bob@remote.test",
            "--header",
            "From: Alice <alice@example.test>",
            "--header",
            "Subject: signed by opendkim",
            "--body",
            "a body to sign\nSIGNED END",
            *options,
        )
        self.assertEqual(status, 0, out)
        self.assertTrue((yield until(lambda: sink.containing(b"SIGNED END"), 15)))
        [message] = [crlf(m) for m in sink.containing(b"SIGNED END")]
        message = message[message.index(b"Received: from") :]
        resolver = dnsclient.Resolver(servers=[("127.0.0.1", self.dnsPort)])
        answers, _, _ = yield resolver.lookupText("smx._domainkey.example.test")
        [key] = [b"".join(a.payload.data) for a in answers if a.type == dns.TXT]

        def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
            self.assertEqual(name.rstrip(b"."), b"smx._domainkey.example.test")
            return key

        return message, dnsfunc

    @defer.inlineCallbacks
    def test_signed(self) -> Iterator[Any]:
        """
        The message that reaches the next hop carries opendkim's
        C{DKIM-Signature}, which dkimpy verifies with the public key the
        test DNS server serves at C{smx._domainkey.example.test}; a
        changed copy fails.
        """
        record = yield self.startOpenDKIM()
        sink = self.startSMX(
            'milter dkim { socket = "local:%s"; }\n' % (self.dkimSocket,),
            smtps="milters = { dkim };",
            records={"smx._domainkey.example.test": [("TXT", record)]},
        )
        message, dnsfunc = yield self.relay(sink)
        self.assertIn(b"\r\nDKIM-Signature: v=1;", message)
        self.assertTrue(dkim.verify(message, dnsfunc=dnsfunc), message[:1500])
        self.assertFalse(
            dkim.verify(
                message.replace(b"a body to sign", b"a body to sing"), dnsfunc=dnsfunc
            )
        )
        self.assertNotIn("sev=WARN", self.mta.log())

    @defer.inlineCallbacks
    def test_afterAnotherMilter(self) -> Iterator[Any]:
        """
        C{milters = { filter, dkim }}: opendkim, second, signs the message
        as the first milter changed it (its new Subject is signed and the
        signature verifies).
        """
        if not HAVE_PYMILTER:
            raise unittest.SkipTest("python3-milter is not installed")
        record = yield self.startOpenDKIM()
        peer = self.peerProcess()
        yield peer.start()
        sink = self.startSMX(
            'milter dkim { socket = "local:%s"; }\n' % (self.dkimSocket,)
            + 'milter filter { socket = "unix:%s"; }\n' % (peer.socketPath,),
            smtps="milters = { filter, dkim };",
            records={"smx._domainkey.example.test": [("TXT", record)]},
        )
        message, dnsfunc = yield self.relay(sink, "--helo", "subject.client.test")
        self.assertIn(b"\r\nSubject: changed by the first milter\r\n", message)
        self.assertIn(b"\r\nX-First: yes", message)
        self.assertNotIn(b"signed by opendkim", message)
        self.assertTrue(dkim.verify(message, dnsfunc=dnsfunc), message[:1500])
        signature = message[message.index(b"DKIM-Signature:") :].split(b"\r\n\r\n")[0]
        self.assertIn(b"Subject", signature)
        self.assertFalse(
            dkim.verify(
                message.replace(b"changed by the first", b"changed by a third"),
                dnsfunc=dnsfunc,
            )
        )


class InternalMilterTests(MilterMTATestCase):
    """
    qmgr's C{milters}: the bounces QMGR creates go through them.
    """

    if not HAVE_PYMILTER:
        skip = "python3-milter for %s is not installed" % (SYSTEM_PYTHON,)

    @defer.inlineCallbacks
    def test_bounceFiltered(self) -> Iterator[Any]:
        """
        The next hop rejects the recipient: the bounce QMGR sends to the
        local sender went through the milter (its header is in the
        mailbox) and the original message did not (smtps has no
        milters).
        """
        peer = self.peerProcess()
        yield peer.start()
        sink = SmtpSink(self, self.root)
        sink.start("-f", "RCPT", "-B", "550 5.1.1 User unknown")
        self.mta.write(
            configuration(
                self.mta.port,
                qmgr="milters = { filter };",
                smtpc="remote_port = %d;" % (sink.port,),
            )
            + 'milter filter { socket = "unix:%s"; }\n' % (peer.socketPath,),
            mt="localhost lmtp:\nremote.test [%s]\n" % (sink.address,),
            aliases="alice: local:\npostmaster: alice\n",
            access="cltaddr:127.0.0.1 relay\n",
        )
        self.mta.start()
        out, status = yield self.send(
            "--from", "alice@localhost", "--to", "nobody@remote.test"
        )
        self.assertEqual(status, 0, out)
        self.assertTrue((yield until(lambda: self.mta.maildir("alice"), 15)))
        [bounce] = self.mta.maildir("alice")
        self.assertIn(b"X-Internal-Milter: saw ", bounce)
        self.assertIn(b"multipart/report", bounce)
        with open(self.peerLog) as f:
            helos = [json.loads(line) for line in f if line.startswith('["helo"')]
        self.assertEqual([h[:2] for h in helos], [["helo", "smx.test"]])

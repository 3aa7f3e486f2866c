# -*- test-case-name: smx.test.test_integration_e2e -*-
"""
Integration tests, end to end: smx run as a user runs it (C{twistd -n
smx --config smx.conf} as a child process, maps made with C{smx
createmap}), talking to real peers over loopback: swaks and smtplib as
clients, Postfix's smtp-sink as the remote MTA, Dovecot's LMTP server as
the local delivery agent, a Twisted Names server (in this process) for
MX records.  These are the acceptance scenarios of issues 4 and 6.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import re
import signal
import smtplib
import subprocess
import threading
from typing import Any, Dict, List

from twisted.internet import defer, threads
from twisted.trial.unittest import SkipTest, TestCase

from smx.maps.test.dnsserver import startDNSServer
from smx.test.mta import (
    MTATestCase,
    MTA,
    SMTP_SINK,
    SMX,
    SWAKS,
    Dovecot,
    SmtpSink,
    configuration,
    freePort,
    missing,
    swaks,
    tempDirectory,
    until,
    waitFor,
)


class _Base(MTATestCase):

    def assertDelivered(self, ok: bool, what: str) -> None:
        if not ok:
            self.fail("%s; smx's log:\n%s" % (what, self.mta.log()))

    @defer.inlineCallbacks
    def accepted(self, sender: str, recipient: str, *options: str) -> Any:
        """
        Send from C{sender} to C{recipient} with swaks (and its
        C{options}) to the running smx, which must accept the message.
        """
        out, err, status = yield swaks(
            self.mta.port, "--from", sender, "--to", recipient, *options
        )
        self.assertEqual(status, 0, out + err)

    @defer.inlineCallbacks
    def refused(self, sender: str, recipient: str, **files: str) -> Any:
        """
        Start smx with C{files} (as L{MTA.write} takes them) and send from
        C{sender} to C{recipient} with swaks, which must fail.

        @return: a L{Deferred} firing with swaks' output.
        """
        self.need(SWAKS)
        files.setdefault("aliases", "alice: local:\n")
        files.setdefault("access", "")
        self.mta.write(configuration(self.mta.port), **files)
        self.mta.start()
        out, err, status = yield swaks(
            self.mta.port, "--from", sender, "--to", recipient
        )
        self.assertNotEqual(status, 0)
        return out.decode()


class RelayTests(_Base):
    """
    Relaying to a next hop found by MX, with the access map allowing the
    client to relay.
    """

    @defer.inlineCallbacks
    def test_relayByMX(self) -> Any:
        """
        A message to remote.test, whose MX mx.remote.test is 127.0.0.2,
        reaches smtp-sink there with smx's Received: header; the SMTPS and
        SMTPC records of App. C.2 are in the log.
        """
        sink = self.startRelayByMX()
        yield self.accepted(
            "alice@client.test",
            "bob@remote.test",
            "--header",
            "Subject: relay by MX",
            "--body",
            "relay test END",
        )
        self.assertDelivered(
            (yield until(lambda: sink.containing(b"relay test END"))),
            "nothing reached the sink",
        )
        [message] = sink.messages()
        self.assertIn(b"Subject: relay by MX", message)
        parsed = email.message_from_bytes(message, policy=email.policy.default)
        received = [" ".join(str(r).split()) for r in parsed.get_all("Received")]
        # smtp-sink's own Received: is first, smx's next
        self.assertRegex(
            received[1], r"^from \S+ \(.*\[127\.0\.0\.1\]\) by smx\.test \(smx"
        )
        self.assertRegex(received[1], r" id S[0-9A-F]+; ")
        # App. C.2 records
        yield until(lambda: "where=final_dot" in self.mta.log())
        smtps = self.mta.records("smtps")
        smtpc = self.mta.records("smtpc")
        # the access map lets 127.0.0.1 relay: the session record says so
        self.assertRecord(
            smtps, r"^ss_sess=S[0-9A-F]+, client_ipv4=127\.0\.0\.1, relay=1$"
        )
        self.assertRecord(
            smtps, r"^ss_sess=S\w+, ss_ta=S\w+, mail=<alice@client\.test>, stat=0$"
        )
        self.assertRecord(smtps, r"ss_ta=S\w+, rcpt=<bob@remote\.test>, idx=0, stat=0$")
        self.assertRecord(smtps, r"ss_ta=S\w+, msgid=<[^>]+>, size=\d+, stat=0$")
        self.assertRecord(
            smtpc,
            r"^da_sess=C\w+, status=connected, port=%d, addr=127\.0\.0\.2$"
            % (sink.port,),
        )
        self.assertRecord(
            smtpc,
            r"^da_sess=C\w+, da_ta=C\w+, ss_ta=S\w+, where=final_dot, size=\d+, stat=0$",
        )

    @defer.inlineCallbacks
    def test_recycledContents(self) -> Any:
        """
        Forty messages one after the other, each delivered and removed
        before the next is sent: the later ones are written over the files
        of removed earlier ones in the same CDB directory (C{.free.ID}),
        shorter than them, and each reaches the sink exactly as sent,
        nothing of an earlier message in it.  The kept files go once no
        mail comes.
        """
        sink = self.startRelayByMX()

        def cdb() -> List[str]:
            return [
                name
                for directory in os.listdir(self.mta.path("cdb"))
                for name in os.listdir(self.mta.path("cdb", directory))
            ]

        bodies = []
        # files kept for reuse, counted after each delivery
        kept = []
        for i in range(40):
            marker = "END%02d" % (i,)
            # long ones first, then short ones in the same directories
            filler = "\r\n".join(["old message %02d" % (i,)] * (150 if i < 16 else 2))
            body = "%s\r\n%s" % (filler, marker)
            bodies.append((marker, body))
            yield self.sent(body, marker)
            self.assertDelivered(
                (yield until(lambda: sink.containing(marker.encode()), timeout=10)),
                "message %d did not reach the sink" % (i,),
            )
            # and removed: QMGR removes contents in batches
            # (smx.queue.cdb.REMOVAL_DELAY), and the next message written
            # meanwhile in the same directory would find no file to reuse
            self.assertTrue(
                (
                    yield until(
                        lambda: all(n.startswith(".free.") for n in cdb()), timeout=10
                    )
                ),
                "message %d was not removed: %r" % (i, cdb()),
            )
            kept.append(sum(1 for name in cdb() if name.startswith(".free.")))
        for marker, body in bodies:
            [message] = sink.containing(marker.encode())
            # (smtp-sink stores lines ending in LF)
            expected = body.replace("\r\n", "\n").encode()
            self.assertTrue(message.rstrip(b"\n").endswith(expected), (marker, message))
            self.assertEqual(message.count(b"old message"), body.count("old message"))
        # removed contents were kept, and taken by the next message in
        # their directory: never more kept than directories used (the
        # directory of a transaction is the 17th character of its id)
        ids = [
            re.search(rb"\sid (S[0-9A-F]+);", m).group(1)  # type: ignore[union-attr]
            for m in sink.messages()
        ]
        self.assertEqual(len(ids), 40)
        self.assertGreater(max(kept), 0)
        self.assertLessEqual(max(kept), len({i[16] for i in ids}), kept)
        # and removed once none was kept for a while: the queue at rest
        # holds nothing
        self.assertTrue((yield until(lambda: cdb() == [], timeout=15)), cdb())

    def sent(self, body: str, marker: str) -> "defer.Deferred[Any]":
        """Send C{body} from alice@client.test to bob@remote.test."""

        def send() -> None:
            with smtplib.SMTP("127.0.0.1", self.mta.port, timeout=30) as client:
                client.sendmail(
                    "alice@client.test",
                    ["bob@remote.test"],
                    "Subject: %s\r\n\r\n%s\r\n" % (marker, body),
                )

        return threads.deferToThread(send)

    def assertRecord(self, records: List[str], pattern: str) -> None:
        import re

        if not any(re.search(pattern, r) for r in records):
            self.fail("no record matches %r in:\n%s" % (pattern, "\n".join(records)))


class LocalDeliveryTests(_Base):
    """
    Local delivery through Dovecot's LMTP server, with alias expansion.
    """

    @defer.inlineCallbacks
    def test_dovecotWithAliases(self) -> Any:
        """
        Mail for the alias sales@localhost is expanded by the aliases map
        (made with C{smx createmap -a}) to alice and bob, and delivered by
        Dovecot into their Maildirs; mail for postmaster reaches alice
        through a chain of aliases.
        """
        self.need(SWAKS)
        if not Dovecot.available():
            raise SkipTest("dovecot (Debian package dovecot-lmtpd) is not installed")
        dovecot = Dovecot(self, os.path.join(self.root, "dovecot"))
        dovecot.start()
        self.mta.write(
            configuration(
                self.mta.port,
                smtpc='LMTP_socket = "%s";' % (dovecot.socket,),
                lmtpd=False,
            ).replace('    LMTP_socket = "lmtpsock";\n', ""),
            mt="localhost lmtp:\nlocal.test lmtp:\n",
            aliases=(
                "postmaster: root\n"
                "root: alice\n"
                "sales: alice, bob\n"
                "alice: local:\n"
                "bob: local:\n"
            ),
            access="",
        )
        self.mta.start()
        for to, subject in [
            ("sales@local.test", "to sales"),
            ("postmaster@localhost", "to pm"),
        ]:
            yield self.accepted(
                "carol@client.test", to, "--header", "Subject: " + subject
            )
        self.assertDelivered(
            (
                yield until(
                    lambda: len(dovecot.maildir("alice")) == 2
                    and dovecot.maildir("bob")
                )
            ),
            "the messages did not reach the Maildirs",
        )
        alice = sorted(dovecot.maildir("alice"))
        [bob] = dovecot.maildir("bob")
        self.assertIn(b"Subject: to sales", bob)
        self.assertEqual(
            sorted(b"Subject: to sales" in m for m in alice), [False, True]
        )
        self.assertEqual(sorted(b"Subject: to pm" in m for m in alice), [False, True])

    @defer.inlineCallbacks
    def test_unknownLocalUser(self) -> Any:
        """
        A recipient in a local domain that the aliases map does not know is
        rejected at RCPT with 550.
        """
        out = yield self.refused("carol@client.test", "nobody@localhost")
        self.assertRegex(out, r"<\*\* +550 ")


class AccessTests(_Base):
    """
    Rejections by the access map.
    """

    @defer.inlineCallbacks
    def test_rejectSender(self) -> Any:
        """
        A sender domain listed with C{error:550 5.7.1 ...} is rejected at
        MAIL with that reply, as swaks sees it, and nothing is queued.
        """
        out = yield self.refused(
            "bad@spammer.test",
            "alice@localhost",
            access="from:@spammer.test error:550 5.7.1 no spam, thanks\n",
        )
        self.assertIn("<** 550 5.7.1 no spam, thanks", out)
        out, err, status = yield self.mta.smx("mailq", "--json")
        self.assertEqual(status, 0, err)
        self.assertEqual(json.loads(out), [])
        self.assertEqual(self.mta.maildir("alice"), [])
        self.assertRegex(self.mta.log(), r"mail=<bad@spammer\.test>, stat=550\b")

    @defer.inlineCallbacks
    def test_reloadedAccessMapCountsAtOnce(self) -> Any:
        """
        A sender accepted a moment ago (SMAR keeps that decision for
        C{cache_ttl}) is rejected right after the access map is rebuilt
        with C{smx createmap} and smx is sent SIGUSR1: the reload empties
        SMAR's cache as well as reopening the map.
        """
        self.need(SWAKS)
        self.mta.write(
            configuration(self.mta.port), aliases="alice: local:\n", access=""
        )
        self.mta.start()
        yield self.accepted("bad@spammer.test", "alice@localhost")
        self.mta.createmap(
            "access", "from:@spammer.test error:550 5.7.1 no spam, thanks\n"
        )
        reloads = self.mta.log().count("reload=maps")
        self.mta.process.send_signal(signal.SIGUSR1)
        self.assertTrue(
            waitFor(lambda: self.mta.log().count("reload=maps") > reloads),
            self.mta.log(),
        )
        out, err, status = yield swaks(
            self.mta.port, "--from", "bad@spammer.test", "--to", "alice@localhost"
        )
        self.assertNotEqual(status, 0, out)
        self.assertIn(b"<** 550 5.7.1 no spam, thanks", out)

    @defer.inlineCallbacks
    def test_noRelaying(self) -> Any:
        """
        Without a C{relay} entry for the client, mail to a remote domain is
        rejected at RCPT (relaying denied).
        """
        out = yield self.refused(
            "a@client.test",
            "bob@remote.test",
            mt="localhost lmtp:\nremote.test [127.0.0.2]\n",
        )
        self.assertRegex(out, r"<\*\* +5\d\d 5\.7\.1 ")


class FailureTests(_Base):
    """
    Permanent and temporary delivery failures: bounces, deferral, retry.
    """

    def remoteConfiguration(self, sink: SmtpSink, retry: str = "1s") -> None:
        self.mta.write(
            configuration(
                self.mta.port,
                smtpc="remote_port = %d;" % (sink.port,),
                retry=retry,
            ),
            mt="localhost lmtp:\nremote.test [%s]\n" % (sink.address,),
            aliases="alice: local:\npostmaster: alice\n",
            access="cltaddr:127.0.0.1 relay\n",
        )

    @defer.inlineCallbacks
    def test_bounceUnknownRemoteUser(self) -> Any:
        """
        The next hop rejects the recipient with 550 5.1.1: the sender gets
        an RFC 3464 delivery status notification (multipart/report) in
        her local mailbox naming the recipient, the status and the
        remote MTA.
        """
        self.need(SMTP_SINK, SWAKS)
        sink = SmtpSink(self, self.root)
        sink.start("-f", "RCPT", "-B", "550 5.1.1 User unknown")
        self.remoteConfiguration(sink)
        self.mta.start()
        yield self.accepted(
            "alice@localhost", "nobody@remote.test", "--header", "Subject: will bounce"
        )
        self.assertDelivered(
            (yield until(lambda: self.mta.maildir("alice"))), "no bounce arrived"
        )
        [raw] = self.mta.maildir("alice")
        dsn = email.message_from_bytes(raw, policy=email.policy.default)
        self.assertEqual(dsn.get_content_type(), "multipart/report")
        self.assertEqual(dsn.get_param("report-type"), "delivery-status")
        parts = dsn.get_payload()
        self.assertEqual(
            [p.get_content_type() for p in parts][:2],
            ["text/plain", "message/delivery-status"],
        )
        self.assertIn(
            parts[2].get_content_type(), ("message/rfc822", "text/rfc822-headers")
        )
        blocks = parts[1].get_payload()
        perMessage, perRecipient = blocks[0], blocks[1]
        self.assertIn("Reporting-MTA", perMessage)
        self.assertEqual(perRecipient["Action"], "failed")
        self.assertRegex(str(perRecipient["Status"]), r"^5\.\d{1,3}\.\d{1,3}$")
        self.assertEqual(
            " ".join(str(perRecipient["Final-Recipient"]).split()).lower(),
            "rfc822; nobody@remote.test",
        )
        self.assertRegex(str(perRecipient["Remote-MTA"]).lower(), r"^dns; ")
        self.assertIn("550 5.1.1 User unknown", str(perRecipient["Diagnostic-Code"]))
        self.assertIn("Subject: will bounce", str(parts[2]))
        self.assertEqual(str(dsn["To"]).strip("<>"), "alice@localhost")
        self.assertIn(b"Return-Path: <>", raw)

    @defer.inlineCallbacks
    def test_deferAndFlush(self) -> Any:
        """
        With the next hop down the message stays in the queue (C{smx
        mailq --json} lists it); once the next hop is up, C{smx qmgrctl
        flush} has it delivered.
        """
        self.need(SMTP_SINK, SWAKS)
        sink = SmtpSink(self, self.root)
        self.remoteConfiguration(sink, retry="1h")
        self.mta.start()
        yield self.accepted(
            "alice@localhost", "bob@remote.test", "--body", "deferred END"
        )
        self.assertDelivered(
            (yield until(lambda: "stat=temp" in self.mta.log())), "no deferral logged"
        )
        out, err, status = yield self.mta.smx("mailq", "--json")
        self.assertEqual(status, 0, err)
        [queued] = json.loads(out)
        self.assertEqual(queued["sender"], "alice@localhost")
        [rcpt] = queued["recipients"]
        self.assertEqual(
            (rcpt["address"], rcpt["state"], rcpt["tries"]),
            ("bob@remote.test", "deferred", 1),
        )
        self.assertRegex(rcpt["reply"], r"^451 4\.4\.1 ")
        sink.start()
        out, err, status = yield self.mta.smx("qmgrctl", "flush")
        self.assertEqual(status, 0, err)
        self.assertDelivered(
            (yield until(lambda: sink.containing(b"deferred END"))),
            "not delivered after the flush",
        )
        self.assertEqual(self.mta.maildir("alice"), [])
        yield until(lambda: "stat=done" in self.mta.log())
        out, err, status = yield self.mta.smx("mailq", "--json")
        self.assertEqual((json.loads(out), status), ([], 0))


class CrashTests(_Base):
    """
    C{kill -9} of smx while messages stream in (issue 4): no message that
    got a 250 is lost.
    """

    MESSAGES = 200
    CLIENTS = 10

    def send(self, acked: Dict[int, str], failed: List[int], lock: Any) -> None:
        # one connection per client, several transactions on it (seed
        # default: at most 100 new connections a minute from one host)
        conn = None  # type: Any
        while True:
            with lock:
                seq = self.next
                self.next += 1
            if seq >= self.MESSAGES:
                break
            body = (
                "From: alice@client.test\r\nTo: bob@remote.test\r\n"
                "Subject: crash %d\r\nMessage-Id: <crash-%d@client.test>\r\n\r\n"
                "message seq-%d-END\r\n" % (seq, seq, seq)
            )
            try:
                if conn is None:
                    conn = smtplib.SMTP("127.0.0.1", self.mta.port, timeout=10)
                    conn.ehlo("client.test")
                conn.mail("alice@client.test")
                code, _ = conn.rcpt("bob@remote.test")
                if code != 250:
                    raise smtplib.SMTPException(code)
                code, reply = conn.data(body.encode())
                with lock:
                    if code == 250:
                        acked[seq] = reply.decode().split()[1]
                    else:
                        failed.append(seq)
            except (OSError, smtplib.SMTPException):
                with lock:
                    failed.append(seq)
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            try:
                conn.quit()
            except (OSError, smtplib.SMTPException):
                conn.close()

    def test_killDuringStream(self) -> None:
        """
        With the next hop down, messages stream in over concurrent
        connections; smx is killed with SIGKILL after about half of them
        got 250.  The files list every acknowledged transaction (C{smx
        mailq --offline --json}); after a restart with the next hop up,
        each acknowledged message arrives (at worst more than once).
        """
        self.need(SMTP_SINK)
        sink = SmtpSink(self, self.root)
        self.mta.write(
            configuration(self.mta.port, smtpc="remote_port = %d;" % (sink.port,)),
            mt="localhost lmtp:\nremote.test [%s]\n" % (sink.address,),
            aliases="alice: local:\n",
            access="cltaddr:127.0.0.1 relay\n",
        )
        self.mta.start()
        acked = {}  # type: Dict[int, str]
        failed = []  # type: List[int]
        lock = threading.Lock()
        self.next = 0
        clients = [
            threading.Thread(target=self.send, args=(acked, failed, lock))
            for i in range(self.CLIENTS)
        ]
        for t in clients:
            t.start()
        self.assertTrue(
            waitFor(lambda: len(acked) >= self.MESSAGES // 2, 30),
            "only %d messages accepted" % (len(acked),),
        )
        self.mta.kill()
        for t in clients:
            t.join(30)
        self.assertLess(len(acked), self.MESSAGES, "smx was killed too late")
        accepted = dict(acked)
        # the queue files hold every acknowledged transaction
        p = subprocess.run(
            [SMX, "mailq", "--offline", "--json"]
            + ["-f", self.mta.config, "-q", self.mta.directory],
            capture_output=True,
            timeout=60,
        )
        self.assertEqual(p.returncode, 0, p.stderr)
        queued = {e["id"] for e in json.loads(p.stdout)}
        self.assertEqual(set(accepted.values()) - queued, set())
        # restart with the next hop up
        sink.start()
        self.mta.start()
        wanted = {b"seq-%d-END" % (seq,) for seq in accepted}

        def arrived() -> bool:
            text = b"\n".join(sink.messages())
            return all(w in text for w in wanted)

        if not waitFor(arrived, 30):
            text = b"\n".join(sink.messages())
            lost = sorted(s for s in accepted if b"seq-%d-END" % (s,) not in text)
            self.fail(
                "%d of %d acknowledged messages lost: %r; smx's log:\n%s"
                % (len(lost), len(accepted), lost, self.mta.log()[-5000:])
            )

        # and then the queue is empty (QMGR asked over its control socket)
        def empty() -> bool:
            p = subprocess.run(
                [SMX, "mailq", "--json"]
                + ["-f", self.mta.config, "-q", self.mta.directory],
                capture_output=True,
                timeout=60,
            )
            return p.returncode == 0 and json.loads(p.stdout) == []

        self.assertTrue(waitFor(empty, 10), "the queue did not become empty")

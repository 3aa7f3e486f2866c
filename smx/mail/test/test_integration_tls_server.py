# -*- test-case-name: smx.mail.test.test_integration_tls_server -*-
"""
Integration tests of SMTPS's TLS as users meet it (doc/tls.md, "Server"):
a real C{twistd -n smx} on loopback with certificates made at test time
(C{trustme}), checked by OpenSSL's C{openssl s_client -starttls smtp},
Postfix's C{posttls-finger}, swaks and Python's C{smtplib}:

    - the certificate chosen by the client's server name (SNI), the
      default one for other names, TLS 1.2 and newer only;
    - renewed files picked up after SIGUSR1 and C{smx qmgrctl reload}
      while a TLS session that began before goes on and delivers its
      message; a broken renewal changes nothing and is logged;
    - C{smx config} and C{twistd smx} refusing missing, mismatched and
      world-readable files of the SNI certificates;
    - REQUIRETLS (RFC 8689): offered after STARTTLS only, refused before,
      kept in the queue across C{kill -9} and a restart, relayed by MX to
      a second smx over verified TLS with REQUIRETLS on MAIL, returned
      to its sender when the next hop (Postfix's C{smtp-sink}) has no
      STARTTLS.
"""

from __future__ import annotations

import json
import os
import signal
import smtplib
import ssl
import subprocess
from typing import Any, List, Optional, Tuple

import trustme
from twisted.internet import defer, threads

from smx.test.certs import issueCertificate
from smx.test.mta import (
    SMX,
    SWAKS,
    TWISTD,
    MTA,
    MTATestCase,
    configuration,
    freePort,
    swaks,
    until,
)

OPENSSL = "/usr/bin/openssl"
POSTTLS_FINGER = "/usr/sbin/posttls-finger"

#: smtps's tls section: a default certificate and one chosen by SNI
TLS = """tls {
        cert_file = "certs/mx.pem"; key_file = "certs/mx.key";
        certificate second {
            cert_file = "certs/mx2.pem"; key_file = "certs/mx2.key";
            server_names = { mx2.test, *.wild.test };
        }
    }"""


def run(argv: List[str], env: Optional[dict] = None) -> "defer.Deferred[Any]":
    """
    Run a program without blocking, C{QUIT} on its standard input (which
    ends C{openssl s_client}): C{(stdout, stderr, status)}.
    """

    def _run() -> Tuple[bytes, bytes, int]:
        p = subprocess.run(
            argv,
            input=b"QUIT\r\n",
            capture_output=True,
            timeout=30,
            env=dict(os.environ, **(env or {})),
        )
        return p.stdout, p.stderr, p.returncode

    return threads.deferToThread(_run)


def subjectCN(out: bytes) -> Optional[str]:
    """The CN of the C{subject=} line of C{openssl s_client}'s output."""
    for line in out.decode("utf-8", "replace").splitlines():
        if line.startswith("subject=") and "CN = " in line:
            return line.split("CN = ", 1)[1].split(",")[0].strip()
    return None


class _Base(MTATestCase):
    def setUp(self) -> None:
        MTATestCase.setUp(self)
        self.need(OPENSSL)
        self.ca = trustme.CA()
        self.certs = self.mta.path("certs")
        self.caFile = os.path.join(self.root, "ca.pem")
        self.ca.cert_pem.write_to_path(self.caFile)
        issueCertificate(self.ca, self.certs, "mx", "mx.test")
        issueCertificate(self.ca, self.certs, "mx2", "mx2.test")

    def startMTA(self, smtps: str = TLS, **kw: Any) -> None:
        self.mta.write(
            configuration(self.mta.port, smtps=smtps, **kw),
            mt="localhost lmtp:\nremote.test [127.0.0.2]\n",
            aliases="alice: local:\n",
            access="cltaddr:127.0.0.1 relay\n",
        )
        self.mta.start()

    def renew(self, name: str, target: str = "mx") -> None:
        """Put a new certificate with CN C{name} in place of C{target}'s."""
        cert, key = issueCertificate(self.ca, self.root, name, target + ".test")
        os.replace(key, os.path.join(self.certs, target + ".key"))
        os.replace(cert, os.path.join(self.certs, target + ".pem"))

    def sClient(self, *options: str) -> "defer.Deferred[Any]":
        """C{openssl s_client -starttls smtp} to smx, with C{options}."""
        argv = [OPENSSL, "s_client", "-starttls", "smtp", "-connect"]
        argv += ["127.0.0.1:%d" % (self.mta.port,), "-CAfile", self.caFile]
        return run(argv + list(options))

    @defer.inlineCallbacks
    def presented(self, *options: str) -> Any:
        """The CN of the certificate smx presents to C{s_client}."""
        out, err, status = yield self.sClient(*options)
        return subjectCN(out)

    def clientContext(self) -> ssl.SSLContext:
        """A client's TLS context: the test CA, no name (smx is 127.0.0.1)."""
        context = ssl.create_default_context(cafile=self.caFile)
        context.check_hostname = False
        return context

    def check(self, ok: bool, what: str) -> None:
        if not ok:
            self.fail("%s; smx's log:\n%s" % (what, self.mta.log()))


class ServerNameTests(_Base):
    """The certificate chosen by SNI, checked by OpenSSL and Postfix."""

    @defer.inlineCallbacks
    def test_opensslServerName(self) -> Any:
        """
        C{openssl s_client -servername}: a name of a certificate section
        (or its wildcard) gets that certificate, an unknown name or none
        the default; TLS 1.1 is refused (alert protocol version), TLS 1.2
        accepted; the log records the name asked for.
        """
        self.startMTA()
        for options, expected in [
            (("-servername", "mx2.test"), "mx2"),
            (("-servername", "a.wild.test"), "mx2"),
            (("-servername", "unknown.test"), "mx"),
            (("-noservername",), "mx"),
        ]:
            cn = yield self.presented(*options)
            self.assertEqual(cn, expected, options)
        out, err, status = yield self.sClient(
            "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"
        )
        self.assertIn(b"alert protocol version", err)
        out, err, status = yield self.sClient("-tls1_2")
        self.assertIn(b"New, TLSv1.2, Cipher is", out)
        self.assertIn("starttls=successful, sni=a.wild.test,", self.mta.log())

    @defer.inlineCallbacks
    def test_posttlsFinger(self) -> Any:
        """
        Postfix's C{posttls-finger} at level C{secure} verifies the
        certificate chosen for its C{-s} server name against the test CA
        and the name, and the default certificate without SNI.
        """
        self.need(POSTTLS_FINGER)
        self.startMTA()
        config = os.path.join(self.root, "postfix")
        os.makedirs(config)
        open(os.path.join(config, "main.cf"), "w").close()
        for sni, match, cn in [
            ("mx2.test", "mx2.test", "mx2"),
            (None, "mx.test", "mx"),
        ]:
            argv = [POSTTLS_FINGER, "-c", "-l", "secure", "-F", self.caFile]
            argv += ["-L", "summary,certmatch"]
            if sni:
                argv += ["-s", sni]
            argv += ["[127.0.0.1]:%d" % (self.mta.port,), match]
            out, err, status = yield run(argv, {"MAIL_CONFIG": config})
            text = (out + err).decode()
            self.assertIn("matched peername: %s" % (match,), text)
            self.assertIn("subject_CN=%s," % (cn,), text)
            self.assertIn("Verified TLS connection established", text)

    @defer.inlineCallbacks
    def test_receivedWithServerName(self) -> Any:
        """
        A message received over TLS with SNI (swaks C{--tls-sni}) has the
        TLS version and cipher in its Received: header (App. C.3); the
        log names the server name asked for.
        """
        self.need(SWAKS)
        self.startMTA()
        out, err, status = yield swaks(
            self.mta.port,
            "--tls",
            "--tls-sni",
            "mx2.test",
            "--to",
            "alice@localhost",
            "--from",
            "a@x.test",
        )
        self.assertEqual(status, 0, out + err)
        self.check((yield until(lambda: self.mta.maildir("alice"))), "not delivered")
        [message] = self.mta.maildir("alice")
        self.assertRegex(
            message.decode(),
            r"with ESMTPS\r?\n\t\(TLS=TLSv1\.3, cipher=TLS_AES_\w+, bits=\d+, "
            r"verify=NOT\)\r?\n\tid ",
        )
        self.assertIn("starttls=successful, sni=mx2.test,", self.mta.log())


class ReloadTests(_Base):
    """Renewed certificates picked up by a running smx."""

    def openSession(self) -> Tuple[smtplib.SMTP, str]:
        """
        A TLS session up to RCPT (blocking), and the CN smx presented.
        """
        client = smtplib.SMTP("127.0.0.1", self.mta.port, timeout=10)
        client.starttls(context=self.clientContext())
        cert = client.sock.getpeercert()  # type: ignore[union-attr]
        cn = dict(x[0] for x in cert["subject"])["commonName"]
        client.ehlo("client.test")
        self.assertEqual(client.mail("a@x.test")[0], 250)
        self.assertEqual(client.rcpt("alice@localhost")[0], 250)
        return client, cn

    @defer.inlineCallbacks
    def test_sigusr1(self) -> Any:
        """
        After SIGUSR1 new sessions get the renewed certificate while a
        TLS session that began before goes on and delivers its message;
        a broken renewal (a key of another certificate) keeps the
        renewed one, logged with C{sev=ERR}; C{smx qmgrctl reload} reads
        them again too.
        """
        self.startMTA()
        client, cn = yield threads.deferToThread(self.openSession)
        self.assertEqual(cn, "mx")
        self.renew("renewed")
        os.kill(self.mta.process.pid, signal.SIGUSR1)  # type: ignore[union-attr]
        self.check(
            (yield until(lambda: "stat=certificates reloaded" in self.mta.log())),
            "no reload",
        )
        self.assertEqual((yield self.presented()), "renewed")
        code, _ = yield threads.deferToThread(
            client.data, b"Subject: begun before\r\n\r\nstill here\r\n"
        )
        self.assertEqual(code, 250)
        yield threads.deferToThread(client.quit)
        self.check((yield until(lambda: self.mta.maildir("alice"))), "not delivered")
        self.assertIn(b"still here", self.mta.maildir("alice")[0])

        other = issueCertificate(self.ca, self.root, "other", "other.test")
        os.replace(other[1], os.path.join(self.certs, "mx.key"))
        os.kill(self.mta.process.pid, signal.SIGUSR1)  # type: ignore[union-attr]
        self.check(
            (yield until(lambda: "sev=ERR, func=reloadCertificates" in self.mta.log())),
            "no error",
        )
        self.assertIn(
            "does not belong to the certificate",
            self.mta.logWith("does not belong to the certificate"),
        )
        self.assertEqual((yield self.presented()), "renewed")
        out, err, status = yield self.mta.smx("qmgrctl", "reload")
        self.assertEqual(status, 1)
        self.assertIn(b"certificate_errors=1", out)
        self.assertIn(b"could not be reloaded; the old ones stay in use", err)

        self.renew("third")
        out, err, status = yield self.mta.smx("qmgrctl", "reload")
        self.assertEqual(status, 0, err)
        self.assertEqual((yield self.presented()), "third")


class ConfigurationTests(_Base):
    """C{smx config} and C{twistd smx} check the SNI certificates' files."""

    def twistd(self) -> Tuple[int, str]:
        p = subprocess.run(
            [TWISTD, "-n", "--pidfile=", "smx", "--config", self.mta.config],
            capture_output=True,
            text=True,
            cwd=self.mta.directory,
            timeout=30,
        )
        return p.returncode, p.stdout + p.stderr

    def test_badFiles(self) -> None:
        """
        A missing certificate, a key of another certificate and a key
        everybody may read: C{smx config} names each at its file, line
        and column and exits 2; C{twistd smx} does not start, without a
        traceback.
        """
        key2 = os.path.join(self.certs, "mx2.key")
        for change, message, option in [
            (
                lambda: os.remove(os.path.join(self.certs, "mx2.pem")),
                "cert_file %s: No such file or directory"
                % os.path.join(self.certs, "mx2.pem"),
                "cert_file",
            ),
            (
                lambda: os.replace(os.path.join(self.certs, "mx.key"), key2),
                "key_file %s does not belong to the certificate" % (key2,),
                "key_file",
            ),
            (
                lambda: os.chmod(key2, 0o644),
                "key_file %s is readable by others (mode 0644)" % (key2,),
                "key_file",
            ),
        ]:
            issueCertificate(self.ca, self.certs, "mx", "mx.test")
            issueCertificate(self.ca, self.certs, "mx2", "mx2.test")
            change()
            text = configuration(self.mta.port, smtps=TLS)
            self.mta.write(text, aliases="alice: local:\n", access="")
            lines = text.splitlines()
            line = next(i for i, l in enumerate(lines, 1) if "mx2.pem" in l)
            column = lines[line - 1].index(option) + 1
            where = "%s:%d:%d: " % (self.mta.config, line, column)
            p = subprocess.run(
                [SMX, "config", "-f", self.mta.config],
                capture_output=True,
                text=True,
                timeout=30,
            )
            self.assertEqual(p.returncode, 2, p.stderr)
            self.assertIn(where + message, p.stderr)
            status, output = self.twistd()
            self.assertNotEqual(status, 0)
            self.assertIn(message, output)
            self.assertNotIn("Traceback", output)


class RequireTLSTests(_Base):
    """REQUIRETLS (RFC 8689) with swaks and smtplib."""

    @defer.inlineCallbacks
    def test_offeredAfterSTARTTLS(self) -> Any:
        """
        swaks sees REQUIRETLS in the EHLO reply after STARTTLS, not in
        the one before it.
        """
        self.need(SWAKS)
        self.startMTA()
        out, err, status = yield swaks(
            self.mta.port, "--tls", "--quit-after", "HELO", "--to", "alice@localhost"
        )
        text = out.decode()
        before, _, after = text.partition("STARTTLS\n")
        self.assertIn("<~  250-REQUIRETLS", after)
        self.assertNotIn("REQUIRETLS", before)

    @defer.inlineCallbacks
    def test_keptAcrossKill(self) -> Any:
        """
        C{MAIL ... REQUIRETLS} is refused in clear (530 5.7.10) and
        accepted after STARTTLS; the message, deferred for a next hop that
        is down, keeps the flag in the queue: C{smx mailq} shows it while
        smx runs, after C{kill -9} (C{--offline}) and after a restart.
        """
        self.startMTA(smtpc="remote_port = %d;" % (freePort("127.0.0.2"),), retry="1h")

        def send() -> Tuple[int, bytes]:
            with smtplib.SMTP("127.0.0.1", self.mta.port, timeout=10) as client:
                client.ehlo("client.test")
                self.assertFalse(client.has_extn("requiretls"))
                refused = client.mail("a@x.test", ["REQUIRETLS"])
                client.starttls(context=self.clientContext())
                client.ehlo("client.test")
                self.assertTrue(client.has_extn("requiretls"))
                client.sendmail(
                    "a@x.test",
                    ["bob@remote.test"],
                    b"Subject: secret\r\n\r\nonly over TLS\r\n",
                    ["REQUIRETLS"],
                )
                return refused

        code, text = yield threads.deferToThread(send)
        self.assertEqual((code, text), (530, b"5.7.10 REQUIRETLS needs a TLS session"))
        self.check((yield until(lambda: "stat=temp" in self.mta.log())), "no deferral")

        @defer.inlineCallbacks
        def requiretls(*options: str) -> Any:
            out, err, status = yield self.mta.smx("mailq", "--json", *options)
            self.assertEqual(status, 0, err)
            return [ta["requiretls"] for ta in json.loads(out)]

        self.assertEqual((yield requiretls()), [True])
        self.mta.kill()
        self.assertEqual((yield requiretls("--offline")), [True])
        out, err, status = yield self.mta.smx("mailq", "--offline")
        self.assertIn(b" REQUIRETLS\n", out)
        self.mta.start()
        self.assertEqual((yield requiretls()), [True])


class RequireTLSRelayTests(_Base):
    """
    REQUIRETLS end to end: a message submitted with C{MAIL ... REQUIRETLS}
    to one smx is relayed by MX to a second smx, over verified TLS and with
    REQUIRETLS on MAIL again; to a next hop without TLS it is returned to
    its sender, and the bounce (itself REQUIRETLS) is delivered locally.
    """

    def startReceiver(self) -> MTA:
        """
        The second smx: C{mx.remote.test} on 127.0.0.2 (and 127.0.0.1, to
        see that it started), delivering C{bob@remote.test} locally, with
        a certificate of the test CA for its name.
        """
        receiver = MTA(self, os.path.join(self.root, "receiver"))
        certs = os.path.join(receiver.directory, "certs")
        issueCertificate(self.ca, certs, "mx", "mx.remote.test")
        text = configuration(
            receiver.port,
            hostname="mx.remote.test",
            smtps='tls { cert_file = "certs/mx.pem"; key_file = "certs/mx.key"; }',
        ).replace(
            '"127.0.0.1:%d"' % (receiver.port,),
            '"127.0.0.1:%d", "127.0.0.2:%d"' % (receiver.port, receiver.port),
        )
        receiver.write(
            text, mt="remote.test lmtp:\n", aliases="bob: local:\n", access=""
        )
        receiver.start()
        return receiver

    def startSender(self, port: int) -> None:
        """This test's smx, relaying remote.test by MX to 127.0.0.2:C{port}."""
        from smx.maps.test.dnsserver import startDNSServer

        dnsPort, stopDNS = startDNSServer(
            {
                "remote.test": [("MX", 10, "mx.remote.test")],
                "mx.remote.test": [("A", "127.0.0.2")],
            }
        )
        self.addCleanup(stopDNS)
        self.mta.write(
            configuration(
                self.mta.port,
                smar='nameserver = { "127.0.0.1:%d" };' % (dnsPort,),
                smtpc="remote_port = %d;\n    tls { CAcert_file = %s; }"
                % (port, self.caFile),
                smtps=TLS,
            ),
            aliases="alice: local:\n",
            access="cltaddr:127.0.0.1 relay\n",
        )
        self.mta.start()

    def submit(self) -> None:
        """C{alice@localhost} to C{bob@remote.test} with REQUIRETLS."""
        with smtplib.SMTP("127.0.0.1", self.mta.port, timeout=10) as client:
            client.starttls(context=self.clientContext())
            client.sendmail(
                "alice@localhost",
                ["bob@remote.test"],
                b"Subject: secret\r\n\r\nonly over TLS\r\n",
                ["REQUIRETLS"],
            )

    @defer.inlineCallbacks
    def test_relayed(self) -> Any:
        """
        The second smx receives the message over TLS with REQUIRETLS on
        MAIL (its log says C{requiretls=1}) and delivers it; both
        Received: headers record TLS.
        """
        receiver = self.startReceiver()
        self.startSender(receiver.port)
        yield threads.deferToThread(self.submit)
        self.check(
            (yield until(lambda: receiver.maildir("bob"), 10)),
            "not relayed; the receiver's log:\n%s" % (receiver.log(),),
        )
        [message] = receiver.maildir("bob")
        self.assertEqual(message.count(b"with ESMTPS\n\t(TLS=TLSv1.3, "), 2, message)
        self.assertIn(b"only over TLS", message)
        [mail] = [r for r in receiver.records("smtps") if "mail=" in r]
        self.assertIn("mail=<alice@localhost>, requiretls=1, stat=0", mail)

    @defer.inlineCallbacks
    def test_returned(self) -> Any:
        """
        A next hop without STARTTLS (Postfix's smtp-sink): the message is
        not sent, its sender gets a bounce (5.7.10, RFC 8689 §5), itself
        queued with REQUIRETLS and delivered over local LMTP.
        """
        from smx.test.mta import SMTP_SINK, SmtpSink

        self.need(SMTP_SINK)
        sink = SmtpSink(self, self.root)
        sink.start()
        self.startSender(sink.port)
        yield threads.deferToThread(self.submit)
        self.check((yield until(lambda: self.mta.maildir("alice"), 10)), "no bounce")
        [bounce] = self.mta.maildir("alice")
        self.assertIn(b"Status: 5.7.10", bounce)
        self.assertEqual(sink.messages(), [])
        queued = [r for r in self.mta.records("qmgr") if "dsn_for=" in r]
        self.assertEqual(len(queued), 1, self.mta.log())

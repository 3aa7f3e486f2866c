# -*- test-case-name: smx.test.test_integration_options -*-
"""
Integration tests, end to end, of the program options of SMTPS, SMAR and
QMGR (L{smx.config.componentoptions}): C{twistd -n smx} run as a child
process with C{--smtps-options}, C{--smar-options}, C{--qmgr-options} or
the environment variables C{SM_SERVER_OPTIONS} and C{SMAROPTS}; real
clients (smtplib), Postfix's smtp-sink as the next hop, smx's own LMTP
server for local mail, and a Twisted Names server (in this process) for
MX records.  Each test shows that one option takes effect.
"""

from __future__ import annotations

import os
import smtplib
from typing import Any, List, Tuple

from twisted.internet import defer, threads
from twisted.trial.unittest import SkipTest, TestCase

from smx.log import parseRecord
from smx.maps.test.dnsserver import startDNSServerWithLog
from smx.test.mta import (
    MTATestCase,
    MTA,
    SMTP_SINK,
    SmtpSink,
    canConnect,
    configuration,
    freePort,
    missing,
    tempDirectory,
    until,
)

NO_ACCESS = "flags = { 8bitmime };"


def withoutAccess(text: str, flags: str = NO_ACCESS) -> str:
    """The configuration C{text} with other smtps flags (no C{access})."""
    old = "flags = { 8bitmime, access };"
    assert old in text
    return text.replace(old, flags)


def send(port: int, sender: str, recipient: str, body: bytes = b"") -> Tuple[int, str]:
    """
    One transaction with smtplib.

    @return: C{(code, text)} of the first refusal (MAIL, RCPT or DATA),
        or C{(250, "")}.
    """
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test") as s:
        try:
            s.sendmail(sender, [recipient], b"Subject: options\r\n\r\n" + body)
        except smtplib.SMTPRecipientsRefused as e:
            code, text = e.recipients[recipient]
            return code, text.decode()
        except smtplib.SMTPResponseException as e:
            return e.smtp_code, e.smtp_error.decode()
    return 250, ""


class _Base(MTATestCase):

    def send(self, *args: Any) -> defer.Deferred:
        return threads.deferToThread(send, self.mta.port, *args)

    def sink(self) -> SmtpSink:
        self.need(SMTP_SINK)
        sink = SmtpSink(self, self.root)
        sink.start()
        return sink

    def write(self, config: str, **files: str) -> None:
        """Write the configuration and maps (empty access, root local)."""
        files.setdefault("aliases", "root: local:\n")
        files.setdefault("access", "")
        self.mta.write(config, **files)

    def records(self, component: str) -> List[dict]:
        return [parseRecord(line) for line in self.mta.records(component)]


class SMTPSOptionTests(_Base):
    """C{smtps -a -C -N -T}."""

    @defer.inlineCallbacks
    def test_relayFromEnvironment(self) -> Any:
        """
        C{SM_SERVER_OPTIONS="-C 127.0.0.1"} (seed §3.2.1): the client may
        relay without any access map entry, the first record of its
        session says C{relay=1}, and the message reaches smtp-sink.
        """
        sink = self.sink()
        self.write(
            withoutAccess(
                configuration(self.mta.port, smtpc="remote_port = %d;" % sink.port)
            ),
            mt="localhost lmtp:\nremote.test [%s]\n" % (sink.address,),
        )
        self.mta.start(environ={"SM_SERVER_OPTIONS": "-C 127.0.0.1"})
        code, text = yield self.send("a@client.test", "bob@remote.test", b"C MARK")
        self.assertEqual(code, 250, text)
        ok = yield until(lambda: sink.containing(b"C MARK"))
        self.assertTrue(ok, self.mta.log())
        # every session (the harness's probes too) came from 127.0.0.1
        sessions = [r for r in self.records("smtps") if "client_ipv4" in r]
        self.assertTrue(sessions)
        self.assertEqual(
            {(r["client_ipv4"], r["relay"]) for r in sessions}, {("127.0.0.1", "1")}
        )

    @defer.inlineCallbacks
    def test_access(self) -> Any:
        """
        C{--smtps-options -a} (§5.9 4g): the access map is used although
        the file does not set the flag: its C{from:} entry rejects.
        """
        self.write(
            withoutAccess(configuration(self.mta.port)),
            aliases="root: local:\n",
            access="from:spam@bad.test error:550 5.7.1 no spam from you\n",
        )
        self.mta.start(options=["--smtps-options", "-a"])
        code, text = yield self.send("spam@bad.test", "root@localhost")
        self.assertEqual((code, text), (550, "5.7.1 no spam from you"))

    @defer.inlineCallbacks
    def test_relayToLocal(self) -> Any:
        """
        C{--smtps-options -T} (§6.3.1): with C{lmtp_does_not_imply_relaying}
        a local domain is accepted only with C{-T}, and the message is
        delivered over LMTP.
        """
        self.write(
            withoutAccess(
                configuration(self.mta.port),
                "flags = { 8bitmime, lmtp_does_not_imply_relaying };",
            ),
            mt="localhost lmtp:\nlocal.test lmtp:\n",
            aliases="alice: local:\n",
        )
        self.mta.start(options=["--smtps-options", "-T"])
        code, text = yield self.send("a@client.test", "alice@local.test", b"T MARK")
        self.assertEqual(code, 250, text)
        ok = yield until(lambda: any(b"T MARK" in m for m in self.mta.maildir("alice")))
        self.assertTrue(ok, self.mta.log())

    @defer.inlineCallbacks
    def test_relayToLocalRefusedWithout(self) -> Any:
        """
        The same configuration without C{-T}: relaying to the local
        domain is denied (so C{-T} is what allowed it).
        """
        self.write(
            withoutAccess(
                configuration(self.mta.port),
                "flags = { 8bitmime, lmtp_does_not_imply_relaying };",
            ),
            mt="localhost lmtp:\nlocal.test lmtp:\n",
            aliases="alice: local:\n",
        )
        self.mta.start()
        code, text = yield self.send("a@client.test", "alice@local.test")
        self.assertEqual(code, 550, text)
        self.assertIn("Relaying denied", text)

    @defer.inlineCallbacks
    def test_section(self) -> Any:
        """
        C{--smtps-options "-N MSA -C 127.0.0.1"} (§5.9.1): only the smtps
        section MSA listens, and its client may relay.
        """
        sink = self.sink()
        mtaPort, msaPort = self.mta.port, freePort()
        text = configuration(mtaPort, smtpc="remote_port = %d;" % sink.port)
        text = withoutAccess(text).replace("smtps {", "smtps MTA {", 1)
        text += '\nsmtps MSA {\n    daemon_address = { "127.0.0.1:%d" };\n}\n' % (
            msaPort,
        )
        self.write(text, mt="localhost lmtp:\nremote.test [%s]\n" % sink.address)
        self.mta.port = msaPort
        self.mta.start(options=["--smtps-options", "-N MSA -C 127.0.0.1"])
        self.assertFalse(canConnect(mtaPort))
        code, text = yield self.send("a@client.test", "bob@remote.test", b"N MARK")
        self.assertEqual(code, 250, text)
        ok = yield until(lambda: sink.containing(b"N MARK"))
        self.assertTrue(ok, self.mta.log())

    def test_badOption(self) -> None:
        """
        A bad option set stops twistd with one line that names it, exit
        status 1.
        """
        self.write(configuration(self.mta.port))
        e = self.assertRaises(
            RuntimeError, self.mta.start, options=["--smtps-options", "-N nosuch"]
        )
        self.assertIn("--smtps-options '-N nosuch': ", str(e))
        self.assertIn("no section 'smtps nosuch'", str(e))
        self.assertNotIn("Traceback", str(e))


class SMAROptionTests(_Base):
    """C{smar -U}."""

    @defer.inlineCallbacks
    def test_dnsOverTCP(self) -> Any:
        """
        C{SMAROPTS=-U} (§3.2.1): every DNS query goes over TCP, and the
        message is relayed to the MX the answers name.
        """
        sink = self.sink()
        port, stop, server = startDNSServerWithLog(
            {
                "remote.test": [("MX", 10, "mx.remote.test")],
                "mx.remote.test": [("A", sink.address)],
            }
        )
        self.addCleanup(stop)
        self.write(
            configuration(
                self.mta.port,
                smar='nameserver = { "127.0.0.1:%d" };' % (port,),
                smtpc="remote_port = %d;" % (sink.port,),
            ),
            access="cltaddr:127.0.0.1 relay\n",
        )
        self.mta.start(environ={"SMAROPTS": "-U"})
        code, text = yield self.send("a@client.test", "bob@remote.test", b"U MARK")
        self.assertEqual(code, 250, text)
        ok = yield until(lambda: sink.containing(b"U MARK"))
        self.assertTrue(ok, self.mta.log())
        self.assertIn(("remote.test", "MX", "tcp"), server.queries)
        self.assertEqual({q[2] for q in server.queries}, {"tcp"})


class QMGROptionTests(_Base):
    """C{qmgr -x}."""

    @defer.inlineCallbacks
    def test_debugCategories(self) -> Any:
        """
        C{--qmgr-options "-x 1-2,5.2"} (App. E): the qmgr log has the
        debug records of the categories SMTPS, IBDB and SMTPC (up to level
        2 for SMTPC), none of the others.
        """
        self.write(configuration(self.mta.port), aliases="root: local:\n")
        self.mta.start(options=["--qmgr-options", "-x 1-2,5.2"])
        code, text = yield self.send("a@client.test", "root@localhost", b"X MARK")
        self.assertEqual(code, 250, text)
        ok = yield until(lambda: any(b"X MARK" in m for m in self.mta.maildir("root")))
        self.assertTrue(ok, self.mta.log())
        ok = yield until(lambda: "5.2" in {r.get("dbg") for r in self.records("qmgr")})
        self.assertTrue(ok, self.mta.log())
        seen = {r["dbg"] for r in self.records("qmgr") if "dbg" in r}
        self.assertTrue({"1.1", "2.1", "5.1", "5.2"} <= seen, seen)
        self.assertEqual({c.split(".")[0] for c in seen}, {"1", "2", "5"})

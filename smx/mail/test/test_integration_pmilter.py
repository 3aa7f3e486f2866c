# -*- test-case-name: smx.mail.test.test_integration_pmilter -*-
"""
Integration tests: policy milters (seed §8, App. B; doc/pmilter.md) called
by SMTPS in a real C{twistd -n smx}, driven by smtplib over loopback: a
pmilter of someone else installed as a drop-in plugin (C{smx/plugins/} on
C{PYTHONPATH}) inside SMTPS and behind C{smx pmilter-server}, pmilters that
hang or raise under the default failure policy, and the shipped greylist
pmilter.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import smtplib
import subprocess
import tempfile
import time
from typing import Any, Dict, List

from twisted.internet import defer
from twisted.trial import unittest

from smx.test.mta import MTA, SMX, configuration, dropInPlugins, until, waitFor

#: two pmilters of someone else that record what they see (JSON lines in
#: $PMTEST_RECORD) and decide by the addresses and the content
RECORDER = r'''
import json, os
from twisted.internet import defer, reactor
from twisted.plugin import IPlugin
from zope.interface import implementer
from smx.interfaces import IPolicyMilter
from smx import pmilter as pm


def record(*items):
    with open(os.environ["PMTEST_RECORD"], "a") as f:
        f.write(json.dumps(items) + "\n")


@implementer(IPlugin, IPolicyMilter)
class Recorder:
    """CONNECT, MAIL, RCPT (also rejected ones), DOT; some macros."""

    name = "recorder"

    def negotiate(self, server):
        return pm.Negotiation(
            stages={pm.SMST_CONNECT, pm.SMST_MAIL, pm.SMST_RCPT, pm.SMST_DOT},
            macros={pm.SMST_CONNECT: [pm.PMM_SEID],
                    pm.SMST_MAIL: [pm.PMM_MAIL_TAID],
                    pm.SMST_DOT: [pm.PMM_DOT_MSGID]},
            capabilities={pm.CAP_RCPT_ST})

    def connect(self, session, hostname, address):
        session.context = []
        record("recorder", "connect", address.host, session.getmac(pm.PMM_SEID))
        return pm.CONT

    def helo(self, session, name):
        record("recorder", "helo", name)

    def mail(self, session, address, args):
        record("recorder", "mail", address, args, session.getmac(pm.PMM_MAIL_TAID))
        if address == "<ssd@client.test>":
            return pm.SSD
        return pm.CONT

    def rcpt(self, session, address, args):
        record("recorder", "rcpt", address, session.getstatus())
        local = address[1:].split("@")[0]
        if local == "reject":
            session.setreply("550 5.7.1 No thanks")
            return pm.PERM
        if local == "later":
            d = defer.Deferred()
            session.setreply("452 4.2.1 Try later")
            reactor.callLater(0.2, d.callback, pm.TEMP)
            return d
        if local == "drop":
            return pm.DISCARD
        if local == "dropall":
            return pm.quick(pm.DISCARD)
        if local == "vip":
            return pm.quick(pm.OK)
        return pm.CONT

    def data(self, session):
        record("recorder", "data")

    def body(self, session, chunk):
        session.context.append(chunk.decode("latin-1"))

    def eom(self, session):
        content = "".join(session.context)
        session.context = []
        record("recorder", "eom", session.getmac(pm.PMM_DOT_MSGID), content)
        if "REJECTME" in content:
            session.setreply("554 5.7.1 Content rejected")
            return pm.PERM
        if "DISCARDME" in content:
            return pm.DISCARD
        return pm.CONT

    def abort(self, session):
        session.context = []
        record("recorder", "abort")

    def close(self, session):
        record("recorder", "close")


@implementer(IPlugin, IPolicyMilter)
class Recorder2:
    """EHLO, RCPT (accepted ones only), DATA, unknown commands."""

    name = "recorder2"

    def negotiate(self, server):
        return pm.Negotiation(
            stages={pm.SMST_EHLO, pm.SMST_RCPT, pm.SMST_DATA, pm.SMST_UNKNOWN})

    def connect(self, session, hostname, address):
        record("recorder2", "connect")

    def helo(self, session, name):
        try:
            session.getmac(pm.PMM_SEID)
            asked = "given"
        except pm.MacroNotRequested:
            asked = "not requested"
        record("recorder2", "helo", name, asked)

    def mail(self, session, address, args):
        record("recorder2", "mail", address)

    def rcpt(self, session, address, args):
        record("recorder2", "rcpt", address, session.getstatus())
        if address == "<vip@localhost>":
            return pm.PERM
        return pm.CONT

    def data(self, session):
        record("recorder2", "data")

    def unknown(self, session, command):
        record("recorder2", "unknown", command)

    def body(self, session, chunk):
        record("recorder2", "body")

    def eom(self, session):
        record("recorder2", "eom")

    def close(self, session):
        record("recorder2", "close")


@implementer(IPlugin, IPolicyMilter)
class Failing:
    """Hangs or raises at MAIL, as the sender says."""

    name = "failing"

    def negotiate(self, server):
        return pm.Negotiation(stages={pm.SMST_MAIL})

    def mail(self, session, address, args):
        if address == "<hang@client.test>":
            return defer.Deferred()
        if address == "<raise@client.test>":
            raise RuntimeError("broken pmilter")
        return pm.CONT


recorder = Recorder()
recorder2 = Recorder2()
failing = Failing()
'''

USERS = ("alice", "bob", "reject", "later", "drop", "dropall", "vip")


class _Base(unittest.TestCase):
    """
    An smx with the drop-in pmilters on C{PYTHONPATH}.
    """

    def setUp(self) -> None:
        # short: the pmilter server's socket name must fit in sun_path
        self.root = tempfile.mkdtemp(prefix="smxpm")
        self.addCleanup(shutil.rmtree, self.root, True)
        self.record = os.path.join(self.root, "record")
        self.environ = {
            "PYTHONPATH": dropInPlugins(self.root, pmtest_recorder=RECORDER),
            "PMTEST_RECORD": self.record,
        }
        self.mta = MTA(self, os.path.join(self.root, "smx"))

    def startMTA(self, pmilter: str) -> None:
        self.mta.write(
            configuration(self.mta.port, smtps="pmilter { %s }" % (pmilter,)),
            aliases="".join("%s: local:\n" % (u,) for u in USERS),
            access="",
        )
        self.mta.start(environ=self.environ)

    def records(self) -> List[List[Any]]:
        if not os.path.exists(self.record):
            return []
        with open(self.record) as f:
            return [json.loads(line) for line in f]

    def client(self) -> smtplib.SMTP:
        c = smtplib.SMTP("127.0.0.1", self.mta.port, timeout=10)
        self.addCleanup(c.close)
        return c


class RecorderTests(_Base):
    """
    The recording pmilters inside SMTPS, then behind C{smx pmilter-server}.
    """

    def session(self) -> Dict[str, Any]:
        """
        One SMTP session with five transactions and a second one that
        the SSD of a pmilter ends; @return: the replies.
        """
        replies = {}  # type: Dict[str, Any]
        c = self.client()
        c.ehlo("client.test")
        replies["xfoo"] = c.docmd("XFOO bar")
        c.mail("carol@client.test", ["BODY=8BITMIME"])
        for user in ("alice", "nobody", "reject", "later", "drop", "vip"):
            replies[user] = c.rcpt("%s@localhost" % (user,))
        replies["data1"] = c.data(
            b"Subject: one\r\nMessage-Id: <one@client.test>\r\n\r\n"
            b".leading dot\r\nend\r\n"
        )
        for marker in ("DISCARDME", "REJECTME"):
            c.mail("carol@client.test")
            c.rcpt("bob@localhost")
            replies[marker] = c.data(
                b"Subject: %s\r\n\r\n%s\r\n" % ((marker.encode(),) * 2)
            )
        c.mail("carol@client.test")
        c.rcpt("bob@localhost")
        replies["dropall"] = c.rcpt("dropall@localhost")
        replies["data4"] = c.data(b"Subject: four\r\n\r\nfour\r\n")
        c.mail("carol@client.test")
        c.rcpt("bob@localhost")
        replies["rset"] = c.rset()
        c.quit()
        # the sessions one after the other, for the order of the records
        waitFor(lambda: sum(r[1] == "close" for r in self.records()) == 2)
        c2 = self.client()
        c2.ehlo("client2.test")
        replies["ssd"] = c2.docmd("MAIL FROM:<ssd@client.test>")
        replies["afterSSD"] = c2.sock.recv(100)
        return replies

    @defer.inlineCallbacks
    def check(self, replies: Dict[str, Any]) -> Any:
        self.assertEqual(replies["xfoo"][0], 500)
        self.assertEqual(replies["alice"][0], 250)
        self.assertEqual(replies["nobody"][0], 550)
        self.assertEqual(replies["reject"], (550, b"5.7.1 No thanks"))
        self.assertEqual(replies["later"], (452, b"4.2.1 Try later"))
        self.assertEqual(replies["drop"][0], 250)
        # quick OK: recorder2, which rejects vip, is not asked
        self.assertEqual(replies["vip"][0], 250)
        self.assertEqual(replies["data1"][0], 250)
        self.assertEqual(replies["DISCARDME"][0], 250)
        self.assertEqual(replies["REJECTME"], (554, b"5.7.1 Content rejected"))
        self.assertEqual(replies["dropall"][0], 250)
        self.assertEqual(replies["data4"][0], 250)
        self.assertEqual(replies["ssd"][0], 421)
        self.assertEqual(replies["afterSSD"], b"")
        ok = yield until(
            lambda: self.mta.maildir("alice") and self.mta.maildir("vip"), 10
        )
        self.assertTrue(ok, self.mta.log())
        [alice] = self.mta.maildir("alice")
        self.assertIn(b"\n.leading dot\n", alice.replace(b"\r\n", b"\n"))
        self.assertEqual(len(self.mta.maildir("vip")), 1)
        for user in ("bob", "drop", "dropall", "reject", "later"):
            self.assertEqual(self.mta.maildir(user), [], user)

        ok = yield until(lambda: sum(r[1] == "close" for r in self.records()) == 4, 10)
        records = self.records()
        self.assertTrue(ok, records)
        one = [r for r in records if r[0] == "recorder"]
        two = [r for r in records if r[0] == "recorder2"]
        # recorder: connect, mail, rcpt, body/eom, abort, close; no helo
        # or data (not negotiated)
        self.assertEqual(
            [r[1] for r in one],
            ["connect", "mail"]
            + ["rcpt"] * 6
            + ["eom"]
            + ["mail", "rcpt", "eom"] * 2
            + ["mail", "rcpt", "rcpt", "eom"]
            + ["mail", "rcpt", "abort", "close"]
            + ["connect", "mail", "abort", "close"],
        )
        self.assertTrue(one[0][3].startswith("S"), one[0])
        self.assertEqual(one[1][2:4], ["<carol@client.test>", ["BODY=8BITMIME"]])
        # the transaction id, as SMTPS logs it
        self.assertIn(
            "ss_ta=%s, mail=<carol@client.test>" % (one[1][4],), self.mta.log()
        )
        # rejected recipients with CAP_RCPT_ST, with SMTPS's status
        self.assertEqual(
            [r[2:] for r in one[2:8]],
            [["<alice@localhost>", 250], ["<nobody@localhost>", 550]]
            + [
                ["<%s@localhost>" % (u,), 250]
                for u in ("reject", "later", "drop", "vip")
            ],
        )
        # the content as received: dot-stuffed, with the final dot
        self.assertEqual(one[8][2], "<one@client.test>")
        self.assertTrue(one[8][3].endswith("\r\n..leading dot\r\nend\r\n.\r\n"), one[8])
        # recorder2: helo without the macro it did not ask for, unknown,
        # rcpt for those SMTPS and recorder accepted and vip not at all
        # (a rejection, a discard or a quick acceptance of recorder is
        # final: recorder2 is not asked)
        bob = ["recorder2", "rcpt", "<bob@localhost>", 250]
        self.assertEqual(
            two,
            [
                ["recorder2", "helo", "client.test", "not requested"],
                ["recorder2", "unknown", "XFOO bar"],
                ["recorder2", "rcpt", "<alice@localhost>", 250],
                ["recorder2", "data"],
            ]
            + [bob, ["recorder2", "data"]] * 3
            + [bob, ["recorder2", "close"]]
            + [["recorder2", "helo", "client2.test", "not requested"]]
            + [["recorder2", "close"]],
        )
        log = self.mta.log()
        self.assertIn("reply=550 5.7.1 No thanks, pmilter=recorder", log)

    def test_plugins(self) -> Any:
        """
        The pmilters as plugins inside SMTPS see exactly the stages and
        macros they negotiated, rejected recipients only with
        CAP_RCPT_ST, and their decisions (setreply, a L{Deferred}, quick
        OK and DISCARD, DISCARD at RCPT and the final dot, SSD) apply.
        """
        self.startMTA("plugins = { recorder, recorder2 };")
        return self.check(self.session())

    def test_server(self) -> Any:
        """
        The same pmilters behind C{smx pmilter-server --socket}: the same
        calls and decisions.
        """
        socket = os.path.join(self.root, "pm.sock")
        conf = os.path.join(self.root, "pm.conf")
        with open(conf, "w") as f:
            f.write("")
        server = subprocess.Popen(
            [SMX, "pmilter-server", "-f", conf, "--socket", socket]
            + ["--log-file", os.path.join(self.root, "pm.log")]
            + ["recorder", "recorder2"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=dict(os.environ, **self.environ),
        )
        self.addCleanup(self._kill, server)
        self.startMTA('socket = "%s"; timeout = 5s;' % (socket,))
        d = until(lambda: os.path.exists(socket), 10)
        d.addCallback(lambda ok: self.assertTrue(ok))
        d.addCallback(lambda _: self.check(self.session()))
        return d

    def _kill(self, process: subprocess.Popen) -> None:
        if process.poll() is None:
            process.kill()
            process.wait()


class FailureTests(_Base):
    """
    The default failure policy (C{on_failure = tempfail}).
    """

    def test_hangOrRaise(self) -> None:
        """
        A pmilter that does not answer within C{timeout}, or raises, gets
        its MAIL 451 4.3.0, never acceptance; others pass.
        """
        self.startMTA("plugins = { failing }; timeout = 1s;")
        c = self.client()
        c.ehlo("client.test")
        code, text = c.mail("hang@client.test")
        self.assertEqual((code, text[:5]), (451, b"4.3.0"))
        code, text = c.mail("raise@client.test")
        self.assertEqual((code, text[:5]), (451, b"4.3.0"))
        self.assertEqual(c.mail("good@client.test")[0], 250)
        c.quit()
        log = self.mta.logWith("action=tempfail")
        self.assertIn("pmilter=failing", log)
        self.assertIn("action=tempfail", log)


class GreylistTests(_Base):
    """
    The shipped greylist pmilter inside SMTPS.
    """

    def test_greylist(self) -> None:
        """
        The first attempt of a triplet gets 451 4.7.1 at RCPT; the retry
        after C{delay} is accepted and the message delivered.
        """
        self.startMTA(
            "plugins = { greylist }; greylist { delay = 1s; loopback = yes; }"
        )
        c = self.client()
        c.ehlo("client.test")
        c.mail("carol@client.test")
        code, text = c.rcpt("alice@localhost")
        self.assertEqual(code, 451)
        self.assertTrue(text.startswith(b"4.7.1 Greylisted"), text)
        c.rset()
        time.sleep(1.1)
        c.mail("carol@client.test")
        self.assertEqual(c.rcpt("alice@localhost")[0], 250)
        self.assertEqual(c.data(b"Subject: grey\r\n\r\nretried\r\n")[0], 250)
        c.quit()
        self.assertTrue(waitFor(lambda: self.mta.maildir("alice")), self.mta.log())


class ReloadTests(_Base):
    """
    SIGUSR1 and the rules pmilter.
    """

    def test_reloadAndBDAT(self) -> None:
        """
        The rules pmilter rejects by the body of a BDAT message (which it
        gets dot-stuffed); after the rules file changes, SIGUSR1 makes it
        read the file again.
        """
        rules = os.path.join(self.mta.directory, "pmilter.rules")
        os.makedirs(self.mta.directory, exist_ok=True)
        with open(rules, "w") as f:
            f.write('reject "554 5.7.1 No dots"\n    body /^\\.hidden/\n')
        self.startMTA("plugins = { rules };")

        def send() -> Any:
            c = self.client()
            c.ehlo("client.test")
            c.mail("carol@client.test")
            c.rcpt("alice@localhost")
            body = b"Subject: x\r\n\r\n.hidden\r\n"
            c.send(b"BDAT %d LAST\r\n" % (len(body),) + body)
            reply = c.getreply()
            c.quit()
            return reply

        self.assertEqual(send(), (554, b"5.7.1 No dots"))
        with open(rules, "w") as f:
            f.write('reject "554 5.7.1 No x"\n    header /^Subject$/ /^y$/\n')
        self.mta.process.send_signal(signal.SIGUSR1)
        self.assertTrue(waitFor(lambda: "rules" in self.mta.log() and send()[0] == 250))
        # smx qmgrctl reload does what SIGUSR1 does
        with open(rules, "w") as f:
            f.write('reject "554 5.7.1 No dots again"\n    body /^\\.hidden/\n')
        result = subprocess.run(
            [SMX, "qmgrctl", "-q", self.mta.directory, "reload"],
            capture_output=True,
            timeout=30,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(send(), (554, b"5.7.1 No dots again"))

# -*- test-case-name: smx.queue.test.test_integration_dsn -*-
"""
Integration tests of DSN (RFC 3461, 3464) with C{twistd -n smx} and real
peers over loopback sockets: Python's C{smtplib} gives C{RET}, C{ENVID}
at MAIL and C{NOTIFY}, C{ORCPT} at RCPT; they are kept in the queue
(IBDB, DEFEDB) across a restart and shown by C{smx mailq}.
"""

from __future__ import annotations

import json
import os
import smtplib
from typing import Any, List

from twisted.internet import defer, threads
from twisted.trial.unittest import SkipTest, TestCase

from smx.test.mta import (
    MTA,
    SMTP_SINK,
    SmtpSink,
    configuration,
    missing,
    tempDirectory,
    until,
)


def send(port: int, sender: str, recipients: List[str], body: bytes, mail, rcpt):
    """Send one message with smtplib and DSN options (blocking)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("client.test")
        assert client.has_extn("dsn")
        refused = client.sendmail(sender, recipients, body, mail, rcpt)
        assert not refused, refused


class _Base(TestCase):
    def setUp(self) -> None:
        self.root = tempDirectory(self)
        self.mta = MTA(self, os.path.join(self.root, "smx"))

    def need(self, *programs: str) -> None:
        reason = missing(*programs)
        if reason:
            raise SkipTest(reason)

    def remote(self, sink: SmtpSink, retry: str = "1s", qmgr: str = "") -> None:
        self.mta.write(
            configuration(
                self.mta.port,
                smtpc="remote_port = %d;" % (sink.port,),
                retry=retry,
                qmgr=qmgr,
            ),
            mt="localhost lmtp:\nremote.test [%s]\n" % (sink.address,),
            aliases="alice: local:\nbob: local:\npostmaster: alice\n",
            access="cltaddr:127.0.0.1 relay\n",
        )

    def send(self, recipients, body, mail=(), rcpt=()) -> Any:
        return threads.deferToThread(
            send,
            self.mta.port,
            "alice@localhost",
            recipients,
            body,
            list(mail),
            list(rcpt),
        )

    def check(self, ok: bool, what: str) -> None:
        if not ok:
            self.fail("%s; smx's log:\n%s" % (what, self.mta.log()))


class QueueTests(_Base):
    """The DSN parameters in the queue and in C{smx mailq}."""

    @defer.inlineCallbacks
    def test_restart(self) -> Any:
        """
        A message for a next hop that is down keeps RET, ENVID, NOTIFY and
        ORCPT (decoded) in DEFEDB: C{smx mailq --json} shows them while
        smx runs, C{mailq --offline} after C{kill -9}, and again after a
        restart; the text output shows them too.
        """
        self.need(SMTP_SINK)
        sink = SmtpSink(self, self.root)
        self.remote(sink, retry="1h")
        self.mta.start()
        yield self.send(
            ["bob@remote.test"],
            b"Subject: x\r\n\r\nkept\r\n",
            ["RET=HDRS", "ENVID=QQ+2B314"],
            ["NOTIFY=SUCCESS,DELAY", "ORCPT=rfc822;Bob+2Bx@remote.test"],
        )
        self.check((yield until(lambda: "stat=temp" in self.mta.log())), "no deferral")

        def expectQueued(out: bytes) -> None:
            [ta] = json.loads(out)
            self.assertEqual((ta["ret"], ta["envid"]), ("HDRS", "QQ+314"))
            [r] = ta["recipients"]
            self.assertEqual(r["notify"], "SUCCESS,DELAY")
            self.assertEqual(r["orcpt"], "rfc822;Bob+x@remote.test")

        out, err, status = yield self.mta.smx("mailq", "--json")
        self.assertEqual(status, 0, err)
        expectQueued(out)
        self.mta.kill()
        out, err, status = yield self.mta.smx("mailq", "--offline", "--json")
        self.assertEqual(status, 0, err)
        expectQueued(out)
        out, err, status = yield self.mta.smx("mailq", "--offline")
        self.assertIn(b"RET=HDRS ENVID=QQ+314", out)
        self.assertIn(b"NOTIFY=SUCCESS,DELAY ORCPT=rfc822;Bob+x@remote.test", out)
        self.mta.start()
        out, err, status = yield self.mta.smx("mailq", "--json")
        self.assertEqual(status, 0, err)
        expectQueued(out)

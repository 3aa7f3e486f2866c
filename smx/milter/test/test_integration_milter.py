# -*- test-case-name: smx.milter.test.test_integration_milter -*-
"""
Integration tests of the milter client (L{smx.milter.client}) against
real milters, over real Unix sockets, on the real reactor:

  - a milter written with python3-milter (Debian's C{python3-milter},
    libmilter underneath), run by Debian's C{/usr/bin/python3} as a
    separate process from a script this module writes; it records every
    callback and the macros it sees, and answers as the test asks;
  - opendkim (Debian's C{opendkim}), which signs a message: its
    C{DKIM-Signature} comes back as a header modification, the signed
    message verifies with C{dkimpy} (the public key given by a
    C{dnsfunc}, no DNS), and a changed message does not.

Each test starts and stops its own milter on a temporary Unix socket.
The tests are skipped when the packages are not installed
(C{tools/bootstrap.sh} installs them).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from smx.log import Logger, MemorySink
from smx.milter import codec
from smx.milter.client import MilterClient, MilterSettings, parseSocket
from smx.milter.macros import connectMacros, rejectedRecipientMacros
from smx.milter.modifications import (
    AddHeader,
    AddRecipient,
    ChangeFrom,
    ChangeHeader,
    DeleteHeader,
    DeleteRecipient,
    Envelope,
    InsertHeader,
    Quarantine,
    Recipient,
    ReplaceBody,
    applyModifications,
    joinMessage,
)
from smx.milter.protocol import ACCEPT, CONTINUE, ConnectInfo, Decision

try:
    import dkim
except ImportError:
    dkim = None

#: Debian's interpreter, for which python3-milter is built
SYSTEM_PYTHON = "/usr/bin/python3"

OPENDKIM = shutil.which("opendkim") or "/usr/sbin/opendkim"
OPENDKIM_GENKEY = shutil.which("opendkim-genkey") or "/usr/sbin/opendkim-genkey"

#: the milter written with python3-milter, for these tests and those of
#: SMTPS (L{smx.mail.test.test_integration_milter}).  argv: socket, log,
#: kind (default plain).  The kind (how it negotiates, and where the mode
#: comes from) is chosen per process; the mode (what it answers) per SMTP
#: session: by the client's host name, or with the kind C{relay} (SMTPS
#: run by twistd, swaks from 127.0.0.1) by the first label of the HELO
#: name.  The changes of mode C{edit} name the domain of the first
#: recipient.
PEER = r"""
import hashlib, json, os, sys, time
import Milter

SOCKET, LOG = sys.argv[1:3]
KIND = sys.argv[3] if len(sys.argv) > 3 else "plain"
out = open(LOG, "a")

MACROS = ["j", "_", "v", "i", "{daemon_name}", "{daemon_addr}",
          "{client_addr}", "{client_port}", "{client_name}", "{mail_addr}",
          "{rcpt_addr}", "{rcpt_host}", "{rcpt_mailer}", "{auth_type}",
          "{auth_authen}", "{tls_version}", "{cipher}"]


def record(*what):
    out.write(json.dumps(what) + "\n")
    out.flush()


class Peer(Milter.Base):
    #: what mode edit does besides the changes SMTPS can pass on
    quarantineEdit = True
    fromParameters = ("SIZE=1234",)

    def __init__(self):
        self.mode = "plain"
        self.digest = hashlib.sha256()
        self.size = 0
        self.domain = "example.net"

    def macros(self):
        values = {}
        for name in MACROS:
            value = self.getsymval(name)
            if value is not None:
                values[name] = value
        return values

    def connect(self, hostname, family, hostaddr):
        self.mode = hostname.split(".")[0]
        record("connect", hostname, int(family), list(hostaddr), self.macros())
        if self.mode == "rejectconnect":
            self.setreply("554", "5.7.1", "not welcome")
            return Milter.REJECT
        if self.mode == "acceptconnect":
            return Milter.ACCEPT
        return Milter.CONTINUE

    def hello(self, name):
        record("helo", name, self.macros())
        if self.mode == "rejecthelo":
            self.setreply("550", "5.7.1", "go away")
            return Milter.REJECT
        return Milter.CONTINUE

    def envfrom(self, sender, *parameters):
        self.digest = hashlib.sha256()
        self.size = 0
        self.domain = None
        record("mail", sender, list(parameters), self.macros())
        if self.mode == "tempfailmail":
            return Milter.TEMPFAIL
        return Milter.CONTINUE

    def envrcpt(self, recipient, *parameters):
        record("rcpt", recipient, list(parameters), self.macros())
        if self.domain is None:
            self.domain = recipient.strip("<>").rpartition("@")[2]
        if recipient.startswith("<reject@"):
            self.setreply("550", "5.1.1", "no such user", "try 100%% again")
            return Milter.REJECT
        if recipient.startswith("<discard@"):
            return Milter.DISCARD
        return Milter.CONTINUE

    def data(self):
        record("data", self.macros())
        return Milter.CONTINUE

    def header(self, name, value):
        record("header", name, value)
        return Milter.CONTINUE

    def eoh(self):
        record("eoh", self.macros())
        return Milter.CONTINUE

    def body(self, chunk):
        record("body", len(chunk))
        self.digest.update(chunk)
        self.size += len(chunk)
        if self.mode == "skipbody":
            return Milter.SKIP
        return Milter.CONTINUE

    def unknown(self, command):
        record("unknown", command)
        return Milter.CONTINUE

    def eom(self):
        record("eom", self.size, self.digest.hexdigest(), self.macros())
        if self.mode == "edit":
            self.progress()
            self.addheader("X-Added", "added value")
            self.addheader("X-Inserted", "at the top", 0)
            self.addheader("X-Second", "line one\n\tline two", 1)
            self.chgheader("Subject", 1, "changed subject")
            self.chgheader("X-Remove", 1, "")
            self.replacebody(b"replaced ")
            self.replacebody(b"body\r\n")
            self.chgfrom("<new-sender@example.org>", *self.fromParameters)
            self.addrcpt("<added@%s>" % self.domain)
            self.addrcpt("<added-par@%s>" % self.domain, "NOTIFY=NEVER")
            self.delrcpt("<b@%s>" % self.domain)
            if self.quarantineEdit:
                self.quarantine("held by the test milter")
            return Milter.ACCEPT
        if self.mode == "smx":
            # QMGR's own mail (its HELO is the hostname, smx.test)
            self.addheader("X-Internal-Milter", "saw %s" % self.getsymval("i"))
            return Milter.ACCEPT
        if self.mode == "subject":
            self.chgheader("Subject", 1, "changed by the first milter")
            self.addheader("X-First", "yes")
            return Milter.CONTINUE
        if self.mode == "quarantine":
            self.quarantine("held by the test milter")
            return Milter.ACCEPT
        if self.mode == "leadspace":
            self.addheader("X-Lead", "\tkept as sent")
            return Milter.CONTINUE
        if self.mode == "rejecteom":
            self.setreply("554", "5.7.1", "spam", "100%% spam")
            return Milter.REJECT
        if self.mode == "tempfaileom":
            return Milter.TEMPFAIL
        if self.mode == "discardeom":
            return Milter.DISCARD
        if self.mode == "sloweom":
            time.sleep(3)
        if self.mode == "hang":
            time.sleep(30)
        if self.mode == "die":
            os._exit(3)
        return Milter.CONTINUE

    def abort(self):
        record("abort")
        return Milter.CONTINUE

    def close(self):
        record("close")
        return Milter.CONTINUE


class Relay(Peer):
    # the mail goes on to the next hop: edit neither holds it nor asks
    # for a SIZE the next hop would see
    quarantineEdit = False
    fromParameters = ()

    def hello(self, name):
        self.mode = name.split(".")[0]
        return Peer.hello(self, name)


class NoReply(Peer):
    @Milter.nocallback
    def hello(self, name):
        return Milter.CONTINUE

    @Milter.noreply
    def header(self, name, value):
        return Peer.header(self, name, value)

    @Milter.noreply
    def eoh(self):
        return Peer.eoh(self)

    @Milter.noreply
    def body(self, chunk):
        record("body", len(chunk))
        self.digest.update(chunk)
        self.size += len(chunk)
        return Milter.CONTINUE


class SymList(Peer):
    def negotiate(self, opts):
        # Milter.symlist does not work with Debian's python3-milter 1.0.5
        # (Base.setsymlist passes bytes where the C module wants str).
        self._ctx.setsymlist(Milter.M_ENVFROM, "{mail_addr}")
        return Peer.negotiate(self, opts)


class LeadSpace(Peer):
    pass


class Rejected(Peer):
    pass


# (these decorators change the class they are given)
Milter.header_leading_space(LeadSpace)
Milter.rejected_recipients(Rejected)

KINDS = {
    "plain": Peer,
    "relay": Relay,
    "noreply": NoReply,
    "symlist": SymList,
    "leadspace": LeadSpace,
    "rejected": Rejected,
}

Milter.factory = KINDS[KIND]
record("started", KIND)
Milter.runmilter("smx-test", "unix:" + SOCKET, timeout=60)
"""


def _pythonMilter() -> bool:
    try:
        return (
            subprocess.run(
                [SYSTEM_PYTHON, "-c", "import Milter"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            ).returncode
            == 0
        )
    except OSError:
        return False


HAVE_PYMILTER = _pythonMilter()
HAVE_OPENDKIM = os.access(OPENDKIM, os.X_OK) and os.access(OPENDKIM_GENKEY, os.X_OK)


class MilterProcess:
    """
    A milter run as a child process, listening on a Unix socket in a
    private directory under C{/tmp} (short enough for C{sun_path}).
    """

    def __init__(self, argv: List[str], socketPath: str, output: str) -> None:
        self.argv = argv
        self.socketPath = socketPath
        self.output = output
        self.process = None  # type: Optional[subprocess.Popen]

    @defer.inlineCallbacks
    def start(self) -> Iterator[Any]:
        with open(self.output, "ab") as out:
            self.process = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        for _ in range(500):
            if self.listening():
                return
            if self.process.poll() is not None:
                break
            yield task.deferLater(reactor, 0.01, lambda: None)
        with open(self.output, "rb") as f:
            raise AssertionError(
                "%s did not start: %r" % (self.argv[0], f.read()[-2000:])
            )

    def listening(self) -> bool:
        """
        Does the milter accept connections?  (Its socket file exists as
        soon as it is bound, a moment before it listens.)
        """
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(self.socketPath)
        except OSError:
            return False
        finally:
            probe.close()
        return True

    @defer.inlineCallbacks
    def stop(self, sig: int = signal.SIGKILL) -> Iterator[Any]:
        """
        Kill the milter (libmilter takes seconds to act on SIGTERM) and
        wait for it.
        """
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        for _ in range(300):
            if process.poll() is not None:
                return
            yield task.deferLater(reactor, 0.01, lambda: None)
        process.kill()
        process.wait()


class MilterTestCase(unittest.TestCase):
    """
    A private directory for the milter's files and a short one for its
    socket; the client's log in memory.
    """

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.socketDirectory = tempfile.mkdtemp(prefix="smx-milter-", dir="/tmp")
        self.addCleanup(shutil.rmtree, self.socketDirectory, True)
        self.socketPath = os.path.join(self.socketDirectory, "milter.sock")
        self.sink = MemorySink()

    @defer.inlineCallbacks
    def startMilter(self, argv: List[str]) -> Iterator[Any]:
        process = MilterProcess(
            argv, self.socketPath, os.path.join(self.directory, "milter.out")
        )
        self.milterProcess = process
        self.addCleanup(process.stop)
        yield process.start()

    def client(
        self,
        defaultAction: str = "tempfail",
        contentTimeout: float = 10,
        path: Optional[str] = None,
    ) -> MilterClient:
        settings = MilterSettings(
            "testmilter",
            parseSocket("unix:" + (path or self.socketPath)),
            connectTimeout=5,
            commandTimeout=10,
            contentTimeout=contentTimeout,
            defaultAction=defaultAction,
        )
        return MilterClient(settings, reactor, Logger("smtps", sink=self.sink))

    def warnings(self) -> List[str]:
        return [line for line in self.sink.lines() if "sev=WARN" in line]


def clientInfo(mode: str) -> ConnectInfo:
    return ConnectInfo(mode + ".example", "inet", "127.0.0.1", 4711)


def macros(mode: str) -> Dict[str, str]:
    return connectMacros(
        "mx.example.test",
        "127.0.0.1",
        4711,
        mode + ".example",
        daemonName="smtps",
        daemonAddress="127.0.0.1",
        version="smx test",
    )


#: the message of the tests: smx's own Received: first (the milter does
#: not see it), then the header the client sent
OWN = (
    "Received",
    " from client.example ([127.0.0.1])\r\n\tby mx.example.test (smx) id S1T1",
)
HEADERS = (
    ("From", " Alice <alice@example.test>"),
    ("To", " bob@example.net"),
    ("Subject", " hello\r\n world"),
    ("X-Remove", " me"),
    ("Message-ID", " <1@example.test>"),
    ("Date", " Mon, 1 Dec 2025 10:00:00 +0000"),
)
BODY = b"".join(b"line %05d of the body\r\n" % i for i in range(6000))
ENVELOPE = Envelope(
    "a@example.org",
    (
        Recipient("b@example.net"),
        Recipient("c@example.net", ("NOTIFY=SUCCESS",)),
    ),
    ("SIZE=140000",),
)


class PythonMilterTests(MilterTestCase):
    """
    A python3-milter milter: every stage, every end-of-message action,
    the protocol options it negotiates, and its failures.
    """

    if not HAVE_PYMILTER:
        skip = "python3-milter for %s is not installed" % (SYSTEM_PYTHON,)

    @defer.inlineCallbacks
    def startPeer(self, kind: str = "plain") -> Iterator[Any]:
        script = os.path.join(self.directory, "peer.py")
        with open(script, "w") as f:
            f.write(PEER)
        self.peerLog = os.path.join(self.directory, "peer.log")
        yield self.startMilter(
            [SYSTEM_PYTHON, script, self.socketPath, self.peerLog, kind]
        )

    def seen(self) -> List[List[Any]]:
        """What the milter recorded (after the start)."""
        with open(self.peerLog) as f:
            return [json.loads(line) for line in f][1:]

    @defer.inlineCallbacks
    def send(
        self,
        session: Any,
        headers: Sequence[Tuple[str, str]] = HEADERS,
        body: bytes = BODY,
    ) -> Iterator[Any]:
        """A whole message after RCPT; returns the end-of-message decision."""
        self.assertEqual((yield session.data({"i": "S1T1"})), CONTINUE)
        for name, value in headers:
            decision = yield session.header(name, value)
            self.assertEqual(decision, CONTINUE)
        self.assertEqual((yield session.eoh()), CONTINUE)
        for start in range(0, len(body), 50000):
            self.assertEqual(
                (yield session.body(body[start : start + 50000])), CONTINUE
            )
        decision = yield session.endOfMessage()
        return decision

    @defer.inlineCallbacks
    def waitForClose(self, count: int = 1) -> Iterator[Any]:
        """Until the milter recorded C{count} C{close} callbacks."""
        for _ in range(300):
            if [e[0] for e in self.seen()].count("close") >= count:
                return
            yield task.deferLater(reactor, 0.01, lambda: None)
        self.fail("the milter did not see the session end: %r" % (self.seen(),))

    @defer.inlineCallbacks
    def test_everyStage(self) -> Iterator[Any]:
        """
        Every stage reaches the milter with its arguments and macros; a
        recipient is rejected with a multi-line reply; the end of the
        message brings every kind of modification, and applying them
        gives the message sendmail or Postfix would deliver.
        """
        yield self.startPeer()
        session = self.client().session("S1")
        self.assertEqual(
            (yield session.connect(clientInfo("edit"), macros("edit"))), CONTINUE
        )
        self.assertEqual(
            (yield session.helo("client.example", {"{tls_version}": "TLSv1.3"})),
            CONTINUE,
        )
        self.assertEqual(
            (
                yield session.mail(
                    "a@example.org",
                    ["SIZE=140000"],
                    {"i": "S1T1", "{auth_type}": "PLAIN"},
                )
            ),
            CONTINUE,
        )
        self.assertEqual((yield session.rcpt("b@example.net")), CONTINUE)
        rejected = yield session.rcpt("reject@example.net")
        self.assertEqual(rejected.action, "reject")
        self.assertEqual(rejected.code, 550)
        self.assertEqual(
            rejected.reply(), "550-5.1.1 no such user\r\n550 5.1.1 try 100% again"
        )
        self.assertEqual(
            (yield session.rcpt("c@example.net", ["NOTIFY=SUCCESS"])), CONTINUE
        )
        decision = yield self.send(session)
        self.assertEqual(decision.action, "accept")
        self.assertEqual(
            decision.modifications,
            (
                AddHeader("X-Added", " added value"),
                InsertHeader(0, "X-Inserted", " at the top"),
                InsertHeader(1, "X-Second", " line one\r\n\tline two"),
                ChangeHeader(1, "Subject", " changed subject"),
                DeleteHeader(1, "X-Remove"),
                ReplaceBody(b"replaced body\r\n"),
                ChangeFrom("new-sender@example.org", ("SIZE=1234",)),
                AddRecipient("added@example.net"),
                AddRecipient("added-par@example.net", ("NOTIFY=NEVER",)),
                DeleteRecipient("b@example.net"),
                Quarantine("held by the test milter"),
            ),
        )
        self.assertEqual((yield session.unknown("XFOO bar")), CONTINUE)
        yield session.quit()
        yield self.waitForClose()

        edited = applyModifications(
            (OWN,) + HEADERS, BODY, ENVELOPE, decision.modifications, ownHeaders=1
        )
        self.assertEqual(
            joinMessage(edited.headers, edited.body),
            b"X-Inserted: at the top\r\n"
            b"X-Second: line one\r\n"
            b"\tline two\r\n"
            b"Received: from client.example ([127.0.0.1])\r\n"
            b"\tby mx.example.test (smx) id S1T1\r\n"
            b"From: Alice <alice@example.test>\r\n"
            b"To: bob@example.net\r\n"
            b"Subject: changed subject\r\n"
            b"Message-ID: <1@example.test>\r\n"
            b"Date: Mon, 1 Dec 2025 10:00:00 +0000\r\n"
            b"X-Added: added value\r\n"
            b"\r\n"
            b"replaced body\r\n",
        )
        self.assertEqual(
            edited.envelope,
            Envelope(
                "new-sender@example.org",
                (
                    Recipient("c@example.net", ("NOTIFY=SUCCESS",)),
                    Recipient("added@example.net"),
                    Recipient("added-par@example.net", ("NOTIFY=NEVER",)),
                ),
                ("SIZE=1234",),
            ),
        )
        self.assertEqual(edited.quarantine, "held by the test milter")

        seen = self.seen()
        kinds = [e[0] for e in seen]
        self.assertEqual(
            kinds[:9],
            ["connect", "helo", "mail", "rcpt", "rcpt", "rcpt", "data"]
            + ["header", "header"],
        )
        connect = seen[0]
        self.assertEqual(connect[1:4], ["edit.example", 2, ["127.0.0.1", 4711]])
        self.assertEqual(
            connect[4],
            {
                "j": "mx.example.test",
                "_": "edit.example [127.0.0.1]",
                "v": "smx test",
                "{daemon_name}": "smtps",
                "{daemon_addr}": "127.0.0.1",
                "{client_addr}": "127.0.0.1",
                "{client_port}": "4711",
                "{client_name}": "edit.example",
            },
        )
        self.assertEqual(seen[1][1], "client.example")
        self.assertEqual(seen[1][2]["{tls_version}"], "TLSv1.3")
        self.assertEqual(seen[2][1:3], ["<a@example.org>", ["SIZE=140000"]])
        self.assertEqual(seen[2][3]["i"], "S1T1")
        self.assertEqual(seen[2][3]["{mail_addr}"], "a@example.org")
        self.assertEqual(seen[2][3]["{auth_type}"], "PLAIN")
        self.assertEqual(seen[3][1], "<b@example.net>")
        self.assertEqual(seen[3][3]["{rcpt_addr}"], "b@example.net")
        self.assertEqual(seen[5][1:3], ["<c@example.net>", ["NOTIFY=SUCCESS"]])
        headers = [(e[1], e[2]) for e in seen if e[0] == "header"]
        self.assertEqual(
            headers,
            [
                ("From", "Alice <alice@example.test>"),
                ("To", "bob@example.net"),
                ("Subject", "hello\n world"),
                ("X-Remove", "me"),
                ("Message-ID", "<1@example.test>"),
                ("Date", "Mon, 1 Dec 2025 10:00:00 +0000"),
            ],
        )
        chunks = [e[1] for e in seen if e[0] == "body"]
        self.assertEqual(chunks, [65535, 65535, len(BODY) - 2 * 65535])
        [eom] = [e for e in seen if e[0] == "eom"]
        self.assertEqual(eom[1:3], [len(BODY), hashlib.sha256(BODY).hexdigest()])
        self.assertEqual(eom[3]["i"], "S1T1")
        self.assertEqual(kinds[-2:], ["unknown", "close"])
        self.assertEqual(seen[-2][1], "XFOO bar")
        self.assertEqual(self.warnings(), [])

    @defer.inlineCallbacks
    def test_transactions(self) -> Iterator[Any]:
        """
        RSET aborts the milter's transaction; the next one works; a
        transaction ends without modifications; a recipient discards the
        message; a reply code at the end of the message rejects it.
        """
        yield self.startPeer()
        session = self.client().session("S1")
        yield session.connect(clientInfo("plain"), macros("plain"))
        yield session.helo("client.example")
        yield session.mail("a@example.org")
        yield session.rcpt("b@example.net")
        session.abort()
        yield session.mail("a@example.org")
        yield session.rcpt("b@example.net")
        decision = yield self.send(session, body=b"short\r\n")
        self.assertEqual(decision, CONTINUE)
        yield session.mail("a@example.org")
        self.assertEqual(
            (yield session.rcpt("discard@example.net")), Decision("discard")
        )
        self.assertEqual((yield session.data()), CONTINUE)
        self.assertEqual((yield session.endOfMessage()), CONTINUE)
        yield session.quit()
        yield self.waitForClose()
        kinds = [e[0] for e in self.seen()]
        self.assertEqual(kinds[:5], ["connect", "helo", "mail", "rcpt", "abort"])
        self.assertEqual(kinds.count("eom"), 1)
        self.assertNotIn("data", kinds[kinds.index("eom") :])

        session = self.client().session("S2")
        yield session.connect(clientInfo("rejecteom"))
        yield session.mail("a@example.org")
        yield session.rcpt("b@example.net")
        decision = yield self.send(session, body=b"spam\r\n")
        self.assertEqual(decision.reply(), "554-5.7.1 spam\r\n554 5.7.1 100% spam")
        yield session.quit()

        session = self.client().session("S3")
        yield session.connect(clientInfo("discardeom"))
        yield session.mail("a@example.org")
        yield session.rcpt("b@example.net")
        self.assertEqual((yield self.send(session, body=b"x\r\n")), Decision("discard"))
        yield session.quit()
        yield self.waitForClose(3)
        self.assertEqual(self.warnings(), [])

    @defer.inlineCallbacks
    def test_sessionDecisions(self) -> Iterator[Any]:
        """
        A milter that rejects the client at connect answers every later
        stage the same way; one that accepts it is left alone; a
        tempfail at MAIL ends that transaction only.
        """
        yield self.startPeer()
        session = self.client().session("S1")
        decision = yield session.connect(clientInfo("rejectconnect"))
        self.assertEqual(decision.reply(), "554 5.7.1 not welcome")
        self.assertEqual((yield session.helo("h")), decision)
        self.assertEqual((yield session.mail("a@b.example")), decision)
        yield session.quit()

        session = self.client().session("S2")
        self.assertEqual((yield session.connect(clientInfo("acceptconnect"))), ACCEPT)
        self.assertEqual((yield session.helo("h")), CONTINUE)
        self.assertEqual((yield session.mail("a@b.example")), CONTINUE)
        yield session.quit()

        session = self.client().session("S3")
        yield session.connect(clientInfo("tempfailmail"))
        decision = yield session.mail("a@example.org")
        self.assertEqual(
            decision.reply(), "451 4.7.1 Service unavailable - try again later"
        )
        self.assertEqual((yield session.mail("a@example.org")).action, "tempfail")
        yield session.quit()
        yield self.waitForClose(3)
        kinds = [e[0] for e in self.seen()]
        self.assertEqual(kinds.count("helo"), 0)
        self.assertEqual(kinds.count("mail"), 2)
        self.assertEqual(self.warnings(), [])

    @defer.inlineCallbacks
    def test_skipBody(self) -> Iterator[Any]:
        """
        A milter answering C{skip} to the first body chunk gets no more of
        the body, and still the end of the message.
        """
        yield self.startPeer()
        session = self.client().session("S1")
        yield session.connect(clientInfo("skipbody"))
        yield session.mail("a@example.org")
        yield session.rcpt("b@example.net")
        self.assertEqual((yield self.send(session)), CONTINUE)
        yield session.quit()
        yield self.waitForClose()
        seen = self.seen()
        self.assertEqual([e[1] for e in seen if e[0] == "body"], [65535])
        [eom] = [e for e in seen if e[0] == "eom"]
        self.assertEqual(eom[1], 65535)

    @defer.inlineCallbacks
    def test_noReplySteps(self) -> Iterator[Any]:
        """
        A milter that does not want HELO and does not reply to headers,
        the end of the header and body chunks: HELO is not sent, the
        others are sent and decided at once, and the milter gets them.
        """
        yield self.startPeer("noreply")
        session = self.client().session("S1")
        yield session.connect(clientInfo("plain"))
        protocol = session.machine.protocol
        self.assertTrue(protocol & codec.SMFIP_NOHELO)
        self.assertTrue(protocol & codec.SMFIP_NR_HDR)
        self.assertTrue(protocol & codec.SMFIP_NR_BODY)
        self.assertTrue(protocol & codec.SMFIP_NR_EOH)
        self.assertFalse(protocol & codec.SMFIP_NR_RCPT)
        self.assertEqual(self.successResultOf(session.helo("h")), CONTINUE)
        yield session.mail("a@example.org")
        yield session.rcpt("b@example.net")
        yield session.data()
        self.assertEqual(self.successResultOf(session.headers(list(HEADERS))), CONTINUE)
        self.assertEqual(self.successResultOf(session.eoh()), CONTINUE)
        self.assertEqual(self.successResultOf(session.body(BODY)), CONTINUE)
        self.assertEqual((yield session.endOfMessage()), CONTINUE)
        yield session.quit()
        yield self.waitForClose()
        seen = self.seen()
        kinds = [e[0] for e in seen]
        self.assertNotIn("helo", kinds)
        self.assertEqual(kinds.count("header"), len(HEADERS))
        [eom] = [e for e in seen if e[0] == "eom"]
        self.assertEqual(eom[1:3], [len(BODY), hashlib.sha256(BODY).hexdigest()])

    @defer.inlineCallbacks
    def test_symlist(self) -> Iterator[Any]:
        """
        A milter that asks for C{{mail_addr}} alone at MAIL gets only it
        there.
        """
        yield self.startPeer("symlist")
        session = self.client().session("S1")
        yield session.connect(clientInfo("plain"), macros("plain"))
        self.assertEqual(session.machine.macroLists.mail, ("{mail_addr}",))
        yield session.mail("a@example.org", (), {"i": "S1T1", "{auth_type}": "PLAIN"})
        yield session.quit()
        yield self.waitForClose()
        [mail] = [e for e in self.seen() if e[0] == "mail"]
        self.assertEqual(mail[3]["{mail_addr}"], "a@example.org")
        self.assertNotIn("i", mail[3])
        self.assertNotIn("{auth_type}", mail[3])
        self.assertEqual(mail[3]["j"], "mx.example.test")

    @defer.inlineCallbacks
    def test_leadingSpace(self) -> Iterator[Any]:
        """
        With C{SMFIP_HDR_LEADSPC}, header values go to the milter with
        their leading space and come back as the milter wrote them.
        """
        yield self.startPeer("leadspace")
        session = self.client().session("S1")
        yield session.connect(clientInfo("leadspace"))
        self.assertTrue(session.machine.leadingSpace)
        yield session.mail("a@example.org")
        yield session.rcpt("b@example.net")
        decision = yield self.send(
            session, headers=[("Subject", "  two spaces")], body=b"x\r\n"
        )
        self.assertEqual(
            decision.modifications, (AddHeader("X-Lead", "\tkept as sent"),)
        )
        yield session.quit()
        yield self.waitForClose()
        self.assertIn(["header", "Subject", "  two spaces"], self.seen())

    @defer.inlineCallbacks
    def test_rejectedRecipients(self) -> Iterator[Any]:
        """
        A milter that asks for rejected recipients says so, and gets them
        with the macros Postfix gives them.
        """
        yield self.startPeer("rejected")
        session = self.client().session("S1")
        yield session.connect(clientInfo("plain"))
        self.assertTrue(session.wantsRejectedRecipients)
        yield session.mail("a@example.org")
        yield session.rcpt(
            "nobody@example.net",
            (),
            rejectedRecipientMacros("550 5.1.1 unknown", "5.1.1"),
        )
        yield session.quit()
        yield self.waitForClose()
        [rcpt] = [e for e in self.seen() if e[0] == "rcpt"]
        self.assertEqual(
            {k: v for k, v in rcpt[3].items() if k.startswith("{rcpt")},
            {
                "{rcpt_addr}": "550 5.1.1 unknown",
                "{rcpt_host}": "5.1.1",
                "{rcpt_mailer}": "error",
            },
        )

    @defer.inlineCallbacks
    def test_slow(self) -> Iterator[Any]:
        """
        A milter slower than the content timeout: the default action,
        logged once.
        """
        yield self.startPeer()
        session = self.client("reject", contentTimeout=0.5).session("S1")
        yield session.connect(clientInfo("sloweom"))
        yield session.mail("a@example.org")
        yield session.rcpt("b@example.net")
        decision = yield self.send(session, body=b"x\r\n")
        self.assertEqual(decision.reply(), "550 5.5.0 Service unavailable")
        self.assertIn("no reply to eom within 0.5s", decision.failure)
        self.assertEqual((yield session.mail("a@example.org")), decision)
        yield session.quit()
        [line] = self.warnings()
        self.assertIn("milter=testmilter", line)
        self.assertIn("stage=eom", line)
        self.assertIn("default_action=reject", line)

    @defer.inlineCallbacks
    def test_killed(self) -> Iterator[Any]:
        """
        A milter killed in the middle of a message: the default action.
        """
        yield self.startPeer()
        session = self.client().session("S1")
        yield session.connect(clientInfo("sloweom"))
        yield session.mail("a@example.org")
        yield session.rcpt("b@example.net")
        d = self.send(session, body=b"x\r\n")
        yield task.deferLater(reactor, 0.3, lambda: None)
        yield self.milterProcess.stop()
        decision = yield d
        self.assertEqual(decision.action, "tempfail")
        self.assertIn("connection closed by the milter", decision.failure)
        yield session.quit()
        self.assertEqual(len(self.warnings()), 1)

    @defer.inlineCallbacks
    def test_down(self) -> Iterator[Any]:
        """
        No milter on the socket: the default action, logged.
        """
        session = self.client().session("S1")
        decision = yield session.connect(clientInfo("plain"))
        self.assertEqual(decision.action, "tempfail")
        self.assertIn("cannot connect", decision.failure)
        yield session.quit()
        [line] = self.warnings()
        self.assertIn("socket=unix:" + self.socketPath, line)


def _publicKey(path: str) -> bytes:
    """The TXT record of a key made by opendkim-genkey (its .txt file)."""
    with open(path) as f:
        return "".join(re.findall(r'"([^"]*)"', f.read())).encode("ascii")


class OpenDKIMTests(MilterTestCase):
    """
    opendkim signs a message smx passes it; the signature verifies.
    """

    if not HAVE_OPENDKIM:
        skip = "opendkim and opendkim-tools are not installed"
    elif dkim is None:
        skip = "dkimpy is not installed"

    @defer.inlineCallbacks
    def startOpenDKIM(self, canonicalization: str) -> Iterator[Any]:
        subprocess.run(
            [
                OPENDKIM_GENKEY,
                "-D",
                self.directory,
                "-d",
                "example.test",
                "-s",
                "smx",
                "-b",
                "1024",
            ],
            check=True,
        )
        self.record = _publicKey(os.path.join(self.directory, "smx.txt"))
        config = os.path.join(self.directory, "opendkim.conf")
        with open(config, "w") as f:
            f.write(
                "Syslog no\n"
                "Socket local:%s\n"
                "Mode sv\n"
                "Domain example.test\n"
                "Selector smx\n"
                "KeyFile %s\n"
                "Background no\n"
                "Canonicalization %s\n"
                "Nameservers 127.0.0.1\n"
                # a test key, wherever the test directory is (opendkim
                # refuses a key below /tmp otherwise)
                "RequireSafeKeys false\n"
                % (
                    self.socketPath,
                    os.path.join(self.directory, "smx.private"),
                    canonicalization,
                )
            )
        yield self.startMilter([OPENDKIM, "-f", "-x", config])

    def dns(self, name: bytes, timeout: int = 5) -> Optional[bytes]:
        """The one TXT record of this test's DNS."""
        if name.rstrip(b".") == b"smx._domainkey.example.test":
            return self.record
        return None

    @defer.inlineCallbacks
    def sign(self, canonicalization: str) -> Iterator[Any]:
        """
        opendkim signs mail from an internal client: the C{DKIM-Signature}
        comes back as a header inserted at the top (index 0, above smx's
        own C{Received:}, as with sendmail and Postfix); with it in place
        the message verifies, and a changed body or Subject no longer
        does.
        """
        yield self.startOpenDKIM(canonicalization)
        session = self.client().session("S1")
        yield session.connect(
            ConnectInfo("localhost", "inet", "127.0.0.1", 4711), macros("localhost")
        )
        yield session.helo("localhost")
        yield session.mail("alice@example.test", (), {"i": "S1T1"})
        yield session.rcpt("bob@example.net")
        yield session.data({"i": "S1T1"})
        for name, value in HEADERS:
            yield session.header(name, value)
        yield session.eoh()
        yield session.body(BODY)
        decision = yield session.endOfMessage()
        yield session.quit()
        self.assertIn(decision.action, ("accept", "continue"))
        [signature] = decision.modifications
        self.assertIsInstance(signature, InsertHeader)
        self.assertEqual((signature.index, signature.name), (0, "DKIM-Signature"))
        self.assertIn(
            "c=%s; d=example.test; s=smx;" % (canonicalization,), signature.value
        )

        edited = applyModifications(
            (OWN,) + HEADERS, BODY, ENVELOPE, decision.modifications
        )
        message = joinMessage(edited.headers, edited.body)
        self.assertTrue(message.startswith(b"DKIM-Signature: v=1;"))
        self.assertTrue(dkim.verify(message, dnsfunc=self.dns), message[:2000])
        for before, after in [
            (b"line 00042", b"line 00043"),
            (b"Subject: hello", b"Subject: Hello"),
        ]:
            self.assertFalse(
                dkim.verify(message.replace(before, after), dnsfunc=self.dns)
            )
        self.assertEqual(self.warnings(), [])

    def test_signRelaxed(self) -> defer.Deferred:
        """
        Relaxed header and simple body canonicalization (Debian's
        default).
        """
        return self.sign("relaxed/simple")

    def test_signSimple(self) -> defer.Deferred:
        """
        Simple canonicalization: the headers opendkim was sent and the
        ones it signed are the same bytes (folding, the space after the
        colon).
        """
        return self.sign("simple/simple")

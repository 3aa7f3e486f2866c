"""
twisted.mail.smtp's ESMTP server against smx's, on the cases that decided
smx to keep its own SMTP protocol core (doc/decisions/0001-own-smtp-
protocol-core.md).  Run by hand, not part of the test suite:

    .venv/bin/python bench/protocol_compare.py [--output FILE.md]

It starts, on loopback ports:

  - C{twisted}: a minimal server built from Twisted's classes,
    C{twisted.mail.protocols.ESMTPFactory} with C{twisted.mail.smtp.ESMTP},
    STARTTLS with a test certificate, and an C{IMessageDelivery} that
    accepts every sender and recipient and records every message it gets
    (the lines Twisted hands it, joined with CRLF, so that a bare CR or LF
    inside a line stays visible);
  - C{twisted, checks take 10 ms}: the same, with the sender and
    recipient checks answering through a Deferred after 10 ms, as a check
    against a map, DNS or a policy server does;
  - C{smx}: C{twistd -n smx} with a test configuration (the harness of the
    end-to-end tests, L{smx.test.mta}): STARTTLS with a test certificate,
    local delivery over LMTP to smx's own Maildir server.

and runs the same raw SMTP conversations against each: SMTP smuggling
(does an end-of-data sequence other than CRLF.CRLF end the message, and is
the text after it taken as a second, smuggled transaction?), STARTTLS
command injection (CVE-2011-0411: is a command sent in the same packet as
STARTTLS executed after the TLS handshake?), state kept across STARTTLS, a
PIPELINING burst, a few syntax cases, and the EHLO keywords each
advertises.  The results are printed as Markdown tables.

The certificates are made at run time (L{smx.test.certs}); everything runs
in a temporary directory that is removed at the end.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

#: the recipient domain, routed to local delivery by smx's mailertable
DOMAIN = "localhost"
SENDER = "alice@client.test"

#: a body line longer than any limit (Twisted's is 16,384 octets, RFC
#: 5321's 1,000 with the CRLF)
LONG_LINE = b"x" * 20000 + b"\r\n"

#: the end-of-data sequences tried, with how they are shown
SMUGGLING = [
    (b"\r\n.\r\n", r"`\r\n.\r\n` (the real end: control)"),
    (b"\n.\n", r"`\n.\n`"),
    (b"\r.\r", r"`\r.\r`"),
    (b"\n.\r\n", r"`\n.\r\n`"),
    (b"\r\n.\n", r"`\r\n.\n`"),
    (b"\r.\r\n", r"`\r.\r\n`"),
    (b"\r\n.\r", r"`\r\n.\r`"),
    (b"\n.\r", r"`\n.\r`"),
    (b"\r\n\x00.\r\n", r"`\r\n\x00.\r\n`"),
    (LONG_LINE, "a 20,000-octet line; the rest in the next packet"),
]

KEYWORDS = [
    "PIPELINING",
    "SIZE",
    "8BITMIME",
    "ENHANCEDSTATUSCODES",
    "CHUNKING",
    "SMTPUTF8",
    "DSN",
    "STARTTLS",
    "AUTH",
]


# -- the Twisted server (runs in a child process) ---------------------------


def serveTwisted(port: int, directory: str, cert: str, key: str, delay: float) -> None:
    """
    Run a minimal C{twisted.mail} ESMTP server on 127.0.0.1:C{port} until
    killed; every message is written to C{directory/<local part>.<n>}.
    """
    from twisted.internet import defer, reactor, ssl as tssl
    from twisted.mail import protocols, smtp
    from zope.interface import implementer

    with open(cert, "rb") as f:
        certPem = f.read()
    with open(key, "rb") as f:
        keyPem = f.read()
    context = tssl.PrivateCertificate.loadPEM(certPem + keyPem).options()
    counter = [0]

    @implementer(smtp.IMessage)
    class Recorded:
        def __init__(self, user: Any) -> None:
            self.user = user
            self.lines: List[bytes] = []

        def lineReceived(self, line: bytes) -> None:
            self.lines.append(line)

        def eomReceived(self) -> "defer.Deferred[None]":
            counter[0] += 1
            local = self.user.dest.local.decode("ascii", "replace").lower()
            path = os.path.join(directory, "%s.%d" % (local, counter[0]))
            with open(path, "wb") as f:
                f.write(b"\r\n".join(self.lines) + b"\r\n")
            return defer.succeed(None)

        def connectionLost(self) -> None:
            self.lines = []

    def later(value: Any) -> Any:
        if not delay:
            return value
        d: defer.Deferred = defer.Deferred()
        reactor.callLater(delay, d.callback, value)  # type: ignore[attr-defined]
        return d

    @implementer(smtp.IMessageDelivery)
    class AcceptEverything:
        def receivedHeader(self, helo: Any, origin: Any, recipients: Any) -> None:
            return None

        def validateFrom(self, helo: Any, origin: Any) -> Any:
            return later(origin)

        def validateTo(self, user: Any) -> Any:
            return later(lambda: Recorded(user))

    class Factory(protocols.ESMTPFactory):
        def buildProtocol(self, addr: Any) -> Any:
            p = protocols.ESMTPFactory.buildProtocol(self, addr)
            p.delivery = AcceptEverything()
            p.host = b"twisted.test"
            return p

    factory = Factory(None)
    factory.context = context
    reactor.listenTCP(port, factory, interface="127.0.0.1")  # type: ignore
    reactor.run()  # type: ignore[attr-defined]


# -- servers as seen from the harness ---------------------------------------


class Server:
    """
    One server under test: its port, how to start and stop it, and where
    its messages are.
    """

    name = ""
    port = 0
    process: Optional[subprocess.Popen] = None

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def messages(self, user: str) -> List[bytes]:
        raise NotImplementedError

    def settle(self) -> None:
        """Wait until what was accepted is delivered."""


class TwistedServer(Server):
    def __init__(self, name: str, root: str, certs: Any, delay: float) -> None:
        from smx.test.mta import freePort

        self.name = name
        self.directory = os.path.join(root, "twisted-%d" % (int(delay * 1000),))
        os.makedirs(self.directory)
        self.port = freePort()
        self.certs = certs
        self.delay = delay

    def start(self) -> None:
        from smx.test.mta import canConnect, waitFor

        argv = [
            sys.executable,
            os.path.abspath(__file__),
            "--serve-twisted",
            "--port",
            str(self.port),
            "--directory",
            self.directory,
            "--cert",
            self.certs.serverCert,
            "--key",
            self.certs.serverKey,
            "--delay",
            str(self.delay),
        ]
        self.log = open(os.path.join(self.directory + ".log"), "wb")
        self.process = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT)
        if not waitFor(lambda: canConnect(self.port), 10):
            raise RuntimeError("the Twisted server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None
            self.log.close()

    def messages(self, user: str) -> List[bytes]:
        out = []
        names = [n for n in os.listdir(self.directory) if n.split(".")[0] == user]
        for n in sorted(names, key=lambda n: int(n.split(".")[1])):
            with open(os.path.join(self.directory, n), "rb") as f:
                out.append(f.read())
        return out


class _Cleanups:
    """What L{smx.test.mta.MTA} takes as its test case."""

    def __init__(self) -> None:
        self.cleanups: List[Tuple[Callable, tuple]] = []

    def addCleanup(self, f: Callable, *args: Any) -> None:
        self.cleanups.append((f, args))

    def run(self) -> None:
        while self.cleanups:
            f, args = self.cleanups.pop()
            f(*args)


class SmxServer(Server):
    name = "smx"

    def __init__(self, root: str, certs: Any, users: List[str]) -> None:
        from smx.test.mta import MTA, configuration

        self.cleanups = _Cleanups()
        self.mta = MTA(self.cleanups, os.path.join(root, "smx"))
        self.port = self.mta.port
        tls = "tls { cert_file = %s; key_file = %s; }" % (
            certs.serverCert,
            certs.serverKey,
        )
        self.mta.write(
            configuration(self.mta.port, smtps=tls),
            mt="%s lmtp:\n" % (DOMAIN,),
            aliases="".join("%s: local:\n" % (u,) for u in users),
            access="",
        )

    def start(self) -> None:
        self.mta.start()

    def stop(self) -> None:
        self.cleanups.run()

    def messages(self, user: str) -> List[bytes]:
        return self.mta.maildir(user)

    def settle(self) -> None:
        # wait until the Maildirs stop changing (LMTP delivery is queued)
        def count() -> int:
            base = self.mta.path("mail")
            n = 0
            for top, _, files in os.walk(base):
                if top.endswith("/new"):
                    n += len(files)
            return n

        last, since = -1, time.monotonic()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            now = count()
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since > 2.0:
                return
            time.sleep(0.1)


# -- a raw SMTP client ------------------------------------------------------


class Session:
    """
    A blocking SMTP conversation on a raw socket: send bytes exactly as
    given, read replies.
    """

    def __init__(self, port: int) -> None:
        self.sock: Any = socket.create_connection(("127.0.0.1", port), 5)
        self.buffer = b""
        self.greeting = self.reply()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self, timeout: float) -> bool:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except (socket.timeout, ssl.SSLError, OSError):
            return False
        if not data:
            return False
        self.buffer += data
        return True

    def reply(self, timeout: float = 5.0) -> Optional[Tuple[int, List[str]]]:
        """
        The next complete reply, or C{None} if none comes in C{timeout}.
        """
        lines: List[str] = []
        deadline = time.monotonic() + timeout
        while True:
            while b"\r\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\r\n", 1)
                text = line.decode("utf-8", "replace")
                lines.append(text)
                if len(text) < 4 or text[3] != "-":
                    try:
                        code = int(text[:3])
                    except ValueError:
                        code = 0
                    return code, lines
            left = deadline - time.monotonic()
            if left <= 0 or not self._fill(left):
                return None

    def replies(self, quiet: float = 0.7) -> List[Tuple[int, List[str]]]:
        """
        Every reply that arrives until the server is quiet for C{quiet}
        seconds.
        """
        out = []
        while True:
            r = self.reply(quiet)
            if r is None:
                return out
            out.append(r)

    def command(self, line: str) -> Optional[Tuple[int, List[str]]]:
        self.send(line.encode("utf-8") + b"\r\n")
        return self.reply()

    def startTLS(self, certs: Any) -> None:
        context = ssl.create_default_context(cafile=certs.caFile)
        self.sock = context.wrap_socket(self.sock, server_hostname="localhost")

    def close(self) -> None:
        try:
            self.send(b"QUIT\r\n")
            self.reply(1.0)
        except OSError:
            pass
        self.sock.close()


def codes(replies: List[Tuple[int, List[str]]]) -> str:
    return " ".join(str(c) for c, _ in replies) or "(none)"


def firstText(reply: Optional[Tuple[int, List[str]]]) -> str:
    if reply is None:
        return "(no reply)"
    return reply[1][-1]


# -- the cases --------------------------------------------------------------


def ehloKeywords(server: Server) -> List[str]:
    s = Session(server.port)
    r = s.command("EHLO client.test")
    s.close()
    assert r is not None and r[0] == 250, r
    return [line[4:] for line in r[1][1:]]


def smuggle(server: Server, user: str, ending: bytes) -> Dict[str, Any]:
    """
    One transaction whose body contains C{ending} followed by a complete
    second transaction, all in one packet after the 354.  With C{ending}
    L{LONG_LINE}, the body is a line longer than any limit, sent alone
    first, and the second transaction follows in the next packet.
    """
    s = Session(server.port)
    s.command("EHLO client.test")
    s.command("MAIL FROM:<%s>" % (SENDER,))
    s.command("RCPT TO:<%s@%s>" % (user, DOMAIN))
    data = s.command("DATA")
    if data is None or data[0] != 354:
        s.close()
        return {"replies": "DATA: %s" % (firstText(data),)}
    second = (
        b"MAIL FROM:<mallory@client.test>\r\nRCPT TO:<%s@%s>\r\n"
        b"DATA\r\nSubject: smuggled\r\n\r\nsecond part\r\n.\r\n"
        % (user.encode(), DOMAIN.encode())
    )
    early: List[Tuple[int, List[str]]] = []
    if ending is LONG_LINE:
        s.send(b"Subject: first\r\n\r\nfirst part\r\n" + LONG_LINE)
        early = s.replies()
        s.send(second)
    else:
        s.send(b"Subject: first\r\n\r\nfirst part" + ending + second)
    replies = early + s.replies()
    s.close()
    return {"replies": replies}


def judgeSmuggling(
    result: Dict[str, Any], messages: List[bytes], control: bool = False
) -> str:
    """
    What became of the first transaction and of the text after END: a
    second, separate message (smuggled, unless END is the real end of
    data), one message holding both (and whether bare CR, LF or NUL went
    into it as received), or a refusal.  The reply codes to the packet
    follow in parentheses.
    """
    replies = result["replies"]
    if isinstance(replies, str):
        return replies
    separate = [m for m in messages if b"second part" in m and b"first part" not in m]
    together = [m for m in messages if b"second part" in m and b"first part" in m]
    if separate and control:
        return "2 messages, as sent (%s)" % (codes(replies),)
    if separate:
        return "**smuggled**: %d message(s) (%s)" % (len(messages), codes(replies))
    if together:
        body = together[0].split(b"first part", 1)[1]
        bare = []
        if b"\n" in body.replace(b"\r\n", b""):
            bare.append("bare LF")
        if b"\r" in body.replace(b"\r\n", b""):
            bare.append("bare CR")
        if b"\x00" in body:
            bare.append("NUL")
        kept = (", %s kept" % (" and ".join(bare),)) if bare else ""
        return "one message, the text after END inside it%s (%s)" % (
            kept,
            codes(replies),
        )
    if not messages:
        last = replies[-1] if replies else None
        if last is not None and last[0] >= 400:
            return "rejected: `%s`" % (firstText(last),)
        return "nothing delivered (%s)" % (codes(replies),)
    if control:
        return "**%d message(s); the pipelined second transaction failed** (%s)" % (
            len(messages),
            codes(replies),
        )
    return "%d message(s) without the text after END (%s)" % (
        len(messages),
        codes(replies),
    )


def starttlsInjection(server: Server, certs: Any) -> str:
    """
    CVE-2011-0411: C{STARTTLS\\r\\nRSET\\r\\n} in one packet.  Is RSET
    answered after the handshake (it was executed)?
    """
    s = Session(server.port)
    s.command("EHLO client.test")
    s.send(b"STARTTLS\r\nRSET\r\n")
    r = s.reply()
    if r is None or r[0] != 220:
        s.close()
        return "STARTTLS: %s" % (firstText(r),)
    plaintext = s.buffer
    s.buffer = b""
    s.startTLS(certs)
    unsolicited = s.replies(1.0)
    s.close()
    if plaintext:
        return "**executed**: %r in clear after 220" % (plaintext,)
    if unsolicited:
        return "**executed**: `%s` arrived inside TLS unasked" % (
            firstText(unsolicited[0]),
        )
    return "discarded (nothing answered)"


def starttlsState(server: Server, certs: Any) -> str:
    """
    RFC 3207 §4.2: after STARTTLS the server forgets what the client said
    before.  MAIL before STARTTLS, RCPT after it (without a new EHLO and
    MAIL): accepted means the old state was kept.
    """
    s = Session(server.port)
    s.command("EHLO client.test")
    s.command("MAIL FROM:<%s>" % (SENDER,))
    r = s.command("STARTTLS")
    if r is None or r[0] != 220:
        s.close()
        return "STARTTLS: %s" % (firstText(r),)
    s.startTLS(certs)
    r = s.command("RCPT TO:<t@%s>" % (DOMAIN,))
    s.close()
    if r is not None and r[0] == 250:
        return "**kept**: RCPT after STARTTLS got `%s`" % (firstText(r),)
    return "discarded: RCPT after STARTTLS got `%s`" % (firstText(r),)


def pipelining(server: Server, user: str) -> str:
    """
    MAIL, two RCPTs (C{USER1}, C{USER2}) and DATA in one packet; then
    the message.
    """
    s = Session(server.port)
    s.command("EHLO client.test")
    s.send(
        (
            "MAIL FROM:<%s>\r\nRCPT TO:<%s1@%s>\r\nRCPT TO:<%s2@%s>\r\nDATA\r\n"
            % (SENDER, user, DOMAIN, user, DOMAIN)
        ).encode()
    )
    replies = s.replies()
    text = codes(replies)
    if replies and replies[-1][0] == 354:
        s.send(b"Subject: pipelined\r\n\r\nhello\r\n.\r\n")
        end = s.reply()
        text += " / end of data: %s" % (end[0] if end else "(none)",)
    elif any(c == 503 for c, _ in replies):
        bad = [t for c, t in replies if c == 503][0][-1]
        text += " (`%s`)" % (bad,)
    s.close()
    return text


SYNTAX = [
    ("NOOP (RFC 5321 §4.5.1: every server)", "NOOP"),
    ("VRFY (RFC 5321 §4.5.1: every server)", "VRFY postmaster"),
    ("MAIL FROM without angle brackets", "MAIL FROM:%s" % (SENDER,)),
    ("MAIL FROM with a space after the colon", "MAIL FROM: <%s>" % (SENDER,)),
    (
        "RCPT TO with a source route, `<@relay.test:u@localhost>`",
        "RCPT TO:<@relay.test:u@%s>" % (DOMAIN,),
    ),
    ("MAIL FROM with an unknown parameter", "MAIL FROM:<%s> FOO=BAR" % (SENDER,)),
    (
        "MAIL FROM with SIZE above any limit",
        "MAIL FROM:<%s> SIZE=999999999999" % (SENDER,),
    ),
    ("a command line ending in bare LF", None),
]


def syntax(server: Server, line: Optional[str]) -> str:
    s = Session(server.port)
    s.command("EHLO client.test")
    if line is None:
        s.send(b"NOOP\n")
        r = s.reply(1.5)
        s.close()
        return "no reply (waits for CRLF)" if r is None else "`%s`" % (firstText(r),)
    if line.startswith("RCPT"):
        s.command("MAIL FROM:<%s>" % (SENDER,))
    r = s.command(line)
    s.close()
    return "`%s`" % (firstText(r),)


# -- the run ----------------------------------------------------------------


def table(header: List[str], rows: List[List[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
    return "\n".join(out)


def run(output: Optional[str]) -> str:
    import twisted

    from smx import __version__ as smxVersion
    from smx.test.certs import makeCertificates

    root = tempfile.mkdtemp(prefix="smx-compare-")
    os.chmod(root, 0o755)
    certs = makeCertificates(os.path.join(root, "certs"))
    users = ["s%d" % (i,) for i in range(len(SMUGGLING))] + ["p1", "p2", "t"]
    servers: List[Server] = [
        TwistedServer("twisted.mail ESMTP", root, certs, 0.0),
        TwistedServer("twisted.mail ESMTP, checks take 10 ms", root, certs, 0.01),
        SmxServer(root, certs, users),
    ]
    try:
        for server in servers:
            server.start()
        results: Dict[str, Dict[str, Any]] = {}
        for server in servers:
            r: Dict[str, Any] = {}
            r["ehlo"] = ehloKeywords(server)
            r["smuggle"] = [
                smuggle(server, "s%d" % (i,), ending)
                for i, (ending, _) in enumerate(SMUGGLING)
            ]
            r["injection"] = starttlsInjection(server, certs)
            r["state"] = starttlsState(server, certs)
            r["pipelining"] = pipelining(server, "p")
            r["syntax"] = [syntax(server, line) for _, line in SYNTAX]
            results[server.name] = r
        for server in servers:
            server.settle()
        names = [s.name for s in servers]
        out = []
        out.append(
            "Run %s on %s; Python %s, Twisted %s, smx %s.\n"
            % (
                datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
                platform.platform(),
                platform.python_version(),
                twisted.__version__,
                smxVersion,
            )
        )
        out.append("### EHLO keywords\n")
        rows = []
        advertised = {
            n: {k.split()[0].upper(): k for k in results[n]["ehlo"]} for n in names
        }
        others = sorted({k for n in names for k in advertised[n]} - set(KEYWORDS))
        for kw in KEYWORDS + others:
            rows.append(
                [kw]
                + [
                    ("`%s`" % advertised[n][kw]) if kw in advertised[n] else "—"
                    for n in names
                ]
            )
        out.append(table(["keyword"] + names, rows))
        out.append(
            "\n### SMTP smuggling: the body holds END, then a whole second transaction\n"
        )
        rows = []
        for i, (_, shown) in enumerate(SMUGGLING):
            row = [shown]
            for server in servers:
                row.append(
                    judgeSmuggling(
                        results[server.name]["smuggle"][i],
                        server.messages("s%d" % (i,)),
                        control=(i == 0),
                    )
                )
            rows.append(row)
        out.append(table(["END"] + names, rows))
        out.append("\n### STARTTLS\n")
        rows = [
            ["`STARTTLS\\r\\nRSET\\r\\n` in one packet (CVE-2011-0411)"]
            + [results[n]["injection"] for n in names],
            ["MAIL before STARTTLS, RCPT after it (RFC 3207 §4.2)"]
            + [results[n]["state"] for n in names],
        ]
        out.append(table(["case"] + names, rows))
        out.append("\n### PIPELINING: MAIL, RCPT, RCPT, DATA in one packet\n")
        rows = [["replies"] + [results[n]["pipelining"] for n in names]]
        rows.append(
            ["messages delivered"]
            + [str(len(s.messages("p1")) + len(s.messages("p2"))) for s in servers]
        )
        out.append(table([""] + names, rows))
        out.append("\n### Command syntax (RFC 5321 §4.1)\n")
        rows = [
            [what] + [results[n]["syntax"][i] for n in names]
            for i, (what, _) in enumerate(SYNTAX)
        ]
        out.append(table(["command"] + names, rows))
        text = "\n".join(out) + "\n"
    finally:
        for server in servers:
            try:
                server.stop()
            except Exception as e:  # report, and stop the others
                sys.stderr.write("stopping %s: %s\n" % (server.name, e))
        shutil.rmtree(root, True)
    if output:
        with open(output, "w") as f:
            f.write(text)
    return text


def main(argv: List[str]) -> int:
    p = argparse.ArgumentParser(
        prog="bench/protocol_compare.py",
        description="Compare twisted.mail's ESMTP server with smx's.",
    )
    p.add_argument("--output", help="also write the Markdown tables here")
    p.add_argument("--serve-twisted", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--directory", help=argparse.SUPPRESS)
    p.add_argument("--cert", help=argparse.SUPPRESS)
    p.add_argument("--key", help=argparse.SUPPRESS)
    p.add_argument("--delay", type=float, default=0.0, help=argparse.SUPPRESS)
    options = p.parse_args(argv)
    if options.serve_twisted:
        serveTwisted(
            options.port, options.directory, options.cert, options.key, options.delay
        )
        return 0
    sys.stdout.write(run(options.output))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

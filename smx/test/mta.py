# -*- test-case-name: smx.test.test_integration_e2e,smx.test.test_mta -*-
"""
A small harness for end-to-end tests: smx run the way a user runs it.

    from smx.test.mta import MTA, freePort, tempDirectory

    root = tempDirectory(self)             # removed by a cleanup
    mta = MTA(self, os.path.join(root, "smx"))
    mta.write(configuration(mta.port, smtpc="remote_port = 2526;"),
              mt="localhost lmtp:\\n", aliases="root: local:\\n",
              access="cltaddr:127.0.0.1 relay\\n")
    mta.start()                            # twistd -n smx, waits for SMTP
    ... swaks / smtplib against 127.0.0.1:mta.port ...
    mta.kill()                             # kill -9 (or mta.stop(): SIGTERM)
    mta.log()                              # what twistd wrote (str)

Everything listens on loopback addresses and free unprivileged ports.  The
child process is C{twistd -n --pidfile= smx --config DIR/smx.conf} with the
C{twistd} next to C{sys.executable}; its standard output and error go to
C{DIR/twistd.log}.  Maps are built with C{smx createmap}, as a user
builds them.  A test case's cleanup stops whatever was started.

Helpers that wait for something the test's own reactor must serve (a DNS
server started with L{smx.maps.test.dnsserver.startDNSServer}) are the
Deferred-returning ones: L{until}, L{runCommand}.
"""

from __future__ import annotations

import os
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, List, Optional, Sequence, Tuple

from twisted.trial.unittest import SkipTest, TestCase

from twisted.internet import defer, reactor, utils
from twisted.internet.task import deferLater

BIN = os.path.dirname(sys.executable)
TWISTD = os.path.join(BIN, "twistd")
SMX = os.path.join(BIN, "smx")
SMTP_SINK = "/usr/sbin/smtp-sink"
DOVECOT = "/usr/sbin/dovecot"
SWAKS = "/usr/bin/swaks"


def freePort(address: str = "127.0.0.1") -> int:
    """
    A TCP port that is free on C{address} right now.
    """
    s = socket.socket()
    try:
        s.bind((address, 0))
        return s.getsockname()[1]
    finally:
        s.close()


def canConnect(port: int, address: str = "127.0.0.1") -> bool:
    """
    Whether something accepts TCP connections on C{address:port}.
    """
    try:
        socket.create_connection((address, port), 0.2).close()
        return True
    except OSError:
        return False


def waitFor(check: Callable[[], Any], timeout: float = 5.0) -> bool:
    """
    Poll C{check} (blocking) until it is true or C{timeout} passes.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return bool(check())


def processStat(pid: int) -> Optional[List[bytes]]:
    """
    The fields of C{/proc/PID/stat} after the command (the state first),
    or C{None} if there is no such process.
    """
    try:
        with open("/proc/%d/stat" % (pid,), "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # the command may contain spaces and parentheses: the state follows ")"
    return stat[stat.rfind(b")") + 2 :].split()


def processIdentity(pid: int) -> Optional[Tuple[int, int]]:
    """
    C{(pid, start time)} of a live process: unlike the pid alone, which the
    kernel hands out again (this machine wraps at 32768), it names one
    process for good.  C{None} if there is no such process.
    """
    fields = processStat(pid)
    if fields is None or len(fields) < 20:
        return None
    return (pid, int(fields[19]))


def signalIdentified(identity: Optional[Tuple[int, int]], signum: int) -> None:
    """
    Send C{signum} to the process L{processIdentity} named, if it is still
    that process: never to another that got its pid since.
    """
    if identity is None or processIdentity(identity[0]) != identity:
        return
    try:
        os.kill(identity[0], signum)
    except OSError:
        pass


def signalPidFile(path: str, command: str, signum: int) -> None:
    """
    Send C{signum} to the process whose pid C{path} holds, if that process
    runs C{command} (the pid file of a program that died may name a
    process started since).
    """
    try:
        with open(path) as f:
            pid = int(f.read().strip())
        with open("/proc/%d/comm" % (pid,)) as f:
            if f.read().strip() != command:
                return
        os.kill(pid, signum)
    except (OSError, ValueError):
        pass


@defer.inlineCallbacks
def until(check: Callable[[], Any], timeout: float = 5.0, interval: float = 0.05):
    """
    Poll C{check} without blocking the reactor.

    @return: a L{Deferred} firing with C{True} once C{check()} is true, or
        C{False} after C{timeout} seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        yield deferLater(reactor, interval, lambda: None)
    return bool(check())


def runCommand(
    argv: Sequence[str], stdin: Optional[bytes] = None
) -> "defer.Deferred[Tuple[bytes, bytes, int]]":
    """
    Run a program without blocking the reactor.

    @return: a L{Deferred} firing with C{(stdout, stderr, exit status)}.
    """
    if stdin is None:
        return utils.getProcessOutputAndValue(argv[0], list(argv[1:]), env=os.environ)
    d = defer.Deferred()  # type: defer.Deferred[Tuple[bytes, bytes, int]]

    def run() -> None:
        p = subprocess.run(argv, input=stdin, capture_output=True, timeout=30)
        reactor.callFromThread(d.callback, (p.stdout, p.stderr, p.returncode))

    reactor.callInThread(run)
    return d


def tempDirectory(testCase: Any, prefix: str = "smx-e2e-") -> str:
    """
    A short directory under the system's temporary directory, mode 0755
    (Unix socket names are limited to 108 bytes, and smtp-sink and Dovecot
    run as nobody), removed by a cleanup of C{testCase}.
    """
    path = tempfile.mkdtemp(prefix=prefix)
    os.chmod(path, 0o755)
    testCase.addCleanup(shutil.rmtree, path, True)
    return path


def dropInPlugins(root: str, **modules: str) -> str:
    """
    Write each of C{modules} (module name -> source) as a drop-in plugin
    module under C{ROOT/py/smx/plugins}, as an administrator would put a
    pmilter on the path.

    @return: a C{PYTHONPATH} with C{ROOT/py} ahead of the current one.
    """
    plugins = os.path.join(root, "py", "smx", "plugins")
    os.makedirs(plugins, exist_ok=True)
    for name, source in modules.items():
        with open(os.path.join(plugins, name + ".py"), "w") as f:
            f.write(source)
    return os.pathsep.join([os.path.join(root, "py"), os.environ.get("PYTHONPATH", "")])


def sendUntilDot(
    testCase: Any, port: int, sender: str, recipient: str, message: bytes
) -> smtplib.SMTP:
    """
    One transaction on 127.0.0.1:C{port} up to and including the final
    dot of C{message} (CRLF lines, without the dot), its reply not read
    yet: for what happens to a message whose commit is under way.  The
    connection is closed by a cleanup of C{testCase}.
    """
    c = smtplib.SMTP("127.0.0.1", port, timeout=10)
    testCase.addCleanup(c.close)
    c.ehlo("client.test")
    testCase.assertEqual(c.mail(sender)[0], 250)
    testCase.assertEqual(c.rcpt(recipient)[0], 250)
    c.putcmd("data")
    testCase.assertEqual(c.getreply()[0], 354)
    c.send(message + b".\r\n")
    return c


def configuration(
    port: int,
    smtps: str = "",
    qmgr: str = "",
    smar: str = "",
    smtpc: str = "",
    lmtpd: bool = True,
    hostname: str = "smx.test",
    retry: str = "1s",
) -> str:
    """
    The text of an smx.conf with the queue in its own directory, written
    the way the seed describes (§5), the extra options of each section
    given as text.
    """
    text = """\
hostname = %(hostname)s;
CDB_base_directory = "cdb/";

smtps {
    daemon_address = { "127.0.0.1:%(port)d" };
    flags = { 8bitmime, access };
    io_timeout = 30s;
    %(smtps)s
}

qmgr {
    control_socket = "qmgr.ctl";
    retry_min_delay = %(retry)s;
    retry_max_delay = %(retry)s;
    %(qmgr)s
    DEFEDB { base_directory = "defedb"; }
}

smar {
    mailertable { name = "mt"; }
    aliases { name = "aliases.db"; flags = { localpart, preserve_domain }; }
    access { name = "access.db"; }
    %(smar)s
}

smtpc {
    LMTP_socket = "lmtpsock";
    io_timeout = 30s;
    %(smtpc)s
}
""" % dict(
        hostname=hostname,
        port=port,
        smtps=smtps,
        qmgr=qmgr,
        smar=smar,
        smtpc=smtpc,
        retry=retry,
    )
    if lmtpd:
        text += '\nlmtpd {\n    socket = "lmtpsock";\n    maildir_base = "mail";\n}\n'
    return text


class MTA:
    """
    One smx instance in its own directory, run as a child process.

    @ivar directory: the queue and configuration directory.
    @ivar port: the SMTP port of SMTPS (on 127.0.0.1).
    @ivar process: the running C{subprocess.Popen}, or C{None}.
    """

    def __init__(self, testCase: Any, directory: str, port: int = 0) -> None:
        self.testCase = testCase
        self.directory = directory
        os.makedirs(directory, exist_ok=True)
        os.chmod(directory, 0o755)
        self.port = port or freePort()
        self.process = None  # type: Optional[subprocess.Popen]
        self.config = os.path.join(directory, "smx.conf")
        self.logFile = os.path.join(directory, "twistd.log")
        testCase.addCleanup(self.kill)

    def path(self, *names: str) -> str:
        """
        A path in the directory of this instance.
        """
        return os.path.join(self.directory, *names)

    def write(
        self,
        config: str,
        mt: str = "localhost lmtp:\n",
        aliases: Optional[str] = None,
        access: Optional[str] = None,
    ) -> None:
        """
        Write the configuration and the mailertable, and build the aliases
        and access maps (C{aliases.db}, C{access.db}) with C{smx createmap}.
        """
        with open(self.config, "w") as f:
            f.write(config)
        with open(self.path("mt"), "w") as f:
            f.write(mt)
        if aliases is not None:
            self.createmap("aliases", aliases, "-a")
        if access is not None:
            self.createmap("access", access)

    def createmap(self, name: str, text: str, *options: str) -> None:
        """
        Build C{name.db} from C{text} with C{smx createmap} (the text is kept
        in the file C{name}).
        """
        with open(self.path(name), "w") as f:
            f.write(text)
        argv = [SMX, "createmap"] + list(options)
        argv += ["-F", self.path(name + ".db"), "-i", self.path(name)]
        p = subprocess.run(argv, capture_output=True, timeout=30)
        if p.returncode != 0:
            raise RuntimeError("smx createmap %s failed: %r" % (name, p.stderr))

    def start(
        self,
        timeout: float = 10.0,
        options: Sequence[str] = (),
        environ: Optional[dict] = None,
    ) -> None:
        """
        Start C{twistd -n smx} and wait until its SMTP port answers.

        @param options: more options of C{twistd smx} (C{--smtps-options}).
        @param environ: variables to add to its environment.
        """
        assert self.process is None, "already running"
        argv = [TWISTD, "-n", "--pidfile=", "smx", "--config", self.config]
        argv += list(options)
        env = dict(os.environ, **environ) if environ else None
        out = open(self.logFile, "ab")
        try:
            self.process = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, cwd=self.directory, env=env
            )
        finally:
            out.close()
        if not waitFor(self._ready, timeout):
            self.kill()
            raise RuntimeError("smx did not start; its log:\n" + self.log())

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(
                "smx exited with status %s; its log:\n%s"
                % (self.process.returncode, self.log())
            )
        return canConnect(self.port)

    def stop(self, timeout: float = 10.0) -> Optional[int]:
        """
        Stop smx with SIGTERM and wait for it to exit.

        @return: its exit status, or C{None} if it was not running.
        """
        return self._signal(signal.SIGTERM, timeout)

    def kill(self) -> Optional[int]:
        """
        Stop smx with SIGKILL (C{kill -9}).
        """
        return self._signal(signal.SIGKILL, 10.0)

    def _signal(self, sig: int, timeout: float) -> Optional[int]:
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def log(self) -> str:
        """
        Everything smx wrote to its standard output and error so far.
        """
        try:
            with open(self.logFile, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def logWith(self, *texts: str, timeout: float = 10.0) -> str:
        """
        The log once it contains every one of C{texts} (or, after
        C{timeout} seconds, as it is): smx writes the records of a reactor
        turn at its end, so a client may have its last reply before the
        records of the turn that sent the reply before it are in the file.
        """
        waitFor(lambda: all(text in self.log() for text in texts), timeout)
        return self.log()

    def records(self, component: str) -> List[str]:
        """
        The App. C.2 records of one component (C{smtps}, C{smtpc},
        C{qmgr}, ...) in the log, without the Twisted time stamp prefix.
        """
        tag = "[smx.%s#" % (component,)
        out = []
        for line in self.log().splitlines():
            if tag in line:
                out.append(line.split("] ", 1)[1])
        return out

    def smx(self, *args: str) -> "defer.Deferred[Tuple[bytes, bytes, int]]":
        """
        Run C{smx ARGS -f DIR/smx.conf -q DIR} (e.g. C{mailq --json})
        without blocking the reactor.
        """
        return runCommand(
            [SMX] + list(args) + ["-f", self.config, "-q", self.directory]
        )

    def maildir(self, user: str) -> List[bytes]:
        """
        The messages in C{DIR/mail/USER/Maildir/new} (smx's own lmtpd).
        """
        return readMaildir(self.path("mail", user, "Maildir"))


def readMaildir(maildir: str) -> List[bytes]:
    """
    The contents of the files in C{maildir/new}, oldest name first.
    """
    new = os.path.join(maildir, "new")
    out = []
    try:
        names = sorted(os.listdir(new))
    except OSError:
        return []
    for name in names:
        with open(os.path.join(new, name), "rb") as f:
            out.append(f.read())
    return out


class SmtpSink:
    """
    Postfix's C{smtp-sink} as a remote MTA that stores each transaction in
    its own file.

    @ivar port: its port.
    @ivar address: its loopback address.
    """

    def __init__(
        self, testCase: Any, directory: str, address: str = "127.0.0.2", port: int = 0
    ) -> None:
        self.testCase = testCase
        self.dump = os.path.join(directory, "sink")
        os.makedirs(self.dump, exist_ok=True)
        os.chmod(self.dump, 0o777)
        self.address = address
        self.port = port or freePort(address)
        self.process = None  # type: Optional[subprocess.Popen]
        testCase.addCleanup(self.stop)

    def start(self, *options: str) -> None:
        """
        Start C{smtp-sink OPTIONS ADDRESS:PORT} and wait until it answers.
        """
        argv = [SMTP_SINK]
        if os.getuid() == 0:
            argv += ["-u", "nobody"]
        argv += ["-d", self.dump + "/%H%M%S."] + list(options)
        argv += ["%s:%d" % (self.address, self.port), "256"]
        self.process = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        if not waitFor(lambda: canConnect(self.port, self.address)):
            self.stop()
            raise RuntimeError("smtp-sink did not start")

    def stop(self) -> None:
        """
        Stop it (if it runs).
        """
        process, self.process = self.process, None
        if process is not None:
            process.kill()
            process.wait()

    def messages(self) -> List[bytes]:
        """
        The transactions received so far (each file's bytes).
        """
        out = []
        for name in sorted(os.listdir(self.dump)):
            try:
                with open(os.path.join(self.dump, name), "rb") as f:
                    out.append(f.read())
            except OSError:
                pass
        return out

    def containing(self, marker: bytes) -> List[bytes]:
        """
        The transactions received so far that contain C{marker} (put it at
        the end of a message body: smtp-sink writes its file while the
        message arrives).
        """
        return [m for m in self.messages() if marker in m]


DOVECOT_CONF = """\
protocols = lmtp
base_dir = @ROOT@/run
state_dir = @ROOT@/state
log_path = @ROOT@/dovecot.log
ssl = no
listen = 127.0.0.1
mail_location = maildir:@ROOT@/mail/%n/Maildir
default_internal_user = nobody
default_login_user = nobody
default_internal_group = nogroup
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=@ROOT@/mail/%n
}
passdb {
  driver = static
  args = nopassword=y
}
service lmtp {
  unix_listener @ROOT@/lmtp {
    mode = 0666
  }
}
"""


class Dovecot:
    """
    A stand-alone Dovecot LMTP server (see /work/shared/PEERS.md).

    @ivar socket: its LMTP socket.
    """

    def __init__(
        self, testCase: Any, root: str, tcp: Optional[Tuple[str, int]] = None
    ) -> None:
        """
        @param tcp: C{(address, port)} of an LMTP listener on TCP as well
            (C{inet_listener lmtp}).
        """
        self.root = root
        self.socket = os.path.join(root, "lmtp")
        self.tcp = tcp
        testCase.addCleanup(self.stop)
        self.started = False

    @staticmethod
    def available() -> bool:
        """
        Whether Dovecot (Debian package dovecot-lmtpd) is installed.
        """
        return os.access(DOVECOT, os.X_OK) and shutil.which("doveconf") is not None

    def start(self) -> None:
        """
        Start it and wait for its socket.
        """
        os.makedirs(self.root, exist_ok=True)
        os.chmod(self.root, 0o755)
        mail = os.path.join(self.root, "mail")
        os.makedirs(mail, exist_ok=True)
        if os.getuid() == 0:
            shutil.chown(mail, "nobody", "nogroup")
        conf = os.path.join(self.root, "dovecot.conf")
        text = DOVECOT_CONF.replace("@ROOT@", self.root)
        if self.tcp is not None:
            listener = "  inet_listener lmtp {\n    address = %s\n    port = %d\n  }\n"
            text = text.replace(
                "    mode = 0666\n  }\n", "    mode = 0666\n  }\n" + listener % self.tcp
            )
        with open(conf, "w") as f:
            f.write(text)
        subprocess.run([DOVECOT, "-c", conf], check=True, timeout=10)
        self.started = True
        if not waitFor(lambda: os.path.exists(self.socket)):
            raise RuntimeError("dovecot did not create its LMTP socket")
        tcp = self.tcp
        if tcp is not None and not waitFor(lambda: canConnect(tcp[1], tcp[0])):
            raise RuntimeError("dovecot does not listen on %s:%d" % tcp)

    def stop(self) -> None:
        """
        Stop it (if it runs).
        """
        if not self.started:
            return
        self.started = False
        signalPidFile(
            os.path.join(self.root, "run", "master.pid"), "dovecot", signal.SIGTERM
        )

    def maildir(self, user: str) -> List[bytes]:
        """
        The messages delivered to C{user}.
        """
        return readMaildir(os.path.join(self.root, "mail", user, "Maildir"))


def swaks(port: int, *args: str) -> "defer.Deferred[Tuple[bytes, bytes, int]]":
    """
    Run C{swaks --server 127.0.0.1:PORT ARGS} without blocking the reactor.
    """
    return runCommand([SWAKS, "--server", "127.0.0.1:%d" % (port,)] + list(args))


def missing(*programs: str) -> Optional[str]:
    """
    The reason to skip a test if one of C{programs} is not installed.
    """
    packages = {
        SMTP_SINK: "postfix",
        SWAKS: "swaks",
        DOVECOT: "dovecot-lmtpd",
    }
    for program in programs:
        if not os.access(program, os.X_OK):
            return "%s (Debian package %s) is not installed" % (
                program,
                packages.get(program, "?"),
            )
    return None


__all__ = [
    "MTA",
    "SmtpSink",
    "Dovecot",
    "configuration",
    "freePort",
    "canConnect",
    "waitFor",
    "until",
    "runCommand",
    "tempDirectory",
    "swaks",
    "missing",
    "readMaildir",
]


class MTATestCase(TestCase):
    """
    A test case with a temporary directory C{self.root} and an L{MTA}
    C{self.mta} in C{root/smx}, configured and started by the test.
    """

    def setUp(self) -> None:
        self.root = tempDirectory(self)
        self.mta = MTA(self, os.path.join(self.root, "smx"))

    def need(self, *programs: str) -> None:
        """
        Skip the test unless every one of C{programs} is installed.
        """
        reason = missing(*programs)
        if reason:
            raise SkipTest(reason)

    def startRelayByMX(self, **files: str) -> "SmtpSink":
        """
        Start an smtp-sink on 127.0.0.2, a DNS server giving remote.test
        the MX mx.remote.test with that address, and smx relaying for
        127.0.0.1 by MX to the sink; C{files} are more map sources for
        L{MTA.write} (e.g. C{aliases}).

        @return: the running L{SmtpSink}.
        """
        from smx.maps.test.dnsserver import startDNSServer

        self.need(SMTP_SINK, SWAKS)
        sink = SmtpSink(self, self.root)
        sink.start()
        dnsPort, stopDNS = startDNSServer(
            {
                "remote.test": [("MX", 10, "mx.remote.test")],
                "mx.remote.test": [("A", "127.0.0.2")],
            }
        )
        self.addCleanup(stopDNS)
        files.setdefault("access", "cltaddr:127.0.0.1 relay\n")
        self.mta.write(
            configuration(
                self.mta.port,
                smar='nameserver = { "127.0.0.1:%d" };' % (dnsPort,),
                smtpc="remote_port = %d;" % (sink.port,),
            ),
            **files,
        )
        self.mta.start()
        return sink

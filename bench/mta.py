"""
The two MTAs under test, each a private instance in a temporary directory.

Both listen on 127.0.0.1 and relay mail for C{sink.test} to a sink on
127.0.0.2.  With C{hold=True} nothing is delivered: Postfix gets
C{defer_transports = smtp}; smx routes C{sink.test} to a host that is
down (a socket on 127.0.0.2 that listens but never accepts), so every
message waits in its queue with no delivery attempt.

Every setting is written down here and in bench/README.md.
"""

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any, List, Optional

from bench import procstat

SINK_DOMAIN = "sink.test"
SINK_HOST = "127.0.0.2"
MTA_HOST = "127.0.0.1"

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_BIN = os.path.join(ROOT, ".venv", "bin")


def settle(seconds: float) -> None:
    """
    Let the file system finish what the last run left (thousands of queue
    files removed): write back, then wait C{seconds}.
    """
    if seconds > 0:
        os.sync()
        time.sleep(seconds)


def addSettleOption(parser: Any, default: float = 3.0) -> None:
    """The C{--settle} option of bench/run.py and bench/ab.py."""
    parser.add_argument(
        "--settle",
        type=float,
        default=default,
        help="seconds to wait (after sync) before each run",
    )


#: directories of the MTAs stopped so far, removed at the end of the bench
_stopped: List[str] = []


def retire(directory: str) -> None:
    """
    Keep a stopped MTA's directory until L{removeDirectories}, at the end
    of the bench, instead of removing it at once.

    Removing one run's queue (thousands of files) right before the next
    run slows that next run, whichever MTA it is: on this machine's ext4
    (mounted without a journal) the inode allocator steps over every inode
    freed in about the last minute, so creating a file, which both MTAs do
    once per message, costs about 0.5-1 ms of CPU instead of 0.02 ms until
    enough files have been created (measured; see bench/README.md).  Each
    run should start from the same file system, not pay for the cleanup
    of the run before it.
    """
    _stopped.append(directory)


def removeDirectories() -> None:
    """Remove the directories of every MTA stopped so far."""
    while _stopped:
        shutil.rmtree(_stopped.pop(), ignore_errors=True)


atexit.register(removeDirectories)


def freePort(host: str) -> int:
    """
    A TCP port nobody listens on at C{host} now.
    """
    s = socket.socket()
    try:
        s.bind((host, 0))
        return int(s.getsockname()[1])
    finally:
        s.close()


def waitForGreeting(host: str, port: int, timeout: float = 30.0) -> None:
    """
    Wait until an SMTP server at C{host:port} sends its 220 greeting.

    @raise RuntimeError: if none came within C{timeout} seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=2) as s:
                if s.recv(512).startswith(b"220"):
                    s.sendall(b"QUIT\r\n")
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("no SMTP greeting from %s:%d" % (host, port))


def waitForExit(pid: int, timeout: float) -> bool:
    """
    Wait until process C{pid} is gone; C{True} if it is.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def terminate(process: "subprocess.Popen[bytes]", signum: int = signal.SIGTERM) -> None:
    """
    Stop a process the bench started: C{signum}, and SIGKILL if it is not
    gone within a minute.
    """
    if process.poll() is None:
        process.send_signal(signum)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


class MTA:
    """
    What the harness needs from an MTA under test.

    @ivar name: C{"smx"} or C{"postfix"}.
    @ivar port: the SMTP port on 127.0.0.1.
    @ivar pid: the process whose tree is the MTA (for CPU and RSS).
    """

    name = ""
    port = 0
    pid = 0

    def start(self, sinkPort: int, hold: bool = False) -> None:
        raise NotImplementedError()

    def stop(self) -> None:
        raise NotImplementedError()

    def cpuSeconds(self) -> float:
        return procstat.cpuSeconds(self.pid)

    def rssBytes(self) -> int:
        return procstat.rssBytes(self.pid)


SMX_CONF = """\
# smx under benchmark: the embedded default plus what a loopback relay needs.
hostname = bench-smx.test;
CDB_base_directory = "cdb/";

smtps {
    daemon_address = { "127.0.0.1:%(port)d" };
    flags = { 8bitmime, access };
    io_timeout = 5m;
    max_message_size = 10MB;
    max_threads = 20000;
    log { file = "smx.log"; }
}

qmgr {
    control_socket = "qmgr.ctl";
    flags = { %(qmgrflags)s };
    retry_min_delay = %(retry)s;
    retry_max_delay = 2h;
    smtps_max_connection_rate = 1000000;
    smtps_max_open_connections = 100000;
    DEFEDB { base_directory = "defedb"; }
    log { file = "smx.log"; }
}

smar {
    mailertable { name = "mt"; }
    access { name = "access.db"; }
    log { file = "smx.log"; }
}

smtpc {
    io_timeout = 5m;
    log { file = "smx.log"; }
}
"""


class Smx(MTA):
    """
    smx in embedded mode: C{twistd -n --pidfile= smx --config smx.conf}.

    @ivar profile: C{None}, or C{"cprofile"} to run under twistd's
        cProfile (stats written to C{profilePath}).
    """

    name = "smx"

    def __init__(self, reuseConnection: bool = True) -> None:
        self.reuseConnection = reuseConnection
        self.process: Optional[subprocess.Popen[bytes]] = None
        self.directory = ""
        self.profilePath: Optional[str] = None
        self.blackhole: Optional[socket.socket] = None

    def configText(self, sinkPort: int, hold: bool) -> str:
        return SMX_CONF % {
            "port": self.port,
            "qmgrflags": "reuse_connection" if self.reuseConnection else "",
            "retry": "1h" if hold else "1m",
        }

    def start(self, sinkPort: int, hold: bool = False) -> None:
        self.directory = tempfile.mkdtemp(prefix="bench-smx-")
        self.port = freePort(MTA_HOST)
        if hold:
            # A host that is down: a socket on 127.0.0.2 that listens but
            # never accepts.  Once its backlog is full the kernel drops
            # the SYNs, so smx's connection attempts hang and every
            # message waits in the queue, with no delivery attempt.
            self.blackhole = socket.socket()
            self.blackhole.bind((SINK_HOST, 0))
            self.blackhole.listen(0)
            sinkPort = int(self.blackhole.getsockname()[1])
        d = self.directory
        with open(os.path.join(d, "smx.conf"), "w") as f:
            f.write(self.configText(sinkPort, hold))
        with open(os.path.join(d, "mt"), "w") as f:
            f.write("%s\t%d^esmtp:[%s]\n" % (SINK_DOMAIN, sinkPort, SINK_HOST))
        with open(os.path.join(d, "access"), "w") as f:
            f.write("cltaddr:127.0.0.1\trelay\n")
        with open(os.path.join(d, "access"), "rb") as f:
            subprocess.run(
                [os.path.join(VENV_BIN, "smx"), "createmap", "-F", "access.db"],
                stdin=f,
                cwd=d,
                check=True,
                timeout=30,
            )
        argv = [os.path.join(VENV_BIN, "twistd"), "-n", "--pidfile="]
        if self.profilePath:
            argv += [
                "--profile=" + self.profilePath,
                "--profiler=cprofile",
                "--savestats",
            ]
        argv += ["smx", "--config", "smx.conf"]
        self.out = open(os.path.join(d, "twistd.out"), "wb")
        self.process = subprocess.Popen(
            argv, cwd=d, stdout=self.out, stderr=subprocess.STDOUT
        )
        self.pid = self.process.pid
        try:
            waitForGreeting(MTA_HOST, self.port)
        except RuntimeError:
            self.stop()
            raise

    def stop(self) -> None:
        if self.process is not None:
            terminate(self.process)
            self.process = None
            self.out.close()
        if self.blackhole is not None:
            self.blackhole.close()
            self.blackhole = None
        if self.directory:
            retire(self.directory)
            self.directory = ""


# The settings of the private Postfix instance, besides its stock defaults.
POSTFIX_MAIN_CF = """\
compatibility_level = 3.6
queue_directory = %(dir)s/spool
data_directory = %(dir)s/data
mail_owner = postfix
setgid_group = postdrop
myhostname = bench-postfix.test
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.2]:%(sinkPort)d
maillog_file = %(dir)s/maillog
maillog_file_prefixes = %(dir)s
"""

POSTFIX_HOLD = "defer_transports = smtp\n"


def postfixMasterCf(port: int) -> str:
    """
    Debian's /etc/postfix/master.cf with the smtpd on 127.0.0.1:C{port}
    and no chroot (the upstream default since Postfix 3.0; a chroot would
    need copies of /etc files in the temporary queue directory).
    """
    out = []
    with open("/etc/postfix/master.cf") as f:
        for line in f:
            fields = line.split()
            if line[:1].isspace() or line.startswith("#") or len(fields) < 8:
                out.append(line)
                continue
            if fields[0] == "smtp" and fields[1] == "inet":
                fields[0] = "127.0.0.1:%d" % (port,)
            fields[4] = "n"
            out.append(" ".join(fields[:8] + [" ".join(fields[8:])]) + "\n")
    return "".join(out)


class Postfix(MTA):
    """
    A private Postfix instance: C{postfix -c DIR/etc start}.
    """

    name = "postfix"

    def __init__(self) -> None:
        self.directory = ""
        self.etc = ""

    def mainCf(self, sinkPort: int, hold: bool) -> str:
        text = POSTFIX_MAIN_CF % {"dir": self.directory, "sinkPort": sinkPort}
        return text + (POSTFIX_HOLD if hold else "")

    def start(self, sinkPort: int, hold: bool = False) -> None:
        self.directory = tempfile.mkdtemp(prefix="bench-postfix-")
        os.chmod(self.directory, 0o755)
        self.port = freePort(MTA_HOST)
        self.etc = os.path.join(self.directory, "etc")
        os.mkdir(self.etc)
        os.mkdir(os.path.join(self.directory, "spool"))
        data = os.path.join(self.directory, "data")
        os.mkdir(data)
        shutil.chown(data, "postfix", "postfix")
        with open(os.path.join(self.etc, "main.cf"), "w") as f:
            f.write(self.mainCf(sinkPort, hold))
        with open(os.path.join(self.etc, "master.cf"), "w") as f:
            f.write(postfixMasterCf(self.port))
        self._postfix("start")
        pidFile = os.path.join(self.directory, "spool", "pid", "master.pid")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with open(pidFile) as f:
                    self.pid = int(f.read().split()[0])
                break
            except (OSError, ValueError, IndexError):
                time.sleep(0.1)
        else:
            self.stop()
            raise RuntimeError("Postfix did not write %s" % (pidFile,))
        try:
            waitForGreeting(MTA_HOST, self.port)
        except RuntimeError:
            self.stop()
            raise

    def _postfix(self, command: str) -> None:
        r = subprocess.run(
            ["/usr/sbin/postfix", "-c", self.etc, command],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=60,
        )
        if r.returncode != 0 and command == "start":
            sys.stderr.write(r.stdout.decode("utf-8", "replace"))
            raise RuntimeError("postfix %s failed" % (command,))

    def stop(self) -> None:
        if self.directory:
            if self.pid:
                tree: List[int] = procstat.processTree(self.pid)
                self._postfix("stop")
                if not waitForExit(self.pid, 30):
                    for p in tree:
                        try:
                            os.kill(p, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                # postfix stop returns before the children are gone.
                for p in tree:
                    waitForExit(p, 10)
                self.pid = 0
            retire(self.directory)
            self.directory = ""


# split mode: the section options of the bench (besides the MCP's own)
SMX_SPLIT_CONF = """\
# smx under benchmark in split mode (seed §5.3): the MCP starts QMGR, SMAR,
# SMTPC and two SMTPS processes on one passed port, each as its own user.
hostname = bench-smx.test;
CDB_base_directory = "%(queue)s/";
SMAR_socket = "qmsmar/smarsock";
SMTPC_socket = "qmsmtpc/smtpcsock";
SMTPS_socket = "qmsmtps/smtpssock";

qmgr {
    control_socket = "qmgr.ctl";
    flags = { %(qmgrflags)s };
    retry_min_delay = %(retry)s;
    retry_max_delay = 2h;
    smtps_max_connection_rate = 1000000;
    smtps_max_open_connections = 100000;
    wait_for_server = 10s; wait_for_client = 10s;
    mcp_type = wait; user = %(SMXQ)s;
    restartdependencies = { smtps, smtpc, smar };
    path = "%(bin)s/smx-qmgr"; arguments = "smx-qmgr -f %(config)s";
}

smtps {
    flags = { 8bitmime, access };
    io_timeout = 5m;
    max_message_size = 10MB;
    max_threads = 20000;
    port = %(port)d; address = 127.0.0.1;
    mcp_type = pass; pass_fd_socket = smtps/smtpsfd;
    min_processes = %(smtps)d; max_processes = %(smtps)d; pass_id = "-i";
    user = %(SMXS)s;
    path = "%(bin)s/smx-smtps"; arguments = "smx-smtps -f %(config)s";
}

smtpc {
    io_timeout = 5m;
    wait_for_server = 10s;
    mcp_type = wait; user = %(SMXC)s;
    min_processes = %(smtpc)d; max_processes = %(smtpc)d; pass_id = "-i";
    path = "%(bin)s/smx-smtpc"; arguments = "smx-smtpc -f %(config)s";
}

smar {
    mailertable { name = "%(etc)s/mt.db"; }
    access { name = "%(etc)s/access.db"; }
    mcp_type = wait; user = %(SMXM)s;
    restartdependencies = { smtps, qmgr };
    path = "%(bin)s/smx-smar"; arguments = "smx-smar -f %(config)s";
}
"""

#: the users of the split-mode smx (made once by C{smx setup --users},
#: removed when the bench ends)
SPLIT_ACCOUNTS = {
    "SMXS": "smxbens",
    "SMXQ": "smxbenq",
    "SMXC": "smxbenc",
    "SMXM": "smxbenm",
    "SMX": "smxbenx",
    "SMXDROP": "smxbend",
}


def removeSplitAccounts() -> None:
    """Delete the users and groups of L{SPLIT_ACCOUNTS} that exist."""
    import grp
    import pwd

    for name in SPLIT_ACCOUNTS.values():
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        subprocess.run(["userdel", name], capture_output=True)
    for name in SPLIT_ACCOUNTS.values():
        try:
            grp.getgrnam(name)
        except KeyError:
            continue
        subprocess.run(["groupdel", name], capture_output=True)


#: the virtualenv split mode runs from when C{.venv}'s interpreter cannot
#: be run by the component users (one under C{/root}, as pyenv's)
SPLIT_VENV = os.path.join(ROOT, ".venv-split")


def _runsAs(user: str, python: str) -> bool:
    r = subprocess.run(
        ["runuser", "-u", user, "--", python, "-c", "import smx, twisted"],
        capture_output=True,
        cwd="/",
        timeout=60,
    )
    return r.returncode == 0


def splitPrograms() -> str:
    """
    The directory of the smx programs the MCP starts: C{.venv/bin} if
    every user can run its interpreter (C{tools/bootstrap.sh} builds it
    from C{/usr/bin/python3}), else L{SPLIT_VENV}, made from
    C{/usr/bin/python3} with smx installed from this checkout (editable)
    if it is missing.
    """
    if _runsAs("nobody", os.path.join(VENV_BIN, "python")):
        return VENV_BIN
    bin = os.path.join(SPLIT_VENV, "bin")
    if not os.path.exists(os.path.join(bin, "smx-mcp")):
        old = os.umask(0o022)
        try:
            subprocess.run(["/usr/bin/python3", "-m", "venv", SPLIT_VENV], check=True)
            subprocess.run(
                [os.path.join(bin, "pip"), "install", "-q"]
                + ["--config-settings", "editable_mode=compat", "-e", ROOT],
                env=dict(os.environ, BERKELEYDB_DIR="/usr"),
                check=True,
                timeout=900,
            )
        finally:
            os.umask(old)
    if not _runsAs("nobody", os.path.join(bin, "python")):
        raise RuntimeError("no interpreter every user can run for split mode")
    return bin


class SmxSplit(MTA):
    """
    smx in split mode, as root: C{smx setup --users} makes the users and
    the §5.3 queue layout in a temporary directory, then C{smx-mcp}
    starts QMGR, SMAR, C{smtpc} SMTPC processes and C{smtps} SMTPS
    processes (one port passed to all of them).  C{pid} is the MCP's,
    whose tree holds every component: CPU and RSS are those of the whole.

    With C{hold}, the next hop refuses: C{sink.test} is routed to a port
    on 127.0.0.2 nobody listens on, so each message is tried once,
    refused and deferred for C{retry_min_delay} (1h), the counterpart of
    Postfix's C{defer_transports = smtp}.
    """

    name = "smx-split"

    def __init__(
        self, reuseConnection: bool = True, smtps: int = 2, smtpc: int = 1
    ) -> None:
        self.reuseConnection = reuseConnection
        self.smtps = smtps
        self.smtpc = smtpc
        self.process: Optional[subprocess.Popen[bytes]] = None
        self.directory = ""
        self.queue = ""

    def start(self, sinkPort: int, hold: bool = False) -> None:
        import pwd

        if os.geteuid() != 0:
            raise RuntimeError("split mode needs root (the MCP starts the users)")
        bin = splitPrograms()
        self.directory = tempfile.mkdtemp(prefix="bench-smxsplit-")
        os.chmod(self.directory, 0o755)
        d = self.directory
        self.port = freePort(MTA_HOST)
        etc = os.path.join(d, "etc")
        self.queue = os.path.join(d, "q")
        env = dict(os.environ, SMXCONFDIR=etc, SMXQDIR=self.queue)
        env.update(SPLIT_ACCOUNTS)
        setup = subprocess.run(
            [os.path.join(bin, "smx"), "setup", "--users", "--no-check"]
            + ["--port", str(self.port), "--hostname", "bench-smx.test"]
            + ["--postdrop", os.path.join(d, "smx-postdrop")],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if setup.returncode != 0:
            raise RuntimeError("smx setup failed: " + setup.stdout + setup.stderr)
        if hold:
            # the next hop refuses: a port nobody listens on
            sinkPort = freePort(SINK_HOST)
        smxm = pwd.getpwnam(SPLIT_ACCOUNTS["SMXM"])
        maps = {
            "mt": "%s\t%d^esmtp:[%s]\n" % (SINK_DOMAIN, sinkPort, SINK_HOST),
            "access": "cltaddr:127.0.0.1\trelay\n",
        }
        for name, text in maps.items():
            source = os.path.join(etc, name)
            for path in (source, source + ".db"):
                if os.path.exists(path):
                    os.unlink(path)
            with open(source, "w") as f:
                f.write(text)
            subprocess.run(
                [os.path.join(VENV_BIN, "smx"), "createmap"]
                + ["-F", source + ".db", "-i", source],
                check=True,
                capture_output=True,
                timeout=60,
            )
            os.chown(source + ".db", smxm.pw_uid, smxm.pw_gid)
        self.config = os.path.join(etc, "smx.conf")
        values = dict(SPLIT_ACCOUNTS)
        values.update(
            queue=self.queue,
            etc=etc,
            bin=bin,
            config=self.config,
            port=self.port,
            smtps=self.smtps,
            smtpc=self.smtpc,
            qmgrflags="reuse_connection" if self.reuseConnection else "",
            retry="1h" if hold else "1m",
        )
        os.unlink(self.config)
        with open(self.config, "w") as f:
            f.write(SMX_SPLIT_CONF % values)
        smx = pwd.getpwnam(SPLIT_ACCOUNTS["SMX"])
        os.chown(self.config, smx.pw_uid, smx.pw_gid)
        self.out = open(os.path.join(d, "mcp.log"), "wb")
        self.process = subprocess.Popen(
            [os.path.join(bin, "smx-mcp"), "-f", self.config] + ["-L", self.queue],
            cwd=self.queue,
            env=env,
            stdout=self.out,
            stderr=subprocess.STDOUT,
        )
        self.pid = self.process.pid
        try:
            waitForGreeting(MTA_HOST, self.port)
            self.waitForComponents()
        except RuntimeError:
            self.stop()
            raise

    def waitForComponents(self, timeout: float = 30.0) -> None:
        """
        Wait until every component process runs (MCP, QMGR, SMAR, the
        SMTPC and SMTPS processes) and one message gets a 250 from each
        SMTPS process's side (the peers are connected).
        """
        want = 1 + 2 + self.smtpc + self.smtps
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(procstat.processTree(self.pid)) >= want:
                return
            time.sleep(0.1)
        raise RuntimeError("split smx: not every component started")

    def queuedFiles(self) -> int:
        """
        The number of contents in the queue (16 directories; not the
        C{.free.} files kept for reuse).
        """
        n = 0
        for sub in "0123456789ABCDEF":
            try:
                names = os.listdir(os.path.join(self.queue, sub))
            except OSError:
                continue
            n += sum(1 for name in names if not name.startswith("."))
        return n

    def stop(self) -> None:
        if self.process is not None:
            terminate(self.process)
            self.process = None
            self.out.close()
        if self.directory:
            retire(self.directory)
            self.directory = ""


atexit.register(removeSplitAccounts)

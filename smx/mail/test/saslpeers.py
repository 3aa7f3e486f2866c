# -*- test-case-name: smx.mail.test.test_integration_sasl -*-
"""
Real authentication servers for the integration tests of SMTP AUTH, each a
private instance that touches no system configuration:

    dovecot = DovecotAuthServer(self, directory, {"alice": "secret"})
    dovecot.start()          # dovecot -F, only its auth service
    dovecot.socket           # the auth client socket (mode 0666)
    dovecot.stop()

    saslauthd = Saslauthd(self, directory, {"alice": "secret"})
    saslauthd.start()        # saslauthd -a sasldb -d
    saslauthd.socket         # its mux socket
    saslauthd.stop()

saslauthd's C{sasldb} module always reads C{/etc/sasldb2} (it has no
option for another file), so the instance runs in a private mount
namespace (C{unshare -m}) where the test's own sasldb is bind-mounted over
C{/etc/sasldb2}; the system's file is not touched.  That needs root.

A test case's cleanup stops whatever was started (by process id).
"""

from __future__ import annotations

import os
import signal
import subprocess
from typing import Any, Dict, List, Optional, Tuple

from smx.test.mta import processIdentity, processStat, signalIdentified, waitFor

DOVECOT = "/usr/sbin/dovecot"
SASLAUTHD = "/usr/sbin/saslauthd"
SASLPASSWD2 = "/usr/sbin/saslpasswd2"
UNSHARE = "/usr/bin/unshare"
SYSTEM_SASLDB = "/etc/sasldb2"

DOVECOT_AUTH_CONF = """\
protocols =
base_dir = @ROOT@/run
state_dir = @ROOT@/state
log_path = @ROOT@/dovecot.log
ssl = no
listen = 127.0.0.1
default_internal_user = nobody
default_login_user = nobody
default_internal_group = nogroup
auth_mechanisms = @MECHANISMS@
auth_failure_delay = 0
disable_plaintext_auth = no
passdb {
  driver = passwd-file
  args = @ROOT@/passwd
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=@ROOT@/home/%n
}
service auth {
  unix_listener @ROOT@/auth {
    mode = 0666
  }
}
# no brute-force penalty: the tests fail on purpose, from one address
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
"""


def _children(pid: int) -> List[Tuple[int, int]]:
    """The identities (L{processIdentity}) of the children of C{pid}."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        fields = processStat(int(name))
        if fields is not None and len(fields) > 1 and int(fields[1]) == pid:
            out.append(processIdentity(int(name)))
    return [identity for identity in out if identity is not None]


def _running(identity: Tuple[int, int]) -> bool:
    """Whether the process C{identity} names is alive (not a zombie)."""
    fields = processStat(identity[0])
    return (
        fields is not None
        and fields[:1] != [b"Z"]
        and processIdentity(identity[0]) == identity
    )


class DovecotAuthServer:
    """
    Dovecot with only its authentication service (no mail protocols), its
    users in a passwd-file with C{{PLAIN}} passwords.

    @ivar socket: the auth client socket.
    """

    def __init__(
        self,
        testCase: Any,
        root: str,
        users: Dict[str, str],
        mechanisms: str = "plain login cram-md5",
    ) -> None:
        self.root = root
        self.users = users
        self.mechanisms = mechanisms
        self.socket = os.path.join(root, "auth")
        self.process = None  # type: Optional[subprocess.Popen]
        testCase.addCleanup(self.stop)

    @staticmethod
    def missing() -> Optional[str]:
        """The reason a test cannot run Dovecot, or C{None}."""
        if not os.access(DOVECOT, os.X_OK):
            return "%s (Debian package dovecot-core) is not installed" % (DOVECOT,)
        return None

    def start(self) -> None:
        """Start C{dovecot -F} and wait for the auth socket."""
        os.makedirs(self.root, exist_ok=True)
        os.chmod(self.root, 0o755)
        with open(os.path.join(self.root, "passwd"), "w") as f:
            for user, password in self.users.items():
                f.write("%s:{PLAIN}%s\n" % (user, password))
        os.chmod(os.path.join(self.root, "passwd"), 0o644)
        conf = os.path.join(self.root, "dovecot.conf")
        with open(conf, "w") as f:
            f.write(
                DOVECOT_AUTH_CONF.replace("@ROOT@", self.root).replace(
                    "@MECHANISMS@", self.mechanisms
                )
            )
        if os.path.exists(self.socket):
            # left by the last run: the new one appears when Dovecot listens
            os.unlink(self.socket)
        log = open(os.path.join(self.root, "dovecot.out"), "ab")
        try:
            self.process = subprocess.Popen(
                [DOVECOT, "-F", "-c", conf],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        if not waitFor(self._ready, 10):
            self.stop()
            raise RuntimeError("dovecot did not start: %s" % (self.log(),))

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            return False
        return os.path.exists(self.socket)

    def stop(self) -> None:
        """
        Stop it (if it runs) and wait until it and its children are gone,
        by their process ids: the master is killed (its orderly shutdown
        takes a second), its children are told to stop.  Dovecot's auth
        process would otherwise outlive the master while a client is
        connected, and go on answering.
        """
        process, self.process = self.process, None
        if process is None:
            return
        children = _children(process.pid)
        process.kill()
        process.wait()
        for identity in children:
            signalIdentified(identity, signal.SIGTERM)
        waitFor(lambda: not any(_running(identity) for identity in children))

    def log(self) -> str:
        """What Dovecot logged."""
        out = []
        for name in ("dovecot.out", "dovecot.log"):
            try:
                with open(os.path.join(self.root, name), "rb") as f:
                    out.append(f.read().decode("utf-8", "replace"))
            except OSError:
                pass
        return "\n".join(out)


class Saslauthd:
    """
    Cyrus saslauthd with C{-a sasldb}, its users in the test's own sasldb.

    @ivar socket: its mux socket.
    """

    def __init__(self, testCase: Any, root: str, users: Dict[str, str]) -> None:
        self.root = root
        self.users = users
        self.runDirectory = os.path.join(root, "mux")
        self.socket = os.path.join(self.runDirectory, "mux")
        self.sasldb = os.path.join(root, "sasldb2")
        self.process = None  # type: Optional[subprocess.Popen]
        testCase.addCleanup(self.stop)

    @staticmethod
    def missing() -> Optional[str]:
        """The reason a test cannot run saslauthd, or C{None}."""
        for program in (SASLAUTHD, SASLPASSWD2):
            if not os.access(program, os.X_OK):
                return "%s (Debian package sasl2-bin) is not installed" % (program,)
        if os.getuid() != 0:
            return "saslauthd -a sasldb needs a private mount namespace (root)"
        if not os.access(UNSHARE, os.X_OK):
            return "%s (util-linux) is not installed" % (UNSHARE,)
        if not os.path.isfile(SYSTEM_SASLDB):
            return "%s (made by sasl2-bin) is missing" % (SYSTEM_SASLDB,)
        return None

    def start(self) -> None:
        """Make the sasldb, start C{saslauthd -d} and wait for its socket."""
        os.makedirs(self.runDirectory, exist_ok=True)
        for user, password in self.users.items():
            subprocess.run(
                [SASLPASSWD2, "-f", self.sasldb, "-p", "-c", user],
                input=password.encode() + b"\n",
                check=True,
                capture_output=True,
                timeout=10,
            )
        script = "mount --bind %s %s && exec %s -a sasldb -m %s -n 1 -d" % (
            self.sasldb,
            SYSTEM_SASLDB,
            SASLAUTHD,
            self.runDirectory,
        )
        log = open(os.path.join(self.root, "saslauthd.log"), "ab")
        try:
            self.process = subprocess.Popen(
                [UNSHARE, "-m", "--propagation", "private", "sh", "-c", script],
                stdout=log,
                stderr=subprocess.STDOUT,
                # saslauthd signals its whole process group when it stops
                start_new_session=True,
            )
        finally:
            log.close()
        if not waitFor(self._ready, 10):
            self.stop()
            raise RuntimeError("saslauthd did not start: %s" % (self.log(),))

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            return False
        return os.path.exists(self.socket)

    def stop(self) -> None:
        """Stop it (if it runs) and wait for it to exit."""
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            process.kill()
            process.wait()

    def log(self) -> str:
        """What saslauthd wrote."""
        try:
            with open(os.path.join(self.root, "saslauthd.log"), "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

# -*- test-case-name: smx.test.test_tap -*-
"""
Tests for L{smx.tap}: the C{twistd smx} options and service tree.

L{TwistdIntegrationTests} is an integration test: it runs the real
C{twistd -n smx} in a child process on loopback ports.
"""

import os
import resource
import signal
import socket
import subprocess
import sys
import time

from twisted.python import usage
from twisted.trial import unittest

from smx import tap
from smx.scripts import defaultconfig
from smx.test.mta import freePort


class OptionsTests(unittest.TestCase):
    """
    L{tap.Options} loads the configuration in C{postOptions}, so a mistake
    is a usage error, not a traceback.
    """

    def test_badConfiguration(self):
        """A syntax error is one line with file:line:column."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("qmgr\n  = 3;\n")
        options = tap.Options()
        e = self.assertRaises(usage.UsageError, options.parseOptions, ["-f", path])
        self.assertIn(os.path.basename(path) + ":2:", str(e))
        self.assertNotIn("\n", str(e))

    def test_missingConfiguration(self):
        """A missing file names the file."""
        options = tap.Options()
        e = self.assertRaises(
            usage.UsageError, options.parseOptions, ["--config", "/nonexistent/x.conf"]
        )
        self.assertIn("/nonexistent/x.conf", str(e))

    def test_overrideOptions(self):
        """-C, -c and -O R=/0= override the QMGR limits (seed §5.7.1)."""
        d = os.path.abspath(self.mktemp())
        path = defaultconfig.writeDefaultConfiguration(d)
        options = tap.Options()
        options.parseOptions(
            ["-f", path, "-d", d, "-C", "7", "-c", "3", "-O", "R=50", "-O", "0=9"]
        )
        qmgr = options.configuration.section("qmgr")
        self.assertEqual(qmgr["smtpc_max_connections"], 7)
        self.assertEqual(qmgr["smtpc_initial_connections"], 3)
        self.assertEqual(qmgr["smtps_max_connection_rate"], 50)
        self.assertEqual(qmgr["smtps_max_open_connections"], 9)

    def test_badOverride(self):
        """-O with an unknown key is a usage error."""
        options = tap.Options()
        self.assertRaises(usage.UsageError, options.parseOptions, ["-O", "X=1"])

    def test_badNumber(self):
        """
        -C and -c with something else than a number is a usage error that
        names the option as it is written and the value.
        """
        for flag, name in [
            ("-C", "--max-connections"),
            ("-c", "--initial-connections"),
        ]:
            options = tap.Options()
            e = self.assertRaises(usage.UsageError, options.parseOptions, [flag, "x"])
            self.assertEqual(str(e), "%s (%s) takes a number, not 'x'" % (flag, name))

    def test_componentOptions(self):
        """
        --smtps-options, --smar-options and --qmgr-options (repeatable),
        and SM_SERVER_OPTIONS and SMAROPTS, override the configuration
        (L{smx.config.componentoptions}).
        """
        d = os.path.abspath(self.mktemp())
        path = defaultconfig.writeDefaultConfiguration(d)
        self.patch(os, "environ", dict(os.environ, SM_SERVER_OPTIONS="-C ::1"))
        options = tap.Options()
        options.parseOptions(
            [
                "-f",
                path,
                "-d",
                d,
                "--smtps-options",
                "-a -C 10.2.3.4",
                "--smtps-options",
                "-T",
                "--smar-options",
                "-U",
                "--qmgr-options",
                "-x 1-3.2",
                "--qmgr-options=-x5",
            ]
        )
        cfg = options.configuration
        smtps = cfg.section("smtps")
        self.assertIn("access", smtps["flags"])
        self.assertEqual(smtps["relay_clients"], ["::1", "10.2.3.4"])
        self.assertIn("use_tcp", cfg.section("smar")["DNS_flags"])
        self.assertEqual(cfg.section("qmgr")["debug_categories"], ["1-3.2", "5"])

    def test_badComponentOptions(self):
        """A bad option set is a usage error that names it."""
        e = self.assertRaises(
            usage.UsageError,
            tap.Options().parseOptions,
            ["-d", os.path.abspath(self.mktemp()), "--smar-options", "-U -Z"],
        )
        self.assertIn("--smar-options '-U -Z': ", str(e))


class TwistdIntegrationTests(unittest.TestCase):
    """
    Integration: C{twistd -n smx --config FILE} starts, answers SMTP on
    its loopback port and stops cleanly on SIGTERM.
    """

    def _configure(self, port, directory=None):
        """
        Write the default configuration into C{directory} (default: a new
        temporary one) with SMTPS on C{port}; return the directory and the
        configuration path.
        """
        d = directory or os.path.abspath(self.mktemp())
        path = defaultconfig.writeDefaultConfiguration(d)
        with open(path) as f:
            text = f.read().replace("127.0.0.1:2525", "127.0.0.1:%d" % (port,))
        with open(path, "w") as f:
            f.write(text)
        return d, path

    def _twistd(self, d, path):
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        return subprocess.Popen(
            [twistd, "-n", "--pidfile=", "smx", "--config", path],
            cwd=d,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )

    def _greeting(self, proc, port):
        """
        The first reply of the server on C{port}, or C{b""} when C{proc}
        ended or 20 seconds passed first.
        """
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), 1) as s:
                    s.settimeout(5)
                    greeting = s.recv(512)
                    s.sendall(b"QUIT\r\n")
                    s.recv(512)
                    return greeting
            except OSError:
                if proc.poll() is not None:
                    return b""
                time.sleep(0.1)
        return b""

    def _startAndStop(self, d, path, port):
        proc = self._twistd(d, path)
        try:
            greeting = self._greeting(proc, port)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=20)
        text = out.decode("utf-8", "replace")
        self.assertTrue(greeting.startswith(b"220 "), text)
        # twistd ends with the signal it was stopped by after a clean shutdown
        self.assertIn(proc.returncode, (0, -signal.SIGTERM), text)
        self.assertNotIn("Traceback", text)
        self.assertIn("Main loop terminated", text)

    def test_startAndStop(self):
        """The server greets with 220 and shuts down cleanly on SIGTERM."""
        port = freePort()
        d, path = self._configure(port)
        self._startAndStop(d, path, port)

    def test_deepQueueDirectory(self):
        """
        A queue directory so deep that C{lmtpsock} and C{qmgr.ctl} are
        longer than a Unix socket name may be (107 bytes) still works.
        """
        port = freePort()
        d = os.path.join(os.path.abspath(self.mktemp()), "q" * 110)
        d, path = self._configure(port, d)
        self.assertGreater(len(os.path.join(d, "lmtpsock")), 108)
        self._startAndStop(d, path, port)

    def test_openFileLimit(self):
        """
        C{twistd smx} raises its soft limit of open files to the hard
        limit, so that sessions are not capped at 1,024 descriptors: it is
        started here with a soft limit of 256 and runs with the hard one.
        """
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and hard <= 256:
            raise unittest.SkipTest("the hard limit of open files is %d" % (hard,))
        port = freePort()
        d, path = self._configure(port)
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        proc = subprocess.Popen(
            [twistd, "-n", "--pidfile=", "smx", "--config", path],
            cwd=d,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard)),
        )
        try:
            self.assertTrue(self._greeting(proc, port).startswith(b"220 "))
            with open("/proc/%d/limits" % (proc.pid,)) as f:
                line = [x for x in f if x.startswith("Max open files")][0]
            running = int(line.split()[3])
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=20)
        if hard == resource.RLIM_INFINITY or hard > 1 << 20:
            hard = 1 << 20
        self.assertEqual(running, hard)

    def test_badConfigurationOneLine(self):
        """
        A mistake in the configuration: twistd prints one line that names
        file, line and column (not its usage text before it) and exits 78
        (EX_CONFIG, as C{smx-mcp}).
        """
        d = os.path.abspath(self.mktemp())
        os.makedirs(d)
        path = os.path.join(d, "smx.conf")
        with open(path, "w") as f:
            f.write("qmgr\n  = 3;\n")
        proc = self._twistd(d, path)
        out, _ = proc.communicate(timeout=30)
        text = out.decode("utf-8", "replace")
        self.assertEqual(proc.returncode, 78, text)
        self.assertEqual(text.count("\n"), 1, text)
        self.assertTrue(text.startswith("smx: %s:2:3: " % (path,)), text)

    def test_portInUse(self):
        """
        When the SMTPS port is taken, twistd ends with exit status 1 and
        one line that names the address, without a traceback.
        """
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        d, path = self._configure(port)
        proc = self._twistd(d, path)
        out, _ = proc.communicate(timeout=30)
        text = out.decode("utf-8", "replace")
        self.assertEqual(proc.returncode, 1, text)
        self.assertIn(
            "smx: cannot listen on 127.0.0.1:%d: Address already in use" % (port,),
            text,
        )
        self.assertNotIn("Traceback", text)


class QuietLogTests(unittest.TestCase):
    """
    L{tap.useQuietLog} drops Twisted's per-DNS-query lines and keeps
    everything else.
    """

    def test_filter(self):
        """UDP port and resolv.conf lines are dropped, smx records kept."""
        from twisted.logger import LogLevel, PredicateResult

        def event(text):
            return {"log_format": "{t}", "t": text, "log_level": LogLevel.info}

        for text in [
            "DNSDatagramProtocol starting on 40123",
            "(UDP Port 40123 Closed)",
            "/etc/resolv.conf changed, reparsing",
            "Resolver added ('127.0.0.1', 53) to server list",
        ]:
            self.assertEqual(tap._isNoise(event(text)), PredicateResult.no, text)
        for text in ["ss_sess=S1, client_ipv4=127.0.0.1", "(TCP Port 25 Closed)"]:
            self.assertEqual(tap._isNoise(event(text)), PredicateResult.maybe, text)

    def test_twistdOptions(self):
        """
        With twistd's options the observer is built, around a
        L{smx.logobserver.TurnLog} for its text log; with syslog not.
        """
        from twisted.scripts.twistd import ServerOptions

        from smx.logobserver import TurnLog

        config = ServerOptions()
        config.parseOptions(["-n"])
        root = tap.SmxService(None, installSignals=False)
        tap.useQuietLog(root, config)
        self.assertIsNotNone(root.logObserver)
        self.assertIsInstance(root.turnLog, TurnLog)
        config["syslog"] = True
        for options in (config, None):
            root = tap.SmxService(None, installSignals=False)
            tap.useQuietLog(root, options)
            self.assertIsNone(root.logObserver)
            self.assertIsNone(root.turnLog)


class GarbageCollectorTests(unittest.TestCase):
    """
    The twistd entry point sets the thresholds of the cyclic garbage
    collector (L{tap.GC_THRESHOLDS}).
    """

    def setUp(self):
        import gc

        self.addCleanup(gc.set_threshold, *gc.get_threshold())

    def test_makeService(self):
        import gc

        from twisted.application import service

        gc.set_threshold(700, 10, 10)
        self.patch(tap, "buildService", lambda configuration: service.MultiService())
        options = tap.Options()
        options.parseOptions(["--config", os.devnull])
        tap.makeService(options)
        self.assertEqual(gc.get_threshold(), tap.GC_THRESHOLDS)
        self.assertGreater(tap.GC_THRESHOLDS[0], 700)

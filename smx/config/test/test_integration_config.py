# -*- test-case-name: smx.config.test.test_integration_config -*-
"""
Integration tests: the configuration as users meet it, through the real
programs.  Each test runs C{smx config} as a program and C{twistd -n smx}
as a child process (L{smx.test.mta}) on the same file, and checks that
what C{smx config} says is what smx does: line ends, AUTH set-ups, path
names, TLS files, the listening address, options without effect, and a
C{max_message_size} of 0 (no limit).
"""

from __future__ import annotations

import os
import smtplib
import socket
import stat
import subprocess
from typing import Any, List, Tuple

from twisted.internet import defer
from twisted.trial.unittest import SkipTest, TestCase

from smx.test.certs import makeCertificates
from smx.test.mta import (
    MTATestCase,
    MTA,
    SMX,
    SWAKS,
    TWISTD,
    canConnect,
    configuration,
    freePort,
    missing,
    swaks,
    tempDirectory,
    until,
    waitFor,
)


def smxConfig(*args: str, cwd: str = "/") -> Tuple[int, str, str]:
    """
    Run the C{smx config} program.

    @return: its exit status, standard output and standard error.
    """
    p = subprocess.run(
        [SMX, "config"] + list(args),
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=30,
    )
    return p.returncode, p.stdout, p.stderr


def lineOf(text: str, needle: str) -> int:
    """
    The 1-based line of the first line of C{text} containing C{needle}.
    """
    for number, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return number
    raise AssertionError("%r not in the text" % (needle,))


class _Base(MTATestCase):

    def write(self, text: str, **files: Any) -> str:
        """
        Write C{smx.conf} (and the maps the harness configuration names).
        """
        files.setdefault("aliases", "alice: local:\n")
        files.setdefault("access", "")
        self.mta.write(text, **files)
        return text

    def warningsIn(self, output: str) -> List[str]:
        return [line for line in output.splitlines() if ": warning: " in line]


class LineEndTests(_Base):
    """
    A configuration file means the same with LF, CR LF and lone CR line
    ends.
    """

    def test_sameConfiguration(self) -> None:
        """
        C{smx config -VVVV} prints the same configuration for the three
        versions of one file, a syntax error is reported at the same line
        in all three, and C{twistd smx} with the CR-only version listens
        on the configured address (not on 0.0.0.0:25).
        """
        text = self.write(configuration(self.mta.port))
        outputs = []
        for name, end in (("lf", "\n"), ("crlf", "\r\n"), ("cr", "\r")):
            path = self.mta.path(name + ".conf")
            with open(path, "w", newline="") as f:
                f.write(text.replace("\n", end))
            status, out, err = smxConfig("-VVVV", "-f", path)
            self.assertEqual((status, err), (0, ""), name)
            outputs.append(
                [line for line in out.splitlines() if "configuration file:" not in line]
            )
        self.assertIn(
            "    daemon_address = {127.0.0.1:%d};" % (self.mta.port,), outputs[0]
        )
        self.assertEqual(outputs[1], outputs[0])
        self.assertEqual(outputs[2], outputs[0])

        # the ';' missing at the end of a line: the error is at the next
        # word, a few (blank) lines further on
        broken = text.replace("retry_max_delay = 1s;", "retry_max_delay = 1s", 1)
        after = broken.splitlines()[lineOf(broken, "retry_max_delay") :]
        line = lineOf(broken, "retry_max_delay") + 1
        line += [bool(x.strip()) for x in after].index(True)
        self.assertGreater(line, lineOf(broken, "retry_max_delay") + 1)
        for name, end in (("lf", "\n"), ("crlf", "\r\n"), ("cr", "\r")):
            path = self.mta.path("broken-%s.conf" % (name,))
            with open(path, "w", newline="") as f:
                f.write(broken.replace("\n", end))
            status, out, err = smxConfig("-f", path)
            self.assertEqual(status, 2, name)
            self.assertTrue(
                err.startswith("%s:%d:" % (path, line)), "%s: %s" % (name, err)
            )

        with open(self.mta.config, "w", newline="") as f:
            f.write(text.replace("\n", "\r"))
        self.mta.start()  # waits until 127.0.0.1:port answers
        with socket.create_connection(("127.0.0.1", self.mta.port), 5) as s:
            self.assertEqual(s.recv(4)[:3], b"220")


class AuthTests(_Base):
    """
    AUTH set-ups that would do nothing are warned about, and a successful
    AUTH allows relaying unless C{trusted_mechs} says otherwise.
    """

    def passwords(self) -> str:
        path = self.mta.path("passwd")
        with open(path, "w") as f:
            f.write("user:secret\n")
        return path

    @defer.inlineCallbacks
    def test_neverOffered(self) -> Any:
        """
        A password file without a tls section: C{smx config} and C{twistd
        smx} at start print one warning line naming the file and line,
        and EHLO indeed offers no AUTH.
        """
        self.need(SWAKS)
        self.passwords()
        text = self.write(
            configuration(self.mta.port, smtps='auth { password_file = "passwd"; }')
        )
        line = lineOf(text, "password_file")
        column = text.splitlines()[line - 1].index("password_file") + 1
        expected = (
            "%s:%d:%d: warning: AUTH is never offered: it needs STARTTLS, but "
            "section 'smtps.tls' has no cert_file (set tls { cert_file; "
            "key_file; } or the auth flag allow_plaintext_without_tls)"
            % (self.mta.config, line, column)
        )
        status, out, err = smxConfig("-f", self.mta.config)
        self.assertEqual((status, err), (0, expected + "\n"))
        self.mta.start()
        self.assertEqual(self.warningsIn(self.mta.log()), [expected])
        out, err, status = yield swaks(self.mta.port, "--quit-after", "EHLO")
        self.assertNotIn(b"AUTH", out)

    @defer.inlineCallbacks
    def test_authenticatedRelaying(self) -> Any:
        """
        With TLS and a password file but no C{trusted_mechs}, a client
        that authenticates (swaks, STARTTLS and AUTH PLAIN) may relay,
        as users expect (Postfix's permit_sasl_authenticated); without
        AUTH the same recipient is refused.  A key readable by everybody
        is an error of C{smx config} and C{twistd smx} (seed §9.2); at
        mode 0640 smx starts without a warning.
        """
        self.need(SWAKS)
        self.passwords()
        certs = makeCertificates(self.mta.path("certs"))
        os.chmod(certs.serverKey, 0o644)
        text = self.write(
            configuration(
                self.mta.port,
                smtps='auth { password_file = "passwd"; }\n'
                '    tls { cert_file = "certs/server.pem"; '
                'key_file = "certs/server.key"; }',
                smtpc="remote_port = %d;" % (freePort(),),
            ),
            mt="localhost lmtp:\nremote.test [127.0.0.2]\n",
        )
        line = lineOf(text, "key_file")
        column = text.splitlines()[line - 1].index("key_file") + 1
        expected = (
            "%s:%d:%d: key_file %s is readable by others (mode 0644); "
            "make it 0600 (0640 for a key shared by server and client, App. D)"
            % (self.mta.config, line, column, certs.serverKey)
        )
        status, out, err = smxConfig("-f", self.mta.config)
        self.assertEqual((status, err), (2, expected + "\n"))
        os.chmod(certs.serverKey, 0o640)
        self.mta.start()
        self.assertEqual(self.warningsIn(self.mta.log()), [])
        out, err, status = yield swaks(
            self.mta.port,
            "--from",
            "user@client.test",
            "--to",
            "bob@remote.test",
            "--tls",
            "--auth",
            "PLAIN",
            "--auth-user",
            "user",
            "--auth-password",
            "secret",
        )
        self.assertEqual(status, 0, (out + err).decode())
        self.assertIn(b"<~  235 2.7.0 ", out)
        out, err, status = yield swaks(
            self.mta.port, "--from", "user@client.test", "--to", "bob@remote.test"
        )
        self.assertNotEqual(status, 0)
        self.assertRegex(out.decode(), r"<\*\* +550 5\.7\.1 ")


class PathTests(_Base):
    """
    C{smx config} resolves relative path names where C{twistd smx} does,
    and says where; it checks the TLS files as C{twistd smx} does.
    """

    def test_pathsAndUnusedAddress(self) -> None:
        """
        Run from another directory (as from a checkout, C{smx config -f
        var/smx.conf}), C{smx config} prints the sockets and queue
        directories where C{twistd smx}, run beside the file, makes them,
        and says so on one line; the C{port} of an smtps section with a
        C{daemon_address} is marked as without effect (a warning in both
        programs), and indeed nothing listens on it.
        """
        unused = freePort()
        text = self.write(configuration(self.mta.port, smtps="port = %d;" % unused))
        relative = os.path.relpath(self.mta.config, self.root)
        status, out, err = smxConfig("-VVVVV", "-f", relative, cwd=self.root)
        self.assertEqual(status, 0, err)
        lines = out.splitlines()
        self.assertIn(
            "# paths relative to %s (configuration and queue directory)"
            % (self.mta.directory,),
            lines,
        )
        control = self.mta.path("qmgr.ctl")
        self.assertIn("    control_socket = %s;" % (control,), out)
        self.assertIn("        base_directory = %s;" % (self.mta.path("defedb"),), out)
        smtps = out[out.index("\nsmtps {") : out.index("\n}\n", out.index("\nsmtps {"))]
        self.assertRegex(
            smtps,
            r"\n    port = %d; +# integer, .*\(set; no effect: smx listens on its "
            r"daemon_address\)" % (unused,),
        )
        self.assertRegex(
            smtps, r"\n    # address has no effect: smx listens on its daemon_address "
        )
        line = lineOf(text, "port = %d" % (unused,))
        expected = (
            "%s:%d:5: warning: option 'port' in section 'smtps' has no effect: "
            "smx listens on its daemon_address" % (relative, line)
        )
        self.assertEqual(err, expected + "\n")

        self.mta.start()
        self.assertTrue(waitFor(lambda: os.path.exists(control)), self.mta.log())
        self.assertTrue(stat.S_ISSOCK(os.stat(control).st_mode))
        self.assertTrue(os.path.isdir(self.mta.path("defedb")))
        self.assertFalse(canConnect(unused))
        self.assertEqual(
            self.warningsIn(self.mta.log()),
            [expected.replace(relative, self.mta.config, 1)],
        )

    def test_tlsKeyMismatch(self) -> None:
        """
        A key that does not belong to the certificate: C{smx config}
        exits 2 and C{twistd smx} 1, both with one line naming the file
        and line of C{key_file}.
        """
        certs = makeCertificates(self.mta.path("certs"))
        os.chmod(certs.clientKey, 0o600)
        text = self.write(
            configuration(
                self.mta.port,
                smtps="tls {\n        cert_file = certs/server.pem;\n"
                "        key_file = certs/client.key;\n    }",
            )
        )
        line = lineOf(text, "key_file")
        expected = (
            "%s:%d:9: key_file %s does not belong to the certificate in "
            "cert_file %s" % (self.mta.config, line, certs.clientKey, certs.serverCert)
        )
        status, out, err = smxConfig("-f", self.mta.config)
        self.assertEqual((status, out, err), (2, "", expected + "\n"))
        p = subprocess.run(
            [TWISTD, "-n", "--pidfile=", "smx", "--config", self.mta.config],
            capture_output=True,
            text=True,
            cwd=self.mta.directory,
            timeout=30,
        )
        self.assertEqual(p.returncode, 78, p.stdout + p.stderr)
        self.assertIn(expected, (p.stdout + p.stderr).splitlines()[-1])
        self.assertFalse(canConnect(self.mta.port))


class EffectTests(_Base):
    """
    Options that embedded smx accepts but does not use are reported, one
    line each, by C{smx config} and by C{twistd smx} at start, which then
    runs as usual.
    """

    @defer.inlineCallbacks
    def test_inertOptions(self) -> Any:
        """
        A configuration that sets C{user}, C{CDB_gid}, C{max_wait_threads},
        C{wait_for_client}, C{hash_table_entries},
        the flag C{use_connect} and the smtpc C{processes}: C{smx config}
        exits 0 with one warning line per option (file, line, column,
        name, reason); C{twistd smx} prints the same lines at start and
        delivers a message.
        """
        self.need(SWAKS)
        text = self.write(
            configuration(
                self.mta.port,
                smtps="user = smxs;\n    CDB_gid = 261;\n    max_wait_threads = 4;",
                qmgr="wait_for_client = 4s;\n    IQDB { hash_table_entries = 100; }",
                smar="DNS_flags = { use_connect };",
                smtpc="processes = 2;",
            )
        )
        lines = text.splitlines()

        def at(needle: str, what: str, reason: str) -> str:
            line = lineOf(text, needle)
            column = lines[line - 1].index(needle) + 1
            return "%s:%d:%d: warning: %s has no effect: %s" % (
                self.mta.config,
                line,
                column,
                what,
                reason,
            )

        from smx.config.commonoptions import MCP_USER

        expected = [
            at("user", "option 'user' in section 'smtps'", MCP_USER),
            at("CDB_gid", "option 'CDB_gid' in section 'smtps'", ""),
            at(
                "max_wait_threads",
                "option 'max_wait_threads' in section 'smtps'",
                "smx serves sessions in an event loop, not in threads",
            ),
            at("wait_for_client", "option 'wait_for_client' in section 'qmgr'", ""),
            at(
                "hash_table_entries",
                "option 'hash_table_entries' in section 'qmgr.IQDB'",
                "IQDB is a Python dict, which sizes itself",
            ),
            at(
                "DNS_flags",
                "flag 'use_connect' of option 'DNS_flags' in section 'smar'",
                "twisted.names manages its UDP sockets itself",
            ),
            at("processes", "option 'processes' in section 'smtpc'", ""),
        ]
        status, out, err = smxConfig("-f", self.mta.config)
        self.assertEqual(status, 0, err)
        got = err.splitlines()
        self.assertEqual(len(got), len(expected), err)
        for line, want in zip(got, expected):
            # the reasons left empty above are checked in smx.config's unit
            # tests; here, where and what
            self.assertTrue(line.startswith(want), (line, want))
        self.assertIn("    processes = 2; # no effect: ", out)

        self.mta.start()
        self.assertEqual(self.warningsIn(self.mta.log()), got)
        out, err, status = yield swaks(
            self.mta.port, "--from", "bob@client.test", "--to", "alice@localhost"
        )
        self.assertEqual(status, 0, (out + err).decode())
        self.assertTrue(
            (yield until(lambda: self.mta.maildir("alice"))), self.mta.log()
        )


class MessageSizeTests(_Base):
    """
    C{max_message_size = 0} means no limit, as the smtps documentation
    says (and Postfix's C{message_size_limit = 0}).
    """

    def test_noLimit(self) -> Any:
        """
        C{smx config} accepts C{max_message_size = 0} without a warning;
        C{twistd smx} offers C{SIZE} without a number in EHLO (RFC 1870:
        no fixed limit), accepts a declared size of 20 GB at MAIL and a
        9 MB message, more than the default limit of 8 MB, and delivers it.
        """
        self.write(configuration(self.mta.port, smtps="max_message_size = 0;"))
        status, out, err = smxConfig("-f", self.mta.config)
        self.assertEqual((status, err), (0, ""))
        self.assertIn("    max_message_size = 0B;\n", out)
        self.mta.start()
        body = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 9 * 1050
        self.assertGreater(len(body), 9 * 1024 * 1024)
        with smtplib.SMTP("127.0.0.1", self.mta.port, timeout=30) as client:
            client.ehlo("client.test")
            self.assertEqual(client.esmtp_features.get("size"), "")
            code, reply = client.mail("bob@client.test", ["SIZE=%d" % (20 * 1024**3,)])
            self.assertEqual(code, 250, reply)
            client.rset()
            client.sendmail("bob@client.test", ["alice@localhost"], body)
        self.assertTrue(waitFor(lambda: self.mta.maildir("alice"), 20), self.mta.log())
        [raw] = self.mta.maildir("alice")
        self.assertGreater(len(raw), 9 * 1024 * 1024)

# -*- test-case-name: smx.config.test.test_files -*-
"""
Tests for L{smx.config.files}: the TLS files a configuration names, with
certificates made at test time (L{smx.test.certs}).
"""

import os

from twisted.trial.unittest import SynchronousTestCase

from smx.config import configurationFromText
from smx.config.files import checkFiles
from smx.test.certs import makeCertificates


class TLSFileTests(SynchronousTestCase):
    """
    Tests for L{checkFiles} on C{tls} sections.
    """

    def setUp(self):
        self.certs = makeCertificates(os.path.abspath(self.mktemp()))
        os.chmod(self.certs.serverKey, 0o600)
        os.chmod(self.certs.clientKey, 0o600)

    def check(self, text):
        """
        @return: the errors as strings, and the warnings.
        """
        c = configurationFromText(text, queueDirectory=self.certs.directory)
        before = len(c.warnings)
        errors = checkFiles(c)
        return [str(e) for e in errors], c.warnings[before:]

    def tls(self, cert, key, extra=""):
        return (
            "smtps {\n  tls {\n    cert_file = %s;\n    key_file = %s;\n%s  }\n}\n"
            % (
                cert,
                key,
                extra,
            )
        )

    def test_valid(self):
        """
        A certificate with its own key (and a CA file and directory): no
        error, no warning.
        """
        self.assertEqual(
            self.check(
                self.tls(
                    self.certs.serverCert,
                    self.certs.serverKey,
                    "    CAcert_file = %s;\n    CAcert_path = %s;\n"
                    % (self.certs.caFile, self.certs.directory),
                )
            ),
            ([], []),
        )

    def test_relativeToConfiguration(self):
        """
        Relative names are resolved against the configuration directory,
        as smx resolves them.
        """
        self.assertEqual(self.check(self.tls("server.pem", "server.key")), ([], []))

    def test_missing(self):
        """
        A file that does not exist: an error at its option.
        """
        errors, _ = self.check(self.tls("/nonexistent/c.pem", self.certs.serverKey))
        self.assertEqual(
            errors,
            [
                "smx.conf:3:5: cert_file /nonexistent/c.pem: No such file or "
                "directory"
            ],
        )

    def test_directory(self):
        """
        A directory given as a file: an error at its option.
        """
        errors, _ = self.check(self.tls(self.certs.serverCert, self.certs.directory))
        self.assertEqual(
            errors,
            [
                "smx.conf:4:5: key_file %s is a directory, not a file"
                % (self.certs.directory,)
            ],
        )

    def test_notPEM(self):
        """
        A file that is not a PEM certificate or key: an error at the option.
        """
        junk = os.path.join(self.certs.directory, "junk")
        with open(junk, "w") as f:
            f.write("not a certificate\n")
        errors, _ = self.check(self.tls(junk, self.certs.serverKey))
        self.assertEqual(len(errors), 1)
        self.assertTrue(
            errors[0].startswith(
                "smx.conf:3:5: cert_file %s is not a PEM certificate: " % (junk,)
            ),
            errors,
        )
        os.chmod(junk, 0o600)
        errors, _ = self.check(self.tls(self.certs.serverCert, junk))
        self.assertTrue(
            errors[0].startswith(
                "smx.conf:4:5: key_file %s is not an unencrypted PEM private key: "
                % (junk,)
            ),
            errors,
        )

    def test_mismatch(self):
        """
        A key that belongs to another certificate: an error at key_file.
        """
        errors, _ = self.check(self.tls(self.certs.serverCert, self.certs.clientKey))
        self.assertEqual(
            errors,
            [
                "smx.conf:4:5: key_file %s does not belong to the certificate "
                "in cert_file %s" % (self.certs.clientKey, self.certs.serverCert)
            ],
        )

    def test_keyReadableByOthers(self):
        """
        A key others may read or write is an error at key_file (seed
        §9.2); one the group may read (a key shared by server and client,
        App. D) is not.
        """
        for mode, what in [(0o644, "readable"), (0o602, "writable")]:
            os.chmod(self.certs.serverKey, mode)
            self.assertEqual(
                self.check(self.tls(self.certs.serverCert, self.certs.serverKey)),
                (
                    [
                        "smx.conf:4:5: key_file %s is %s by others (mode %04o); "
                        "make it 0600 (0640 for a key shared by server and "
                        "client, App. D)" % (self.certs.serverKey, what, mode)
                    ],
                    [],
                ),
            )
        os.chmod(self.certs.serverKey, 0o640)
        self.assertEqual(
            self.check(self.tls(self.certs.serverCert, self.certs.serverKey)),
            ([], []),
        )

    def test_serverNameCertificates(self):
        """
        The C{certificate} sections of smtps's C{tls} (SNI) are checked as
        its own files: a missing file, a key of another certificate, a
        key others may read, each at its option.
        """
        extra = (
            "    certificate a { cert_file = %s; key_file = %s; }\n"
            "    certificate b {\n      cert_file = %s;\n      key_file = %s;\n"
            "    }\n"
            "    certificate c { cert_file = %s;\n key_file = %s; }\n"
            % (
                self.certs.clientCert,
                self.certs.clientKey,
                self.certs.serverCert,
                self.certs.clientKey,
                "/nonexistent.pem",
                self.certs.strangerKey,
            )
        )
        os.chmod(self.certs.strangerKey, 0o644)
        errors, warnings = self.check(
            self.tls(self.certs.serverCert, self.certs.serverKey, extra)
        )
        self.assertEqual(
            errors,
            [
                "smx.conf:8:7: key_file %s does not belong to the certificate "
                "in cert_file %s" % (self.certs.clientKey, self.certs.serverCert),
                "smx.conf:10:21: cert_file /nonexistent.pem: No such file or "
                "directory",
                "smx.conf:11:2: key_file %s is readable by others (mode 0644); "
                "make it 0600 (0640 for a key shared by server and client, "
                "App. D)" % (self.certs.strangerKey,),
            ],
        )
        self.assertEqual(warnings, [])

    def test_expired(self):
        """A certificate past its end is a warning at cert_file."""
        import datetime

        import trustme

        ca = trustme.CA()
        leaf = ca.issue_cert(
            "old.test",
            not_after=datetime.datetime(2020, 1, 2, 3, 4, 5),
        )
        cert = os.path.join(self.certs.directory, "old.pem")
        key = os.path.join(self.certs.directory, "old.key")
        leaf.cert_chain_pems[0].write_to_path(cert)
        leaf.private_key_pem.write_to_path(key)
        os.chmod(key, 0o600)
        self.assertEqual(
            self.check(self.tls(cert, key)),
            (
                [],
                [
                    "smx.conf:3:5: warning: cert_file %s expired on "
                    "2020-01-02 03:04:05 UTC" % (cert,)
                ],
            ),
        )

    def test_CAs(self):
        """
        A CAcert_file without certificates and a CAcert_path that is not a
        directory are errors at their options.
        """
        junk = os.path.join(self.certs.directory, "junk")
        with open(junk, "w") as f:
            f.write("nothing\n")
        errors, _ = self.check(
            self.tls(
                self.certs.serverCert,
                self.certs.serverKey,
                "    CAcert_file = %s;\n    CAcert_path = %s;\n" % (junk, junk),
            )
        )
        self.assertEqual(len(errors), 2, errors)
        self.assertTrue(
            errors[0].startswith(
                "smx.conf:5:5: CAcert_file %s has no PEM certificates: " % (junk,)
            ),
            errors,
        )
        self.assertEqual(
            errors[1], "smx.conf:6:5: CAcert_path %s is not a directory" % (junk,)
        )

    def test_everySection(self):
        """
        Every smtps and smtpc section is checked; all errors are reported,
        in file order.
        """
        text = self.tls(
            self.certs.serverCert, "/nonexistent/a.key"
        ) + "smtps MSA { tls { cert_file = /nonexistent/b.pem; " "key_file = %s; } }\n" % (
            self.certs.serverKey,
        ) + "smtpc { tls { cert_file = %s; key_file = %s; } }\n" % (
            self.certs.clientCert,
            self.certs.serverKey,
        )
        errors, _ = self.check(text)
        last = text.splitlines()[-1].index("key_file") + 1
        self.assertEqual(
            [e.split(": ", 1)[0] for e in errors],
            ["smx.conf:4:5", "smx.conf:7:19", "smx.conf:8:%d" % (last,)],
        )
        self.assertIn("does not belong", errors[2])

    def test_noTLS(self):
        """
        Without tls sections nothing is checked.
        """
        self.assertEqual(self.check("smtps { port = 2525; }\n"), ([], []))

# -*- test-case-name: smx.config.test.test_reconcile -*-
"""
Tests for L{smx.config.reconcile}: settings that depend on each other.
"""

from twisted.trial.unittest import SynchronousTestCase

from smx.config import ConfigError, configurationFromText


def error(test, text):
    return str(test.assertRaises(ConfigError, configurationFromText, text))


def warnings(text):
    return configurationFromText(text).warnings


class ServiceTests(SynchronousTestCase):
    """
    The notes of seed §5.2.
    """

    def test_portAndSocket(self):
        """
        At most one of port and socket.
        """
        self.assertEqual(
            error(self, "smtps {\n  port = 25;\n  socket { name = s; }\n}"),
            "smx.conf:2:3: at most one of 'port' and 'socket' may be given in "
            "section 'smtps'",
        )

    def test_passNeedsSocket(self):
        """
        mcp_type = pass requires pass_fd_socket.
        """
        self.assertEqual(
            error(self, "smtps {\n  port = 25; mcp_type = pass;\n}"),
            "smx.conf:2:14: mcp_type = pass requires 'pass_fd_socket' in "
            "section 'smtps'",
        )
        self.assertEqual(
            error(self, "smtps MTA { type = pass; }"),
            "smx.conf:1:13: mcp_type = pass requires 'pass_fd_socket' in "
            "section 'smtps MTA'",
        )

    def test_logfileIdNeedsPassId(self):
        """
        use_id_in_logfile_name requires pass_id.
        """
        self.assertEqual(
            error(self, "smtpc { use_id_in_logfile_name = yes; }"),
            "smx.conf:1:9: use_id_in_logfile_name requires 'pass_id' in "
            "section 'smtpc'",
        )

    def test_processes(self):
        """
        min_processes must not exceed max_processes.
        """
        self.assertEqual(
            error(self, "smtpc { min_processes = 4; }"),
            "smx.conf:1:9: min_processes (4) must not be larger than "
            "max_processes (1, the default) in section 'smtpc'",
        )
        self.assertEqual(
            error(self, "smtpc { min_processes = 4;\n max_processes = 2; }"),
            "smx.conf:2:2: min_processes (4) must not be larger than "
            "max_processes (2) in section 'smtpc'",
        )


class SMTPSTests(SynchronousTestCase):
    """
    The notes of seed §5.9.
    """

    def test_daemonAddressAndPassFdSocket(self):
        """
        Only one of daemon_address and pass_fd_socket.
        """
        self.assertEqual(
            error(self, 'smtps { pass_fd_socket = x;\n daemon_address = ":25"; }'),
            "smx.conf:2:2: only one of 'daemon_address' and 'pass_fd_socket' may "
            "be given in section 'smtps'",
        )

    def test_duplicateId(self):
        """
        Servers should have different ids when they are given.
        """
        self.assertEqual(
            warnings("smtps A { id = 1; }\nsmtps B { id = 1; }"),
            [
                "smx.conf:2:11: warning: id 1 is also used by section 'smtps A'; "
                "the ids of SMTP servers should differ (§5.9.1)"
            ],
        )

    def test_duplicatePort(self):
        """
        Two servers cannot listen on the same address and port.
        """
        self.assertEqual(
            error(self, "smtps A { port = 25; }\nsmtps B { port = 25; }"),
            "smx.conf:2:11: port 25 on 0.0.0.0 is already used by section 'smtps A'",
        )
        configurationFromText(
            "smtps A { port = 25; address = 127.0.0.1; }\n"
            "smtps B { port = 25; address = 127.0.0.2; }"
        )

    def test_certWithoutKey(self):
        """
        cert_file and key_file go together.
        """
        self.assertEqual(
            error(self, "smtps { tls { cert_file = c.pem; } }"),
            "smx.conf:1:15: 'cert_file' requires 'key_file' in section 'smtps.tls'",
        )
        self.assertEqual(
            error(self, "smtpc { tls { key_file = k.pem; } }"),
            "smx.conf:1:15: 'key_file' requires 'cert_file' in section 'smtpc.tls'",
        )

    def test_tlsFlagWarnings(self):
        """
        TLS relaying flags without what they need give warnings.
        """
        self.assertEqual(
            warnings(
                "smtps { tls { cert_file = c; key_file = k;\n"
                "  flags = { allow_relaying_if_verified, check_access_map_for_relaying }; } }"
            ),
            [
                "smx.conf:2:3: warning: the tls flag allow_relaying_if_verified has "
                "no effect without CAcert_file or CAcert_path in section 'smtps.tls'",
                "smx.conf:2:3: warning: the tls flag check_access_map_for_relaying "
                "needs the access map: add 'access' to the flags of section 'smtps'",
            ],
        )


class AuthTests(SynchronousTestCase):
    """
    AUTH set-ups that do nothing give one warning each, at the option.
    """

    def test_neverOffered(self):
        """
        A password file without TLS: AUTH is offered only after STARTTLS,
        so never.
        """
        self.assertEqual(
            warnings("smtps MSA {\n  auth { password_file = pw; } }"),
            [
                "smx.conf:2:10: warning: AUTH is never offered: it needs "
                "STARTTLS, but section 'smtps MSA.tls' has no cert_file (set "
                "tls { cert_file; key_file; } or the auth flag "
                "allow_plaintext_without_tls)"
            ],
        )

    def test_offered(self):
        """
        With TLS, or with allow_plaintext_without_tls, AUTH is offered and
        (trusted_mechs not set) allows relaying: no warning.
        """
        self.assertEqual(
            warnings(
                "smtps { tls { cert_file = c; key_file = k; }\n"
                "  auth { password_file = pw; } }"
            ),
            [],
        )
        self.assertEqual(
            warnings(
                "smtps { auth { password_file = pw;\n"
                "  flags = { allow_plaintext_without_tls }; } }"
            ),
            [],
        )

    def test_noAuth(self):
        """
        trusted_mechs alone (the seed's §5.9.1 example, AUTH configured
        outside smx.conf in sendmail X) gives no warning.
        """
        self.assertEqual(warnings("smtps { trusted_auth_mechs = {}; }"), [])

    def test_neverRelays(self):
        """
        trusted_mechs that names none of the offered mechanisms (or none
        at all): a successful AUTH never allows relaying.
        """
        tls = "tls { cert_file = c; key_file = k; }\n"
        self.assertEqual(
            warnings(
                "smtps { %s auth { password_file = pw;\n"
                "  trusted_mechs = {}; } }" % (tls,)
            ),
            [
                "smx.conf:3:3: warning: a successful AUTH never allows relaying: "
                "trusted_mechs is empty (leave it out to let every mechanism "
                "allow relaying)"
            ],
        )
        self.assertEqual(
            warnings(
                "smtps { %s auth { password_file = pw; flags = { noplaintext };\n"
                "  trusted_mechs = { plain, DIGEST-MD5 }; } }" % (tls,)
            ),
            [
                "smx.conf:3:3: warning: a successful AUTH never allows relaying: "
                "trusted_mechs (PLAIN, DIGEST-MD5) names none of the mechanisms "
                "offered (CRAM-MD5)"
            ],
        )
        self.assertEqual(
            warnings(
                "smtps { %s auth { password_file = pw;\n"
                "  trusted_mechs = { cram-md5 }; } }" % (tls,)
            ),
            [],
        )

    def test_both(self):
        """
        Both problems at once: two lines.
        """
        self.assertEqual(
            len(
                warnings("smtps { auth { password_file = pw;\n trusted_mechs = {}; } }")
            ),
            2,
        )

    def test_backEndCombinations(self):
        """
        Options an AUTH back end cannot use are errors naming the option
        in C{smx config}, not only when twistd starts.
        """
        cases = [
            ('auth { path = "/x"; }', "path is used with type = dovecot"),
            ('auth { address = "127.0.0.1:9"; }', "address is used with type"),
            (
                'auth { type = dovecot; password_file = "/p"; }',
                "password_file is used only with type = file",
            ),
            (
                'auth { type = saslauthd; address = "127.0.0.1:9"; }',
                "saslauthd listens on a Unix domain socket only",
            ),
            (
                "auth { type = saslauthd; flags = { noplaintext }; }",
                "saslauthd checks plaintext passwords only",
            ),
            (
                'auth { type = dovecot; path = "/x"; address = "127.0.0.1:9"; }',
                "write either path or address, not both",
            ),
            ("auth { type = dovecot; realm = r; }", "realm is sent to saslauthd"),
        ]
        for auth, message in cases:
            text = error(self, "smtps {\n  %s\n}" % (auth,))
            self.assertTrue(text.startswith("smx.conf:2:"), text)
            self.assertIn(message, text)
        warnings('smtps { auth { type = dovecot; path = "/x"; } }')
        warnings("smtps { auth { type = saslauthd; realm = r; } }")

    def test_onceAfterReconcileAgain(self):
        """
        Checking again (after command-line overrides, as twistd smx does)
        does not repeat a warning.
        """
        c = configurationFromText("smtps {\n  auth { password_file = pw; } }")
        c.reconcile()
        self.assertEqual(len(c.warnings), 1)


class DaemonAddressTests(SynchronousTestCase):
    """
    C{address} and C{port} beside C{daemon_address}.
    """

    def test_unusedAddressAndPort(self):
        """
        smtps listens on its daemon_address: an address or port set as
        well has no effect, a warning at each.
        """
        self.assertEqual(
            warnings(
                'smtps {\n  daemon_address = "127.0.0.1:2525";\n'
                "  address = 127.0.0.2; port = 25; }"
            ),
            [
                "smx.conf:3:3: warning: option 'address' in section 'smtps' "
                "has no effect: smx listens on its daemon_address",
                "smx.conf:3:24: warning: option 'port' in section 'smtps' has "
                "no effect: smx listens on its daemon_address",
            ],
        )
        self.assertEqual(warnings("smtps { address = 127.0.0.2; port = 25; }"), [])


class QMGRTests(SynchronousTestCase):
    """
    The conditions of seed §5.7.
    """

    def test_diskSpace(self):
        """
        ok_disk_space must be larger than min_disk_space.
        """
        self.assertEqual(
            error(self, "qmgr { min_disk_space = 100MB;\n ok_disk_space = 50MB; }"),
            "smx.conf:2:2: ok_disk_space (50MB) must be larger than "
            "min_disk_space (100MB)",
        )
        self.assertEqual(
            error(self, "qmgr { min_disk_space = 1GB; }"),
            "smx.conf:1:8: ok_disk_space (200MB, the default) must be larger "
            "than min_disk_space (1GB)",
        )

    def test_retryDelays(self):
        """
        retry_min_delay must not exceed retry_max_delay.
        """
        self.assertEqual(
            error(self, "qmgr { retry_min_delay = 2h; }"),
            "smx.conf:1:8: retry_min_delay (2h) must not be larger than "
            "retry_max_delay (1h, the default)",
        )

    def test_connections(self):
        """
        smtpc_initial_connections must not exceed smtpc_max_connections.
        """
        self.assertEqual(
            error(self, "qmgr { smtpc_max_connections = 5; }"),
            "smx.conf:1:8: smtpc_initial_connections (10, the default) must not "
            "be larger than smtpc_max_connections (5)",
        )

    def test_timeoutWarnings(self):
        """
        SMAR_timeout should exceed the DNS timeout.
        """
        self.assertEqual(
            warnings("smar { DNS_timeout = 2m; }"),
            [
                "smx.conf:1:8: warning: SMAR_timeout (1m, the default) should be "
                "larger than the DNS_timeout of smar (2m)"
            ],
        )

    def test_activeQueueWarning(self):
        """
        AQ_max_entries should exceed the recipients of one transaction.
        """
        self.assertEqual(
            warnings("qmgr { AQ_max_entries = 100; }"),
            [
                "smx.conf:1:8: warning: AQ_max_entries (100) should be larger than "
                "the max_recipients_per_transaction of section 'smtps' (1000, the "
                "default)"
            ],
        )

    def test_diskSpaceWarning(self):
        """
        min_disk_space should exceed max_message_size.
        """
        self.assertEqual(
            warnings("smtps { max_message_size = 150MB; }"),
            [
                "smx.conf:1:9: warning: min_disk_space (100MB, the default) should "
                "be much larger than the max_message_size of section 'smtps' (150MB)"
            ],
        )


class SMTPCTests(SynchronousTestCase):
    """
    The note of seed §5.10.
    """

    def test_remotePort(self):
        """
        Every smtpc section uses the same remote_port.
        """
        self.assertEqual(
            error(self, "smtpc a { }\nsmtpc b { remote_port = 2525; }"),
            "smx.conf:2:11: remote_port (2525) differs from the remote_port of "
            "section 'smtpc a' (25); every smtpc section must use the same",
        )


class MapTests(SynchronousTestCase):
    """
    Map declarations (seed §5.8.1).
    """

    def test_optionOfOtherType(self):
        """
        Options belong to one map type.
        """
        self.assertEqual(
            error(self, "map m { type = passwd;\n file = x.db; }"),
            "smx.conf:2:2: option 'file' is only valid for maps of type hash, not passwd",
        )
        self.assertEqual(
            error(self, "map m { type = hash; file = x.db; maps = { a }; }"),
            "smx.conf:1:35: option 'maps' is only valid for maps of type sequence, "
            "not hash",
        )

    def test_hashNeedsFile(self):
        """
        A hash map needs its file.
        """
        self.assertEqual(
            error(self, "map m { type = hash; }"),
            "smx.conf:1:1: map 'm' of type hash requires option 'file'",
        )

    def test_socketMaps(self):
        """
        A socket map needs a path, or an address and a port.
        """
        c = configurationFromText(
            "map a { type = socket; path = sock; mapname = virt; }\n"
            "map b { type = socket; address = 127.0.0.1; port = 7777; }",
            queueDirectory="/q",
        )
        a, b = c.sections("map")
        self.assertEqual((a["path"], a["mapname"]), ("/q/sock", "virt"))
        self.assertEqual((b["address"], b["port"]), ("127.0.0.1", 7777))
        self.assertEqual(
            error(self, "map m { type = socket; address = 127.0.0.1; }"),
            "smx.conf:1:1: map 'm' of type socket requires 'path' or both "
            "'address' and 'port'",
        )
        self.assertEqual(
            error(self, "map m { type = socket; path = s; port = 1; }"),
            "smx.conf:1:24: map 'm' of type socket needs either 'path' or "
            "'address' and 'port', not both",
        )

    def test_sequences(self):
        """
        A sequence names declared maps, in either place, in any order.
        """
        c = configurationFromText(
            "map seq { type = sequence; maps = { a, B }; }\n"
            "smar { map b { type = passwd; } local_user_map = seq; }\n"
            "map a { type = passwd; }"
        )
        self.assertEqual([m.name for m in c.sections("map")], ["seq", "b", "a"])
        self.assertEqual(c.section("smar")["local_user_map"], "seq")
        self.assertEqual(
            error(self, "map s { type = sequence; }"),
            "smx.conf:1:1: map 's' of type sequence requires a non-empty 'maps' list",
        )
        self.assertEqual(
            error(self, "map s { type = sequence;\n maps = { a }; }"),
            "smx.conf:2:2: map 's' refers to undeclared map 'a'",
        )

    def test_cycle(self):
        """
        A sequence cannot contain itself.
        """
        self.assertEqual(
            error(
                self,
                "map a { type = sequence; maps = { b }; }\n"
                "map b { type = sequence; maps = { a }; }",
            ),
            "smx.conf:1:26: map 'a' contains itself (a -> b -> a)",
        )

    def test_selfReference(self):
        """
        A sequence that names itself.
        """
        self.assertEqual(
            error(self, "map a { type = sequence; maps = { a }; }"),
            "smx.conf:1:26: map 'a' contains itself (a -> a)",
        )

    def test_longChains(self):
        """
        Long chains and many shared members are checked quickly, without
        running out of stack.
        """
        n = 3000
        text = "".join(
            "map m%d { type = sequence; maps = { m%d, m%d }; }\n" % (i, i + 1, i + 2)
            for i in range(n)
        )
        text += "map m%d { type = passwd; }\nmap m%d { type = passwd; }\n" % (n, n + 1)
        self.assertEqual(len(configurationFromText(text).sections("map")), n + 2)
        text += "map m%d { type = sequence; maps = { m0 }; }\n" % (n + 2,)
        text = text.replace(
            "maps = { m%d, m%d }" % (n - 1, n), "maps = { m%d, m%d }" % (n + 2, n)
        )
        e = self.assertRaises(ConfigError, configurationFromText, text)
        self.assertIn("contains itself (m0 -> m1 -> ", str(e))

    def test_localUserMap(self):
        """
        local_user_map must name a declared map.
        """
        self.assertEqual(
            error(self, "smar {\n local_user_map = users; }"),
            "smx.conf:2:2: local_user_map refers to undeclared map 'users' "
            "(declare it with 'map users { type = ...; }')",
        )

    def test_dnsblWithoutAccess(self):
        """
        A DNS blacklist needs the access map of the SMTP servers.
        """
        self.assertEqual(
            warnings("smar { dnsbl { domain = d.tld; tag = d; } }"),
            [
                "smx.conf:1:8: warning: dnsbl needs the access map, but no smtps "
                "section has flags = {access} (§5.8.2)"
            ],
        )
        self.assertEqual(
            warnings(
                "smar { dnsbl { domain = d.tld; tag = d; } }\n"
                "smtps { flags = {access}; }"
            ),
            [],
        )

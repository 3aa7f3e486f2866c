# -*- test-case-name: smx.config.test.test_build -*-
"""
Tests for L{smx.config.build}: names are checked against the option table
(with suggestions), sections appear as often as they may, alternative
spellings land where they belong, and other top-level sections are MCP
services.
"""

from twisted.trial.unittest import SynchronousTestCase

from smx.config import ConfigError, configurationFromText


def error(test, text):
    return str(test.assertRaises(ConfigError, configurationFromText, text))


class NameTests(SynchronousTestCase):
    """
    Unknown names are errors with the closest known name.
    """

    def test_unknownOption(self):
        """
        The example of the brief: a typo in an option name.
        """
        self.assertEqual(
            error(self, "# smtps\n\nsmtps {\n    io_timout = 5;\n}\n"),
            "smx.conf:4:5: unknown option 'io_timout' in section 'smtps'; "
            "did you mean 'io_timeout'?",
        )

    def test_unknownOptionNoGuess(self):
        """
        Without a close match, the message only names the option.
        """
        self.assertEqual(
            error(self, "smtps { frobnicate = 1; }"),
            "smx.conf:1:9: unknown option 'frobnicate' in section 'smtps'",
        )

    def test_optionOfAnotherSection(self):
        """
        An option valid elsewhere says where.
        """
        self.assertEqual(
            error(self, "LMTP_socket = x;"),
            "smx.conf:1:1: unknown option 'LMTP_socket' in the global section "
            "('LMTP_socket' is valid in 'smtpc')",
        )

    def test_unknownGlobalOption(self):
        """
        A typo in a global option.
        """
        self.assertEqual(
            error(self, "hostnme = x;"),
            "smx.conf:1:1: unknown option 'hostnme' in the global section; "
            "did you mean 'hostname'?",
        )

    def test_unknownSubsectionOption(self):
        """
        Subsections are named by their path.
        """
        self.assertEqual(
            error(self, "smtps MTA {\n tls { cert_fil = a; } }"),
            "smx.conf:2:8: unknown option 'cert_fil' in section 'smtps MTA.tls'; "
            "did you mean 'cert_file'?",
        )

    def test_unknownSection(self):
        """
        A typo in a section keyword (without mcp_type).
        """
        self.assertEqual(
            error(self, "smpts { port = 25; }"),
            "smx.conf:1:1: unknown section 'smpts' in the global section; "
            "did you mean 'smtps'?",
        )
        self.assertEqual(
            error(self, "smtps { tsl { } }"),
            "smx.conf:1:9: unknown section 'tsl' in section 'smtps'; "
            "did you mean 'tls'?",
        )

    def test_unknownSectionNoGuess(self):
        """
        An unknown top-level section without C{mcp_type} explains what a
        service section needs.
        """
        self.assertEqual(
            error(self, "procmail { path = /usr/bin/procmail; }"),
            "smx.conf:1:1: unknown section 'procmail' in the global section "
            "(a service started by MCP needs 'mcp_type')",
        )
        self.assertEqual(
            error(self, "tls { }"),
            "smx.conf:1:1: unknown section 'tls' in the global section "
            "('tls' is valid in 'smtps', 'smtpc')",
        )

    def test_optionUsedAsSection(self):
        """
        An option written as a section, and the reverse.
        """
        self.assertEqual(
            error(self, "smtps { io_timeout { } }"),
            "smx.conf:1:20: expected '=' after 'io_timeout' ('io_timeout' is an "
            "option: write 'io_timeout = value;')",
        )
        self.assertEqual(
            error(self, "smtps { tls = yes; }"),
            "smx.conf:1:13: expected '{' after 'tls' ('tls' is a section: write "
            "'tls { ... }')",
        )
        self.assertEqual(
            error(self, "qmgr\n  = 3;\n"),
            "smx.conf:2:3: expected '{' after 'qmgr' ('qmgr' is a section: write "
            "'qmgr { ... }')",
        )

    def test_caseInsensitive(self):
        """
        Keywords and option names are case-insensitive (seed §5.1).
        """
        c = configurationFromText(
            "SMTPS { IO_Timeout = 61; Flags = {8BITMIME}; TLS { Cert_File = c; Key_File = k; } }\n"
            "Qmgr { defedb { Page_Size = 8KB; } Log { FACILITY = MAIL; } }"
        )
        s = c.section("smtps")
        self.assertEqual(s["io_timeout"], 61.0)
        self.assertEqual(s["IO_TIMEOUT"], 61.0)
        self.assertTrue(s.isSet("Io_Timeout"))
        self.assertEqual(s["flags"], frozenset({"8bitmime"}))
        self.assertEqual(s.keyword, "smtps")
        self.assertEqual(c.section("QMGR").section("DEFEDB")["page_size"], 8192)
        self.assertEqual(c.section("qmgr").section("log")["facility"], "mail")

    def test_duplicateOption(self):
        """
        An option may be set only once per section.
        """
        self.assertEqual(
            error(self, "smtps {\n  port = 25;\n  PORT = 26;\n}"),
            "smx.conf:3:3: option 'PORT' in section 'smtps' is already set at line 2",
        )


class SectionCountTests(SynchronousTestCase):
    """
    How often sections may appear, and their names.
    """

    def test_singleQmgr(self):
        """
        Only one qmgr section.
        """
        self.assertEqual(
            error(self, "qmgr { }\nqmgr { }"),
            "smx.conf:2:1: section 'qmgr' is already given at line 1 "
            "(only one is allowed)",
        )

    def test_singleSubsection(self):
        """
        Only one tls subsection per smtps section.
        """
        self.assertEqual(
            error(self, "smtps { tls { } tls { } }"),
            "smx.conf:1:17: section 'tls' is already given at line 1 "
            "(only one is allowed in section 'smtps')",
        )

    def test_namedSmtps(self):
        """
        Several smtps sections need different names; at most one unnamed.
        """
        c = configurationFromText("smtps MTA { port = 25; }\nsmtps MSA { port = 587; }")
        self.assertEqual([s.name for s in c.sections("smtps")], ["MTA", "MSA"])
        self.assertEqual(
            error(self, "smtps { }\nsmtps { }"),
            "smx.conf:2:1: a second unnamed 'smtps' section (the first is at "
            "line 1); give each a name: 'smtps NAME { ... }'",
        )
        self.assertEqual(
            error(self, "smtps MTA { }\nsmtps mta { }"),
            "smx.conf:2:7: section 'smtps mta' is already given at line 1",
        )

    def test_noName(self):
        """
        Subsections such as tls take no name.
        """
        self.assertEqual(
            error(self, "smtps { tls server { } }"),
            "smx.conf:1:13: section 'tls' takes no name (found 'server')",
        )

    def test_dnsblRepeated(self):
        """
        dnsbl may be given up to 8 times.
        """
        body = "".join(
            "dnsbl { domain = d%d.tld; tag = t%d; }\n" % (i, i) for i in range(8)
        )
        c = configurationFromText("smar {\n%s}" % (body,))
        lists = c.section("smar").sections("dnsbl")
        self.assertEqual(
            [(s["domain"], s["tag"]) for s in lists],
            [("d%d.tld" % i, "t%d" % i) for i in range(8)],
        )
        self.assertEqual(
            error(self, "smar {\n%sdnsbl { domain = x.tld; tag = x; }\n}" % (body,)),
            "smx.conf:10:1: too many 'dnsbl' sections in section 'smar' (at most 8)",
        )

    def test_requiredOptions(self):
        """
        dnsbl needs domain and tag; the error points at the section.
        """
        self.assertEqual(
            error(self, "smar {\n  dnsbl { domain = dnsbl.tld; }\n}"),
            "smx.conf:2:3: section 'smar.dnsbl' requires option 'tag'",
        )

    def test_mapNeedsName(self):
        """
        map declarations are named.
        """
        self.assertEqual(
            error(self, "map { type = passwd; }"),
            "smx.conf:1:1: section 'map' needs a name: 'map NAME { ... }'",
        )
        self.assertEqual(
            error(self, "map a { type = passwd; }\nsmar { map A { type = passwd; } }"),
            "smx.conf:2:12: section 'map A' is already given at line 1",
        )

    def test_emptyName(self):
        """
        A quoted empty name is refused.
        """
        self.assertEqual(
            error(self, 'smtps "" { }'), "smx.conf:1:7: empty section name"
        )


class AliasTests(SynchronousTestCase):
    """
    Other spellings of options (seed §5.9, §5.9.1).
    """

    def test_type(self):
        """
        C{type} is C{mcp_type}.
        """
        s = configurationFromText("smtps { type = wait; }").section("smtps")
        self.assertEqual(s["mcp_type"], "wait")
        self.assertEqual(s["type"], "wait")
        self.assertTrue(s.isSet("mcp_type"))
        self.assertEqual(s.writtenAs("mcp_type"), "type")
        self.assertEqual(
            error(self, "smtps { type = wait; mcp_type = wait; }"),
            "smx.conf:1:22: option 'mcp_type' in section 'smtps' is already set "
            "at line 1 (as 'type')",
        )

    def test_maxRecipients(self):
        """
        C{max_recipients} is the deprecated C{max_recipients_per_session}.
        """
        c = configurationFromText("smtps {\n max_recipients = 50;\n}")
        s = c.section("smtps")
        self.assertEqual(s["max_recipients_per_session"], 50)
        self.assertEqual(s["max_recipients"], 50)
        self.assertEqual(
            c.warnings,
            [
                "smx.conf:2:2: warning: option 'max_recipients' is deprecated, "
                "use 'max_recipients_per_session'"
            ],
        )

    def test_authAliases(self):
        """
        C{trusted_auth_mechs} and C{auth_flags} write into C{auth { }},
        also when an auth section follows.
        """
        c = configurationFromText(
            "smtps { trusted_auth_mechs = { CRAM-MD5, DIGEST-MD5 };\n"
            "  auth_flags = { noplaintext };\n"
            "  auth { password_file = passwd; } }",
            configDirectory="/etc/smx",
        )
        s = c.section("smtps")
        auth = s.section("auth")
        self.assertEqual(auth["trusted_mechs"], ["CRAM-MD5", "DIGEST-MD5"])
        self.assertEqual(auth["flags"], frozenset({"noplaintext"}))
        self.assertEqual(auth["password_file"], "/etc/smx/passwd")
        self.assertEqual(s["auth_flags"], frozenset({"noplaintext"}))
        self.assertTrue(s.isSet("trusted_auth_mechs"))
        self.assertEqual(len(s.sections("auth")), 1)

    def test_authAliasConflict(self):
        """
        Setting both spellings is an error.
        """
        self.assertEqual(
            error(
                self,
                "smtps {\n auth { flags = {noactive}; }\n auth_flags = {noplaintext};\n}",
            ),
            "smx.conf:3:2: option 'auth_flags' in section 'smtps' is already set "
            "at line 2 (as 'flags')",
        )

    def test_lmtplFlag(self):
        """
        The seed's spelling C{lmtpl_does_not_imply_relaying} is accepted.
        """
        s = configurationFromText(
            "smtps { flags = { lmtpl_does_not_imply_relaying }; }"
        ).section("smtps")
        self.assertEqual(s["flags"], frozenset({"lmtp_does_not_imply_relaying"}))

    def test_qmgrAliasesSpellings(self):
        """
        qmgr C{aliases} accepts the seed's names and smar's flag names.
        """
        for text, value in [
            ("localpart", "localpart"),
            ("localdomains", "localdomains"),
            ("all", "all"),
            ("local_domains", "localdomains"),
            ("all_domains", "all"),
        ]:
            c = configurationFromText("qmgr { aliases = %s; }" % (text,))
            self.assertEqual(c.section("qmgr")["aliases"], value)


class ServiceSectionTests(SynchronousTestCase):
    """
    Other top-level sections with C{mcp_type} are services started by MCP
    (seed §5.3).
    """

    def test_service(self):
        """
        A local mailer started by MCP.
        """
        c = configurationFromText(
            "procmail mailer {\n  mcp_type = accept; user = smx;\n"
            "  socket { name = lmtpsock; umask = 007; }\n"
            '  path = /usr/bin/procmail; arguments = "procmail -z";\n'
            "  pass_id = -i; use_id_in_logfile_name = yes; max_processes = 4;\n}",
            queueDirectory="/var/spool/smx",
        )
        [s] = c.sections("procmail")
        self.assertEqual(s.keyword, "procmail")
        self.assertEqual(s.name, "mailer")
        self.assertIs(c.section("procmail"), s)
        self.assertEqual(s["mcp_type"], "accept")
        self.assertEqual(s.section("socket")["name"], "/var/spool/smx/lmtpsock")
        self.assertEqual(s.section("socket")["umask"], 0o7)
        self.assertTrue(s["use_id_in_logfile_name"])
        self.assertEqual(c.sections(), [s])

    def test_serviceRequires(self):
        """
        A service section needs mcp_type, path and arguments, and takes
        only MCP options.
        """
        self.assertEqual(
            error(self, "procmail {\n  mcp_type = accept;\n  arguments = x;\n}"),
            "smx.conf:1:1: section 'procmail' requires option 'path'",
        )
        self.assertEqual(
            error(
                self,
                "procmail { type = wait; path = p; arguments = a; io_timeout = 5; }",
            ),
            "smx.conf:1:50: unknown option 'io_timeout' in section 'procmail' "
            "('io_timeout' is valid in 'smtps', 'smtpc')",
        )

    def test_serviceLikeComponent(self):
        """
        A service whose keyword looks like a component's gets a warning.
        """
        c = configurationFromText("smtpd { mcp_type = wait; path = p; arguments = a; }")
        self.assertEqual(
            c.warnings,
            [
                "smx.conf:1:1: warning: section 'smtpd' is not an smx component; "
                "it is taken as a service started by MCP (did you mean 'smtps'?)",
            ],
        )

    def test_unknownSectionInComponent(self):
        """
        Only the top level may have service sections.
        """
        self.assertEqual(
            error(self, "smtps { procmail { mcp_type = wait; } }"),
            "smx.conf:1:9: unknown section 'procmail' in section 'smtps'",
        )

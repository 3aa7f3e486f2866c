# -*- test-case-name: smx.config.test.test_effect -*-
"""
Every option is either used or reported (L{smx.config.effect}).

The option table marks what embedded smx does not use (L{Option.inert},
L{Option.inertFlags}, L{SectionSpec.inert}).  These tests keep the marks
true: an option, flag or section that no component reads and that is not
marked fails (L{TableTests.test_usedOrMarked}), and so does a marked one
that a component reads (L{TableTests.test_markedNotRead} by the source,
L{BuildTests} by recording what the components read while they are built
from a configuration that sets every marked option).
"""

from __future__ import annotations

import os
import re
import types
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

import smx
from smx.config import configurationFromText, loadConfiguration
from smx.config import options as table
from smx.config.commonoptions import MCP_ONLY, MCP_USER, NOT_STARTED
from smx.config.effect import inertSection, noEffect, unusedBecause
from smx.config.model import Section
from smx.config.render import renderConfiguration
from smx.config.schema import Option, SectionSpec
from smx.config.values import Flags

SMX = os.path.dirname(os.path.abspath(smx.__file__))
CONFIG = os.path.join(SMX, "config")

#: inert names that the source uses for something else, so that searching
#: for them says nothing (L{BuildTests} checks them by what is read);
#: names of options that some component uses are found by
#: L{_sharedNames}
OTHER_MEANINGS = {
    "user": "also the syslog facility user, the SASL user of AUTH and the "
    "user part of an alias",
}

#: sections of the settings of a shipped pmilter: its module reads them
#: with C{settingsOf(server, self.name)} (L{smx.pmilter.settings})
PLUGIN_SECTIONS = {
    "greylist": "smx/pmilter/greylist.py",
    "rules": "smx/pmilter/rules.py",
}


def pluginReads(keyword: str) -> bool:
    """
    Does the shipped pmilter named C{keyword} read its settings section?
    """
    text = SOURCES.get(PLUGIN_SECTIONS.get(keyword, ""), "")
    return 'name = "%s"' % (keyword,) in text and "settingsOf(server" in text


def _sources() -> Dict[str, str]:
    """
    The source of smx's components: every module of smx but smx.config,
    the tests and the fakes (C{testing.py}).
    """
    found = {}
    for directory, dirs, files in os.walk(SMX):
        dirs[:] = [
            d
            for d in dirs
            if d not in ("test", "__pycache__") and os.path.join(directory, d) != CONFIG
        ]
        for name in files:
            if name.endswith(".py") and name != "testing.py":
                path = os.path.join(directory, name)
                with open(path, encoding="utf-8") as f:
                    found[os.path.relpath(path, os.path.dirname(SMX))] = f.read()
    return found


SOURCES = _sources()


def quotedIn(name: str, caseless: bool = False) -> List[str]:
    """
    @return: the modules of L{SOURCES} that have C{name} as a quoted
        string (C{"name"} or C{'name'}), or as a part of a quoted path of
        options (C{"IBDB.size"}, C{"/hostname"}, as the settings classes
        of L{smx.config.settings} name them).
    """
    pattern = re.compile(
        r"""(["'])/?(?:[\w-]+\.)*%s(?:\.[\w-]+)*\1""" % (re.escape(name),),
        re.IGNORECASE if caseless else 0,
    )
    return sorted(path for path, text in SOURCES.items() if pattern.search(text))


def sectionIn(keyword: str) -> List[str]:
    """
    @return: the modules of L{SOURCES} that ask for a kind of section:
        C{.section("tls")}, C{.sections("smtpc")}, C{_subsection(s,
        "tls")}, or a quoted path of options through it (C{"IBDB.size"}).
    """
    name = re.escape(keyword)
    pattern = re.compile(
        r"""[Ss]ections?\((?:\s*[\w.]+\s*,)?\s*(["'])%s\1"""
        r"""|(["'])/?(?:[\w-]+\.)*%s\.[\w.-]+\2""" % (name, name)
    )
    return sorted(path for path, text in SOURCES.items() if pattern.search(text))


def walk() -> Iterator[Tuple[Tuple[str, ...], SectionSpec, Optional[str]]]:
    """
    Every kind of section of the table with its path and why it has no
    effect (its own mark or an enclosing section's), or C{None}.
    """
    stack: List[Tuple[Tuple[str, ...], SectionSpec, Optional[str]]] = [
        ((), table.ROOT, None)
    ]
    while stack:
        path, spec, inert = stack.pop(0)
        inert = inert or spec.inert
        yield path, spec, inert
        for sub in spec.subsections:
            stack.append((path + (sub.keyword,), sub, inert))


def _sharedNames() -> Set[str]:
    """
    Names of options and sections that have an effect somewhere in the
    table: a marked option of the same name elsewhere cannot be told
    apart by searching the source.
    """
    names = set()
    for path, spec, inert in walk():
        if inert is not None:
            continue
        if path:
            names.add(spec.keyword)
        names.update(o.name for o in spec.options if o.inert is None)
    return names


def _where(path: Tuple[str, ...]) -> str:
    return ".".join(path) or "the global section"


class TableTests(SynchronousTestCase):
    """
    The marks of the option table against the source of the components.
    """

    def test_usedOrMarked(self) -> None:
        """
        Every option, flag and section of the table is either marked as
        without effect or named as a quoted string in a component's source
        (C{section["name"]}, C{_get(section, "name")}, C{"flag" in
        flags}); the failure lists those that are neither: read them, or
        mark them with C{inert=} / C{inertFlags=} and the reason.
        """
        missing = []
        for path, spec, inert in walk():
            if inert is not None:
                continue
            if path and not (sectionIn(spec.keyword) or pluginReads(spec.keyword)):
                missing.append("section %s" % (_where(path),))
            for option in spec.options:
                if option.aliasOf is not None or option.inert is not None:
                    continue
                if not quotedIn(option.name):
                    missing.append("option %s in %s" % (option.name, _where(path)))
                if isinstance(option.type, Flags):
                    for flag in option.type.choices:
                        if option.inertFlag(flag) is None and not quotedIn(flag, True):
                            missing.append(
                                "flag %s of %s in %s"
                                % (flag, option.name, _where(path))
                            )
        self.assertEqual(missing, [], "neither read by a component nor marked inert")

    def test_markedNotRead(self) -> None:
        """
        No component's source names a marked option, flag or section (its
        mark must go when someone implements it), except names that mean
        something else too (L{_sharedNames}, L{OTHER_MEANINGS}), which
        L{BuildTests} checks.
        """
        shared = _sharedNames()
        read = []
        for path, spec, inert in walk():
            if spec.inert is not None and spec.keyword not in shared:
                for module in sectionIn(spec.keyword):
                    read.append("section %s: %s" % (_where(path), module))
            if inert is not None:
                continue  # its options can only be read through it
            for option in spec.options:
                if option.aliasOf is not None:
                    continue
                name = option.name
                if option.inert is not None and name not in shared:
                    if name not in OTHER_MEANINGS:
                        for module in quotedIn(name):
                            read.append("%s in %s: %s" % (name, _where(path), module))
                for flag, why in option.inertFlags:
                    for module in quotedIn(flag, True):
                        read.append("flag %s in %s: %s" % (flag, _where(path), module))
        self.assertEqual(read, [], "marked inert but named by a component")

    def test_detects(self) -> None:
        """
        The search finds names used as strings in the components' source
        (C{io_timeout}, the flag C{8bitmime}, the case of C{use_TCP}) and
        not those no component reads.
        """
        self.assertIn("smx/mail/listener.py", quotedIn("io_timeout"))
        self.assertIn("smx/mail/listener.py", quotedIn("8BITMIME", True))
        self.assertIn("smx/maps/settings.py", quotedIn("use_TCP", True))
        self.assertIn("smx/mail/deliverysettings.py", sectionIn("tls"))
        self.assertIn("smx/log.py", sectionIn("log"))
        self.assertEqual(quotedIn("CDB_gid"), [])
        self.assertIn("smx/pmilter/plugins.py", sectionIn("pmilter"))
        self.assertTrue(pluginReads("greylist"))
        self.assertFalse(pluginReads("tls"))
        for path in SOURCES:
            self.assertFalse(path.startswith("smx/config/"), path)
            self.assertNotIn("/test/", path)

    def test_reasons(self) -> None:
        """
        Every mark gives a reason: one line, no full stop at the end (it
        follows "has no effect: " in a warning).
        """
        for path, spec, inert in walk():
            reasons = [spec.inert] + [o.inert for o in spec.options]
            reasons += [why for o in spec.options for f, why in o.inertFlags]
            for reason in reasons:
                if reason is not None:
                    self.assertTrue(reason.strip(), path)
                    self.assertNotIn("\n", reason)
                    self.assertFalse(reason.endswith("."), reason)
            for option in spec.options:
                if isinstance(option.type, Flags):
                    for flag, why in option.inertFlags:
                        self.assertIn(flag, option.type.choices, option.name)


#: what each component sets without effect beyond the options of seed
#: §5.2 and the log options, which L{everything} adds to every component
SPECIFIC = {
    "": "SMAR_socket = smar.sock;\nSMTPC_socket = smtpc.sock;\n"
    "SMTPS_socket = smtps.sock;",
    "qmgr": "flags = { DSN_in_MIME_Format }; tests = 1; wait_for_client = 4s;\n"
    "    control_socket = qmgr.ctl; IQDB { hash_table_entries = 100; }",
    "smar": "DNS_flags = { use_connect }; nameserver = 127.0.0.1:5353;",
    "smtps": "CDB_gid = 261; flags = { background, serialize_accept };\n"
    "    max_wait_threads = 4; min_wait_threads = 1;\n"
    "    auth { flags = { pass_credentials }; }\n"
    "    pmilter { socket = pmilter.sock; timeout = 10s; }",
    "smtpc": "debug_level = 3; max_wait_threads = 4; min_wait_threads = 1;\n"
    "    processes = 2; wait_for_server = 4s;",
    "lmtpd": "socket = lmtpsock;",
}

#: a service started by MCP
SERVICE = """\
procmail {
    mcp_type = accept;
    socket { name = procmail.sock; }
    path = /usr/bin/procmail; arguments = "procmail -z";
}
"""


def everything(ports: bool = False) -> str:
    """
    A configuration that sets every option, flag and section without
    effect in embedded mode (L{BuildTests.test_everyMarkSet} checks that
    it does): L{SPECIFIC}, and in every component the options of seed
    §5.2 and C{log { options }}.

    @param ports: set C{port} where it has no effect instead of MCP's
        C{socket { }} (a section may have only one of them): the two
        configurations together set both.
    """
    parts = [SPECIFIC[""]]
    for spec in table.ROOT.subsections:
        if spec.option("mcp_type") is None:
            continue
        k = spec.keyword
        lines = [
            "mcp_type = wait; min_processes = 1; max_processes = 2;",
            "pass_fd_socket = %s.fd; user = smx%s; group = smx%s;" % (k, k, k),
            "restartdependencies = { qmgr }; pass_id = -i;",
            'path = /usr/libexec/%s; arguments = "%s -f smx.conf";' % (k, k),
            "use_id_in_logfile_name = yes;",
        ]
        for name, value in (("port", "10025"), ("address", "127.0.0.1")):
            option = spec.option(name)
            if option is not None and option.inert is not None:
                if name != "port" or ports or spec.subsection("socket") is None:
                    lines.append("%s = %s;" % (name, value))
        socket = spec.subsection("socket")
        if socket is not None and not (ports and spec.option("port").inert):
            lines.append("socket { name = %s.socket; umask = 007; }" % (k,))
        if spec.subsection("log") is not None:
            lines.append("log { options = { cons, ndelay, odelay, nowait, perror }; }")
        if k in SPECIFIC:
            lines.append(SPECIFIC[k])
        parts.append("%s {\n    %s\n}" % (k, "\n    ".join(lines)))
    return "\n".join(parts) + "\n" + SERVICE


class _Recorder:
    """
    Record the options and kinds of sections that code outside
    L{smx.config} asks a L{Section} for, while it is installed.

    @ivar options: C{(section, option)} pairs, canonical (aliases followed).
    @ivar sections: C{(section, spec)} of the subsections asked for.
    """

    def __init__(self, testCase: SynchronousTestCase) -> None:
        self.options: List[Tuple[Section, Option]] = []
        self.sections: List[Tuple[Section, SectionSpec]] = []
        option, subspec = Section._option, Section._subspec
        recorder = self

        def recordOption(section: Section, name: str) -> Tuple[Section, Option]:
            found = option(section, name)
            if recorder.fromComponent():
                recorder.options.append(found)
            return found

        def recordSubspec(section: Section, keyword: str) -> SectionSpec:
            spec = subspec(section, keyword)
            if recorder.fromComponent():
                recorder.sections.append((section, spec))
            return spec

        testCase.patch(Section, "_option", recordOption)
        testCase.patch(Section, "_subspec", recordSubspec)

    def fromComponent(self) -> bool:
        """
        Whether a read is made for a component: it is installed while the
        components are built, so every read is, unless it comes from the
        modules that check and print the configuration (which read what
        has no effect to report it).
        """
        import inspect

        frame: Optional[types.FrameType] = inspect.currentframe()
        while frame is not None:
            if frame.f_code.co_filename in _CHECKS:
                return False
            frame = frame.f_back
        return True


#: the modules of smx.config that read options to check or print them
_CHECKS = frozenset(
    os.path.join(CONFIG, name)
    for name in ("effect.py", "reconcile.py", "render.py", "files.py", "build.py")
)


class BuildTests(SynchronousTestCase):
    """
    The components, built as C{twistd smx} builds them, read nothing that
    the table marks as without effect.
    """

    def configuration(self, text: str) -> Any:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        with open(os.path.join(directory, "mt"), "w") as f:
            f.write("localhost lmtp:\n")
        path = os.path.join(directory, "smx.conf")
        with open(path, "w") as f:
            f.write(text)
        return loadConfiguration(path, queueDirectory=directory)

    def test_everyMarkSet(self) -> None:
        """
        L{everything} sets every option, flag and section that the table
        marks, in every component (add what a new mark needs to
        L{SPECIFIC}), and each one is a warning.
        """
        missing: Optional[Set[str]] = None
        for text in (everything(), everything(ports=True)):
            c = self.configuration(text)
            notHere = set(_unset(c))
            missing = notHere if missing is None else missing & notHere
            # a service started by MCP has effect (split mode, smx.mcp)
            self.assertFalse(any("'procmail'" in w for w in c.warnings))
            self.assertEqual([w for w in c.warnings if " has no effect: " not in w], [])
        self.assertEqual(sorted(missing or ()), [])

    def test_buildReadsNoMark(self) -> None:
        """
        Building the components from L{everything} (L{smx.tap.buildService},
        without starting them) reads no option that is marked, in its
        section, and no section that is marked; it does read options
        that have an effect (the recorder works).
        """
        from smx.tap import buildService

        read = set()
        names = set()
        for text in (everything(), everything(ports=True)):
            c = self.configuration(text)
            recorder = _Recorder(self)
            buildService(c, reactor=MemoryReactorClock(), installSignals=False)
            for section, option in recorder.options:
                if option.inert is not None or inertSection(section) is not None:
                    read.add("%s in %s" % (option.name, section.describe()))
            for section, spec in recorder.sections:
                if spec.inert is not None:
                    read.add("section %s in %s" % (spec.keyword, section.describe()))
            names |= {(s.keyword, o.name) for s, o in recorder.options}
        self.assertEqual(sorted(read), [])
        self.assertIn(("smtps", "port"), names)
        self.assertIn(("lmtpd", "port"), names)
        self.assertIn(("qmgr", "wait_for_server"), names)


def _unset(c: Any) -> Iterator[str]:
    """
    The marked options, flags and sections of the table that C{c} does
    not set.
    """
    for path, spec, inert in walk():
        if path and path[-1] == "map":
            continue
        section = c.globals
        for keyword in path:
            section = section.section(keyword)
        if spec.inert is not None:
            if section.position is None:
                yield "section " + _where(path)
            continue
        if inert is not None:
            continue
        for option in spec.options:
            if option.aliasOf is not None:
                continue
            if option.inert is not None and not section.isSet(option.name):
                yield "%s in %s" % (option.name, _where(path))
            value = section[option.name] or ()
            for flag, why in option.inertFlags:
                if flag not in value:
                    yield "flag %s in %s" % (flag, _where(path))


def warnings(text: str) -> List[str]:
    return configurationFromText(text, queueDirectory="/q").warnings


class WarningTests(SynchronousTestCase):
    """
    What the file sets without effect is one warning line each, naming
    the file, line and column where it was written.
    """

    def test_option(self) -> None:
        """
        An inert option is reported where it is written, under the name
        written (an alternative spelling such as C{type} too).
        """
        self.assertEqual(
            warnings("smtps {\n  user = smxs;\n  type = pass; pass_fd_socket = fd;\n}"),
            [
                "smx.conf:2:3: warning: option 'user' in section 'smtps' has no "
                "effect: " + MCP_USER,
                "smx.conf:3:3: warning: option 'type' in section 'smtps' has no "
                "effect: " + MCP_ONLY,
                "smx.conf:3:16: warning: option 'pass_fd_socket' in section "
                "'smtps' has no effect: " + MCP_ONLY,
            ],
        )

    def test_defaultsAreQuiet(self) -> None:
        """
        Only what the file sets is reported: the defaults of inert options
        (C{wait_for_client}, C{hash_table_entries}, ...), an empty file,
        the embedded default configuration and an empty list set to an
        inert option are not.
        """
        self.assertEqual(warnings(""), [])
        self.assertEqual(warnings("qmgr { flags = {}; IQDB { } }"), [])
        self.assertEqual(warnings("smtps { restartdependencies = {}; }"), [])
        default = os.path.join(SMX, "default", "smx.conf")
        self.assertEqual(loadConfiguration(default, queueDirectory="/q").warnings, [])

    def test_flags(self) -> None:
        """
        A flag without effect is reported at its option, in the table's
        spelling, one line per flag; the other flags of the option are not.
        """
        self.assertEqual(
            warnings(
                "qmgr { flags = { dsn_in_mime_format, reuse_connection }; }\n"
                "smtps { flags = { 8bitmime, Background }; }"
            ),
            [
                "smx.conf:1:8: warning: flag 'DSN_in_MIME_Format' of option "
                "'flags' in section 'qmgr' has no effect: DSNs are always MIME "
                "(RFC 3464 multipart/report)",
                "smx.conf:2:9: warning: flag 'background' of option 'flags' in "
                "section 'smtps' has no effect: twistd decides: without -n it "
                "runs in the background",
            ],
        )

    def test_sections(self) -> None:
        """
        MCP's C{socket} subsection has no effect in embedded mode (no
        section sets C{path}) nor in a section the MCP does not start; a
        service started by MCP has effect; pmilter has effect.
        """
        self.assertEqual(
            warnings(
                "smtps {\n  pmilter { socket = pm.sock; timeout = 5s; }\n"
                "  socket { name = s; umask = 007; }\n}\n"
            ),
            [
                "smx.conf:3:12: warning: option 'name' in section 'smtps.socket' "
                "has no effect: " + MCP_ONLY,
                "smx.conf:3:22: warning: option 'umask' in section "
                "'smtps.socket' has no effect: " + MCP_ONLY,
            ],
        )
        self.assertEqual(
            warnings(
                "smtps {\n  socket { name = s; }\n}\n"
                "procmail { mcp_type = accept; path = /p; arguments = p;\n"
                "  socket { name = lmtp.sock; } }"
            ),
            [
                "smx.conf:2:12: warning: option 'name' in section 'smtps.socket' "
                "has no effect: " + NOT_STARTED,
            ],
        )

    def test_fileOrder(self) -> None:
        """
        The warnings come in the order of the file, not of the table.
        """
        lines = warnings(
            "smtpc { wait_for_server = 1s; debug_level = 2; }\n"
            "qmgr { tests = 1; user = q; }"
        )
        self.assertEqual(
            [re.match(r"smx\.conf:(\d+:\d+):", line).group(1) for line in lines],
            ["1:9", "1:31", "2:8", "2:19"],
        )

    def test_portAndAddress(self) -> None:
        """
        C{port} and C{address} have an effect in smtps and lmtpd (they
        listen on them), not in qmgr, smar and smtpc; an lmtpd C{address}
        without a C{port} has none either.
        """
        self.assertEqual(warnings("smtps { port = 2525; address = 127.0.0.1; }\n"), [])
        self.assertEqual(warnings("lmtpd { port = 2424; address = 127.0.0.1; }\n"), [])
        self.assertEqual(
            warnings("lmtpd { address = 127.0.0.1; }\nsmar { port = 1; }"),
            [
                "smx.conf:1:9: warning: option 'address' in section 'lmtpd' has "
                "no effect: lmtpd listens on TCP only when port is set",
                "smx.conf:2:8: warning: option 'port' in section 'smar' has no "
                "effect: " + MCP_ONLY,
            ],
        )

    def test_log(self) -> None:
        """
        C{log} options of a destination smx does not log to: C{facility}
        with C{file}, C{options} and C{ident} without C{facility}
        (C{ident} names the log file's records, so it has an effect with
        C{file}); the openlog(3) options other than C{pid} with syslog.
        """
        self.assertEqual(
            warnings(
                "qmgr { log { file = q.log; facility = mail; ident = q; } }\n"
                "smar { log { options = { pid }; ident = s; } }\n"
                "smtps { log { facility = mail; options = { pid, perror }; } }"
            ),
            [
                "smx.conf:1:28: warning: option 'facility' in section 'qmgr.log' "
                "has no effect: smx logs to the log file, not to syslog",
                "smx.conf:2:14: warning: option 'options' in section 'smar.log' "
                "has no effect: they are syslog's, and smx uses syslog only when "
                "facility is set",
                "smx.conf:2:33: warning: option 'ident' in section 'smar.log' has "
                "no effect: smx logs to Twisted's log (no facility or file is "
                "set), which names the component",
                "smx.conf:3:32: warning: flag 'perror' of option 'options' in "
                "section 'smtps.log' has no effect: smx writes to the syslog "
                "socket itself, without openlog(3): only pid is used",
            ],
        )

    def test_tlsWithoutCertificate(self) -> None:
        """
        The smtps C{tls} options other than C{key_file} do nothing without
        a C{cert_file} (STARTTLS is not offered); smtpc's CA certificates
        verify servers without a client certificate.
        """
        self.assertEqual(
            warnings(
                "smtps { tls { CAcert_path = /etc/ssl/certs; } }\n"
                "smtpc { tls { CAcert_path = /etc/ssl/certs; } }"
            ),
            [
                "smx.conf:1:15: warning: option 'CAcert_path' in section "
                "'smtps.tls' has no effect: STARTTLS is offered only with a "
                "cert_file"
            ],
        )

    def test_serverNameCertificatesWithoutDefault(self) -> None:
        """
        C{min_protocol} and the C{certificate} sections chosen by SNI do
        nothing without the default C{cert_file} of smtps's C{tls}.
        """
        self.assertEqual(
            warnings(
                "smtps { tls { min_protocol = TLSv1.3;\n"
                "  certificate a { cert_file = a.pem; key_file = a.key; } } }"
            ),
            [
                "smx.conf:1:15: warning: option 'min_protocol' in section "
                "'smtps.tls' has no effect: STARTTLS is offered only with a "
                "cert_file",
                "smx.conf:2:19: warning: option 'cert_file' in section "
                "'smtps.tls.certificate a' has no effect: STARTTLS is offered "
                "only with a cert_file in tls",
                "smx.conf:2:38: warning: option 'key_file' in section "
                "'smtps.tls.certificate a' has no effect: STARTTLS is offered "
                "only with a cert_file in tls",
            ],
        )

    def test_overridesDoNotRepeat(self) -> None:
        """
        Reconciling again after command-line overrides gives no second
        copy of a warning.
        """
        c = configurationFromText("qmgr { tests = 1; }")
        c.section("qmgr").override("smtpc_max_connections", 50)
        c.reconcile()
        self.assertEqual(len(c.warnings), 1)


class RenderTests(SynchronousTestCase):
    """
    C{smx config} marks what has no effect in the configuration it prints.
    """

    def test_marked(self) -> None:
        """
        An inert option that is set is printed with a C{# no effect:}
        remark (C{-VVVVV}: in the parentheses that say it is set); one that
        is not set is printed as usual.
        """
        c = configurationFromText("smtpc { processes = 2; }", queueDirectory="/q")
        why = noEffect(c.section("smtpc"), table.SMTPC.option("processes"))
        self.assertIn(
            "    processes = 2; # no effect: %s\n" % (why,), renderConfiguration(c)
        )
        self.assertIn("(set; no effect: %s)" % (why,), renderConfiguration(c, 5))
        self.assertIn(
            "    wait_for_server = 10s; # default\n", renderConfiguration(c, 2)
        )

    def test_unusedBecause(self) -> None:
        """
        L{unusedBecause} knows nothing of the marks: only what the other
        settings make useless.
        """
        c = configurationFromText("smtpc { processes = 2; }")
        smtpc = c.section("smtpc")
        self.assertIsNone(unusedBecause(smtpc, table.SMTPC.option("processes")))
        self.assertIsNotNone(noEffect(smtpc, table.SMTPC.option("processes")))

# -*- test-case-name: smx.config.test.test_componentoptions -*-
"""
NAME
    smx.config.componentoptions - the program options of SMTPS, SMAR and
    QMGR

SYNOPSIS
    options = SMTPSOptions()
    options.parseOptions(["-a", "-C", "10.2.3.4"])
    options.apply(configuration)

    applyComponentOptions(configuration, smtps=["-N MSA -T"], smar=["-U"],
                          qmgr=["-x 1-3.2"], environ=os.environ)
    selectedSMTPS(configuration)        # None, or the names given with -N

DESCRIPTION
    sendmail X's programs take options of their own besides the
    configuration file; the README names these:

        smtps -a            use the access map: the smtps flag C{access}
                            (seed §5.8.3, §5.9 item 4g)
        smtps -C address    allow relaying from the client with this IP
                            address (seed §3.2.1); may be repeated
        smtps -N name       run the smtps section of this name (§5.9.1)
        smtps -T            allow relaying to the local domains (C{lmtp:}
                            in the mailertable) even with the flag
                            C{lmtp_does_not_imply_relaying} (§6.3.1)
        smar -U             send DNS queries over TCP instead of UDP: the
                            C{DNS_flags} C{use_TCP} (§3.2.1, §5.8.2)
        qmgr -x c[-l][.n]   debug level n (default 1) for the QMGR debug
                            categories c to l; several separated by
                            commas, e.g. C{-x 1-3.4,5.3} (App. E)

    Each set is a L{twisted.python.usage.Options} (L{SMTPSOptions},
    L{SMAROptions}, L{QMGROptions}).  Its C{apply} writes what it was
    given into the configuration as overrides (L{smx.config.model.
    Section.override}: after the file, checked against the option table),
    so that every component, C{smx config} and the split mode to come see
    one configuration and need not know where a setting came from:

        -a  adds C{access} to the smtps C{flags}
        -C  adds the address to the smtps option C{relay_clients} (an smx
            option that a configuration file may set as well)
        -T  takes C{lmtp_does_not_imply_relaying} out of the smtps C{flags}
        -N  selects the sections to run (L{selectedSMTPS}); the other
            options of the set apply to that section only, those of a set
            without C{-N} to every smtps section
        -U  adds C{use_TCP} to the smar C{DNS_flags}
        -x  adds its categories to the qmgr option C{debug_categories} (an
            smx option; the qmgr option C{debug_level} is the level of
            every category not named)

    The QMGR debug categories are those of L{QMGR_DEBUG_CATEGORIES}; a
    category at level n writes the C{DEBUG} records of levels 1 to n
    (C{dbg=c.n, ...}) to the qmgr log whatever its C{log_level}.

    In embedded mode C{twistd smx} takes the sets as C{--smtps-options},
    C{--smar-options} and C{--qmgr-options} (each may be given more than
    once; a value is split as a shell splits words), after those of the
    environment variables the README names: C{SM_SERVER_OPTIONS} for
    SMTPS and C{SMAROPTS} for SMAR (§3.2.1).  In split mode each program
    will parse its own argument vector with the same classes.

    Several SMTPS sets make sense in embedded mode, where one process runs
    every smtps section: C{--smtps-options "-N MTA -a" --smtps-options
    "-N MSA -C 10.2.3.4"}.  Once any set names a section, only the named
    sections are started, as in split mode only the C{smtps -N name}
    processes MCP starts are running.

DIAGNOSTICS
    A bad option or value raises L{usage.UsageError} (or L{ConfigError}
    from C{apply}, naming the option): one line for the user, which
    C{twistd smx} prints with the name of the option set or environment
    variable it came from.
"""

from __future__ import annotations

import ipaddress
import shlex
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from twisted.python import usage

from smx.config.errors import ConfigError

#: the QMGR debug categories (App. E, C{include/sm/qmgrdbg.h} in sendmail
#: X): number -> (name, what its records show)
QMGR_DEBUG_CATEGORIES = {
    1: ("smtps", "SMTPS - QMGR: sessions, acceptance checks, transactions"),
    2: ("ibdb", "IBDB: envelopes on stable storage"),
    3: ("sched", "scheduler: AQ, delivery attempts"),
    4: ("smar", "SMAR: the routes of recipients"),
    5: ("smtpc", "SMTPC: deliveries handed over and their results"),
    6: ("defedb", "DEFEDB: deferred recipients and their next try"),
    7: ("dsn", "DSNs: bounces and delay warnings"),
    8: ("conn", "connection control: waits for a free connection"),
}

#: the environment variables of the seed (§3.2.1)
ENVIRONMENT = {"smtps": "SM_SERVER_OPTIONS", "smar": "SMAROPTS"}


def parseDebugOptions(text: str) -> Dict[int, int]:
    """
    Parse QMGR debug options (App. E)::

        debugoptions ::= debugoption [ "," debugoptions ]
        debugoption  ::= range [ "." level ]
        range        ::= first [ "-" last ]

    @return: category -> level (a later option overrides an earlier one).
    @raise ValueError: with a message for the user.
    """
    levels = {}  # type: Dict[int, int]
    last = max(QMGR_DEBUG_CATEGORIES)
    for option in text.split(","):
        option = option.strip()
        span, dot, level = option.partition(".")
        first, dash, end = span.partition("-")
        numbers = [first, end] if dash else [first]
        if dot:
            numbers.append(level)
        if not all(n.isdigit() and len(n) <= 6 for n in numbers):
            raise ValueError(
                "%r is not a debug option: category[-category][.level], "
                "e.g. 1-3.4" % (option,)
            )
        low = int(first)
        high = int(end) if dash else low
        if not 1 <= low <= high <= last:
            raise ValueError(
                "%r: the QMGR debug categories are 1 to %d" % (option, last)
            )
        for category in range(low, high + 1):
            levels[category] = int(level) if dot else 1
    return levels


def checkDebugOption(text: str) -> None:
    """
    The check of one element of the qmgr option C{debug_categories}.

    @raise ValueProblem: if C{text} is not a debug option.
    """
    from smx.config.values import ValueProblem

    try:
        parseDebugOptions(text)
    except ValueError as e:
        raise ValueProblem(str(e))


def _override(section: Any, name: str, value: Any) -> None:
    section.override(name, section.spec.option(name).type.render(value))


class ComponentOptions(usage.Options):
    """
    The options of one program, applied to a configuration.
    """

    def apply(self, configuration: Any) -> None:
        """
        Write the options into C{configuration} as overrides.

        @raise ConfigError: for a section or value that does not fit.
        """
        raise NotImplementedError()  # pragma: no cover


class SMTPSOptions(ComponentOptions):
    """
    The options of SMTPS: C{-a}, C{-C address}, C{-N name}, C{-T}.
    """

    synopsis = "[-a] [-T] [-C address]... [-N name]"

    optFlags = [
        ["access", "a", "use the access map (the smtps flag access, §5.9 4g)"],
        [
            "relay-local",
            "T",
            "allow relaying to the local (lmtp:) domains despite "
            "lmtp_does_not_imply_relaying (§6.3.1)",
        ],
    ]
    optParameters = [["name", "N", None, "the smtps section to run (§5.9.1)"]]

    def __init__(self) -> None:
        usage.Options.__init__(self)
        self["relay-clients"] = []

    def opt_C(self, address: str) -> None:
        """
        Allow relaying from the client with this IP address (§3.2.1); may
        be repeated.
        """
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise usage.UsageError("-C: %r is not an IP address" % (address,))
        self["relay-clients"].append(address)

    def sections(self, configuration: Any) -> List[Any]:
        """
        The smtps sections this set applies to.

        @raise ConfigError: if C{-N} names no section of the file.
        """
        if self["name"] is not None:
            return [configuration.section("smtps", self["name"])]
        return configuration.sections("smtps") or [configuration.section("smtps")]

    def apply(self, configuration: Any) -> None:
        """
        Write the options into C{configuration} as overrides.

        @raise ConfigError: for a section or value that does not fit.
        """
        for section in self.sections(configuration):
            old = frozenset(section["flags"] or ())
            flags = set(old)
            if self["access"]:
                flags.add("access")
            if self["relay-local"]:
                flags.discard("lmtp_does_not_imply_relaying")
            if flags != old:
                _override(section, "flags", frozenset(flags))
            if self["relay-clients"]:
                clients = list(section["relay_clients"] or ())
                clients += [a for a in self["relay-clients"] if a not in clients]
                _override(section, "relay_clients", clients)


class SMAROptions(ComponentOptions):
    """
    The options of SMAR: C{-U}.
    """

    synopsis = "[-U]"

    optFlags = [["tcp", "U", "DNS over TCP instead of UDP (DNS_flags use_TCP)"]]

    def apply(self, configuration: Any) -> None:
        """
        Write the options into C{configuration} as overrides.
        """
        smar = configuration.section("smar")
        if self["tcp"]:
            old = frozenset(smar["DNS_flags"] or ())
            if "use_tcp" not in old:
                _override(smar, "DNS_flags", old | {"use_tcp"})


class QMGROptions(ComponentOptions):
    """
    The options of QMGR: C{-x c[-l][.n],...} (the C{-C}, C{-c} and C{-O} of
    §5.7.1 are C{twistd smx}'s own options).
    """

    synopsis = "[-x category[-category][.level],...]..."

    def __init__(self) -> None:
        usage.Options.__init__(self)
        self["debug"] = []

    def opt_x(self, text: str) -> None:
        """
        Debug level n for categories c to l: c[-l][.n], several separated
        by commas (App. E); may be repeated.
        """
        for option in text.split(","):
            try:
                parseDebugOptions(option)
            except ValueError as e:
                raise usage.UsageError("-x: %s" % (e,))
            self["debug"].append(option.strip())

    def apply(self, configuration: Any) -> None:
        """
        Write the options into C{configuration} as overrides.
        """
        if self["debug"]:
            qmgr = configuration.section("qmgr")
            current = list(qmgr["debug_categories"] or ())
            _override(qmgr, "debug_categories", current + self["debug"])


#: the option sets by component
OPTION_SETS = {"smtps": SMTPSOptions, "smar": SMAROptions, "qmgr": QMGROptions}


def parseOptionSet(component: str, text: str, origin: str) -> ComponentOptions:
    """
    Parse one option set written as one string (C{"-a -C 10.2.3.4"}).

    @param origin: where it came from, for the message of an error
        (C{--smtps-options}, C{SM_SERVER_OPTIONS}).
    @raise usage.UsageError: naming C{origin}.
    """
    options = OPTION_SETS[component]()
    try:
        argv = shlex.split(text)
        options.parseOptions(argv)
    except (ValueError, usage.UsageError) as e:
        raise usage.UsageError("%s %r: %s" % (origin, text, e))
    return options


def applyComponentOptions(
    configuration: Any,
    smtps: Sequence[str] = (),
    smar: Sequence[str] = (),
    qmgr: Sequence[str] = (),
    environ: Optional[Mapping[str, str]] = None,
) -> None:
    """
    Apply the option sets of the environment (L{ENVIRONMENT}) and then
    those given (each one string, as C{--smtps-options} takes it) to
    C{configuration}; record the smtps sections named with C{-N}
    (L{selectedSMTPS}).  Call L{smx.config.model.Configuration.reconcile}
    afterwards.

    @raise usage.UsageError: for a bad option set, a section or a value
        that does not fit, naming where it came from.
    """
    given = {"smtps": smtps, "smar": smar, "qmgr": qmgr}
    sets = []  # type: List[Tuple[str, ComponentOptions]]
    for component in ("smtps", "smar", "qmgr"):
        texts = []  # type: List[Tuple[str, str]]
        variable = ENVIRONMENT.get(component)
        if variable and environ is not None and environ.get(variable, "").strip():
            texts.append((variable, environ[variable]))
        texts += [("--%s-options" % (component,), text) for text in given[component]]
        for origin, text in texts:
            options = parseOptionSet(component, text, origin)
            sets.append(("%s %r" % (origin, text), options))
    names = []  # type: List[str]
    for origin, options in sets:
        try:
            options.apply(configuration)
        except ConfigError as e:
            raise usage.UsageError("%s: %s" % (origin, e))
        if isinstance(options, SMTPSOptions) and options["name"] is not None:
            names.append(configuration.section("smtps", options["name"]).name)
    if names:
        selectSMTPS(configuration, names)


def selectSMTPS(configuration: Any, names: Iterable[str]) -> None:
    """
    Run only the smtps sections C{names} (C{-N}).
    """
    configuration.smtpsNames = sorted(set(names))


def selectedSMTPS(configuration: Any) -> Optional[List[str]]:
    """
    @return: the names of the smtps sections to run, or C{None} for all.
    """
    return getattr(configuration, "smtpsNames", None)

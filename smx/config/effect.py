# -*- test-case-name: smx.config.test.test_effect -*-
"""
Every option is either used or reported: an option, a flag or a section
that the configuration sets but that has no effect gets one warning line
naming the file, line and column where it was written (C{smx config} and
C{twistd smx} at start print them).

There are two kinds:

    - B{inert}: nothing in smx reads it.  The option table says so
      once, with the reason: L{Option.inert} (C{CDB_gid}, ...),
      L{Option.inertFlags} (the smtps flag C{background}, ...) and
      L{SectionSpec.inert}.  C{smx.config.test.test_effect} fails when an option is
      neither read by a component nor marked, and when a marked one is
      read.
    - B{unused with the other settings} (L{unusedBecause}): the MCP
      options of seed §5.2 in embedded mode (no section sets C{path}) and
      in a section without C{path} in split mode (L{smx.mcp}); the
      C{address} and C{port} of an smtps section that listens on its
      C{daemon_address}; the C{address} of an lmtpd section without a
      C{port}; C{log} options of a destination smx does not log to; the
      smtps C{tls} options other than C{key_file} (and its C{certificate}
      sections) without a C{cert_file}.

Only what the file sets is reported, never a default, and not an empty
list (C{flags = {};} asks for nothing).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator, List, Optional, Tuple

from smx.config.schema import Option

if TYPE_CHECKING:  # pragma: no cover
    from smx.config.model import Configuration, Position, Section


def _isSet(section: "Section", name: str) -> bool:
    return section.spec.option(name) is not None and section.isSet(name)


def unusedBecause(section: "Section", option: Option) -> Optional[str]:
    """
    @return: why an option of C{section} has no effect with the other
        settings of the configuration, or C{None} if it is in force (as
        far as the other settings go; see L{Option.inert} too).
    """
    name = option.name
    keyword = section.keyword
    split = _splitUnused(section, option)
    if split is not None:
        return split or None
    if keyword == "smtps" and name in ("address", "port"):
        if section["daemon_address"]:
            return "smx listens on its daemon_address"
    elif keyword == "lmtpd" and name == "address":
        if section["port"] is None:
            return "lmtpd listens on TCP only when port is set"
    elif keyword == "log" and name in ("facility", "options", "ident"):
        toFile = _isSet(section, "file")
        if toFile and name != "ident":
            return "smx logs to the log file, not to syslog"
        if not toFile and not _isSet(section, "facility"):
            if name == "options":
                return (
                    "they are syslog's, and smx uses syslog only when facility is set"
                )
            if name == "ident":
                return (
                    "smx logs to Twisted's log (no facility or file is set), "
                    "which names the component"
                )
    elif keyword == "tls" and section.parent is not None:
        if (
            section.parent.keyword == "smtps"
            and name in ("CAcert_file", "CAcert_path", "flags", "min_protocol")
            and not section.isSet("cert_file")
        ):
            return "STARTTLS is offered only with a cert_file"
    elif keyword == "certificate" and section.parent is not None:
        # the certificates chosen by SNI (smx.config.tlsserveroptions)
        if not section.parent.isSet("cert_file"):
            return "STARTTLS is offered only with a cert_file in tls"
    return None


def _splitUnused(section: "Section", option: Option) -> Optional[str]:
    """
    Whether an option of seed §5.2 (or of its C{socket} subsection) is
    used: in embedded mode (no top-level section sets C{path}) only the
    C{port} and C{address} of the embedded listeners are; in split mode
    those of the sections the MCP starts (L{smx.mcp.settings}).

    @return: why not, C{""} if it is, C{None} if it is not such an option.
    """
    from smx.config.commonoptions import (
        EMBEDDED_LISTENERS,
        MCP_ONLY,
        MCP_USER,
        NOT_STARTED,
    )

    service = section
    if section.keyword == "socket" and section.parent is not None:
        service = section.parent
        if service.spec.option("mcp_type") is None:
            return None
    elif option.group != "mcp":
        return None
    configuration = section.configuration
    if not any(_isSet(s, "path") for s in configuration.sections()):
        if (
            service is section
            and option.name in ("port", "address")
            and section.keyword in EMBEDDED_LISTENERS
        ):
            return None
        if service is section and option.name in ("user", "group"):
            return MCP_USER
        return MCP_ONLY
    if not _isSet(service, "path"):
        return NOT_STARTED
    return ""


def inertSection(section: "Section") -> Optional[str]:
    """
    @return: why a section has no effect in the mode smx runs in (its own
        mark or an enclosing section's), or C{None}.
    """
    s: Optional["Section"] = section
    while s is not None:
        if s.spec.inert is not None:
            return s.spec.inert
        s = s.parent
    return None


def noEffect(section: "Section", option: Option) -> Optional[str]:
    """
    @return: why an option of C{section} has no effect: it is inert (it or
        its section), or unused with the other settings; C{None} if it is
        in force.
    """
    if option.inert is not None:
        return option.inert
    from smx.config.splitoptions import splitOnlyUnused

    split = splitOnlyUnused(section, option)
    if split is not None:
        return split
    return inertSection(section) or unusedBecause(section, option)


def _walk(section: "Section") -> Iterator["Section"]:
    yield section
    for child in section.sections():
        yield from _walk(child)


def checkEffect(configuration: "Configuration") -> None:
    """
    Warn about every section, option and flag that the file sets and that
    has no effect (see the module docstring), in the order of the file.
    """
    found: List[Tuple[Position, str]] = []
    for section in _walk(configuration.globals):
        reason = inertSection(section)
        if reason is not None:
            if section.spec.inert is not None and section.position is not None:
                found.append(
                    (
                        section.position,
                        "%s has no effect: %s" % (section.describe(), reason),
                    )
                )
            continue
        for option in section.spec.options:
            if option.aliasOf is not None:
                continue
            written = section.written(option)
            if written is None:
                continue
            position, name = written
            why = noEffect(section, option)
            if why is not None:
                if not _empty(section[option.name]):
                    message = "option '%s' in %s has no effect: %s" % (
                        name,
                        section.describe(),
                        why,
                    )
                    found.append((position, message))
                continue
            value = section[option.name] or ()
            spelling = getattr(option.type, "spelling", {})
            for flag, why in option.inertFlags:
                if flag in value:
                    message = "flag '%s' of option '%s' in %s has no effect: %s" % (
                        spelling.get(flag, flag),
                        name,
                        section.describe(),
                        why,
                    )
                    found.append((position, message))
    for position, message in sorted(found):
        configuration.warn(message, position)


def _empty(value: object) -> bool:
    """
    Whether a value is an empty list or set of flags (C{{}}), which asks
    for nothing and so is not reported.
    """
    return isinstance(value, (frozenset, set, list, tuple)) and not value

# -*- test-case-name: smx.config.test.test_render -*-
"""
Write a configuration back as smx.conf text (C{smx config -V...}).

L{renderConfiguration} writes, by verbosity:

    0. the options set in the file, normalised (canonical names, values
       with units, paths resolved, aliases written as what they stand for);
    1. the same, after a header with the version and the directories;
    2. every option of every section in the file, defaults marked C{# default};
    3. also the global options and the subsections (C{tls}, C{log}, ...)
       of those sections that the file leaves out;
    4. the whole effective configuration: every component, given or not;
    5. the same as a table: each line also says the type, unit, bounds,
       default and seed section of the option, and sections that may be
       repeated (C{dnsbl}, C{map}) are shown as commented-out templates.

An option that has no effect (L{smx.config.effect.noEffect}: one that
embedded smx does not use, such as C{user}, or one unused with the other
settings, such as the C{address} and C{port} of an smtps section that
listens on its C{daemon_address}) is not shown as if in force: a C{# no
effect: ...} remark when it is set; when it is not, C{# address has no
effect: ...} for one unused with the other settings (options that embedded
smx never uses are shown as usual, with their defaults).

The output of any level is a valid configuration file with the same
meaning (paths are absolute, so it may be read from anywhere).
"""

from __future__ import annotations

from typing import Any, List, Optional

import smx
from smx.config.effect import noEffect, unusedBecause
from smx.config.model import Configuration, Section
from smx.config.schema import NO_NAME, REQUIRED_NAME, Option, SectionSpec
from smx.config.values import quoteValue

INDENT = "    "
#: the column where level-5 comments start
COMMENT_COLUMN = 52


def renderValue(option: Option, value: Any) -> str:
    """
    @return: a typed value as smx.conf text.
    """
    return option.type.render(value)


def describeOption(option: Option) -> str:
    """
    @return: C{"time (unit s), >= 1s, default 5m, §5.9"} for level 5.
    """
    parts = [typeText(option)]
    bounds = option.type.bounds()
    if bounds and option.type.typeName != "path":
        parts.append(bounds)
    parts.append("default " + defaultText(option))
    parts.append(option.ref)
    return ", ".join(parts)


def typeText(option: Option) -> str:
    """
    @return: the type with the unit of a bare number, e.g. C{"size (KB)"}.
    """
    text = option.type.typeName
    if option.type.typeName == "path":
        text += " (%s)" % (option.type.bounds(),)
    elif option.unit:
        unit = "µs" if option.unit == "us" else option.unit
        text += " (%s)" % (unit,)
    return text


def defaultText(option: Option) -> str:
    """
    @return: the default as documented (C{"5d"}, C{"none"}).
    """
    if option.defaultDoc is not None:
        return option.defaultDoc
    if option.default is None:
        return "none"
    return renderValue(option, option.defaultValue())


def _title(keyword: str, name: Optional[str]) -> str:
    if name is None:
        return keyword
    return "%s %s" % (keyword, quoteValue(name))


class _Writer:
    def __init__(self, verbosity: int) -> None:
        self.verbosity = verbosity
        self.lines: List[str] = []

    def optionLine(self, depth: int, section: Section, option: Option) -> None:
        pad = INDENT * depth
        value = section[option.name]
        isSet = section.isSet(option.name)
        if isSet:
            unused = noEffect(section, option)
        elif value is None or (option.type.isList and not value):
            unused = None  # nothing that could look in force
        else:
            unused = unusedBecause(section, option)
        if unused is not None and not isSet:
            line = "%s# %s has no effect: %s" % (pad, option.name, unused)
        elif value is None:
            line = "%s# %s is not set" % (pad, option.name)
        else:
            line = "%s%s = %s;" % (pad, option.name, renderValue(option, value))
        if self.verbosity >= 5:
            line = line.ljust(COMMENT_COLUMN - 1) + " # " + describeOption(option)
            if isSet:
                line += " (set%s)" % ("; no effect: " + unused if unused else "",)
        elif isSet and unused is not None:
            line += " # no effect: " + unused
        elif not isSet and value is not None and unused is None:
            line += " # default"
        self.lines.append(line)

    def section(self, depth: int, section: Section, header: bool) -> None:
        pad = INDENT * depth
        inner = depth + 1 if header else depth
        if header:
            self.lines.append("%s%s {" % (pad, _title(section.keyword, section.name)))
        mark = len(self.lines)
        for option in section.spec.options:
            if option.aliasOf is not None:
                continue
            if section.isSet(option.name) or self.verbosity >= 2:
                self.optionLine(inner, section, option)
        self.subsections(inner, section)
        if header:
            self.lines.append("%s}" % (pad,))
        elif len(self.lines) > mark and depth == 0:
            self.lines.append("")

    def present(self, section: Section) -> bool:
        return section.position is not None

    def subsections(self, depth: int, section: Section) -> None:
        # map declarations are written where they were found
        given = [c for c in section.sections() if self.present(c)]
        shown = set()
        for child in given:
            shown.add(child.keyword.lower())
            self.section(depth, child, True)
            if depth == 0:
                self.lines.append("")
        wanted = self.verbosity >= 4 or (self.verbosity >= 3 and section.keyword)
        if not wanted:
            return
        for spec in section.spec.subsections:
            key = spec.keyword.lower()
            if key in shown:
                continue
            if spec.multiple and (
                depth > 0 or key == "map" or spec.naming == REQUIRED_NAME
            ):
                self.template(depth, spec)
                continue
            # a component that is not in the file: its effective defaults
            self.section(depth, section.section(spec.keyword), True)
            if depth == 0:
                self.lines.append("")

    def template(self, depth: int, spec: SectionSpec) -> None:
        """
        A commented-out example of a repeatable section (level 5 only).
        """
        if self.verbosity < 5:
            return
        pad = INDENT * depth
        name = " NAME" if spec.naming != NO_NAME else ""
        self.lines.append(
            "%s# %s%s { ... }   # %s, %s"
            % (pad, spec.keyword, name, spec.doc, spec.ref)
        )
        for option in spec.options:
            if option.aliasOf is not None:
                continue
            line = "%s#%s%s = %s;" % (
                pad,
                INDENT,
                option.name,
                "..." if option.default is None else defaultText(option),
            )
            self.lines.append(
                line.ljust(COMMENT_COLUMN - 1) + " # " + describeOption(option)
            )
        if depth == 0:
            self.lines.append("")


def renderConfiguration(configuration: Configuration, verbosity: int = 0) -> str:
    """
    Write a configuration as smx.conf text.

    @param verbosity: 0 to 5, the number of C{-V}s; see the module
        docstring.
    @return: the text, ending with a newline (empty if nothing is set at
        level 0).
    """
    writer = _Writer(verbosity)
    if verbosity >= 1:
        writer.lines.extend(header(configuration))
        writer.lines.append("")
    root = configuration.globals
    for option in root.spec.options:
        if root.isSet(option.name) or verbosity >= 3:
            writer.optionLine(0, root, option)
    if writer.lines and writer.lines[-1] != "":
        writer.lines.append("")
    writer.subsections(0, root)
    while writer.lines and writer.lines[-1] == "":
        writer.lines.pop()
    return "".join(line + "\n" for line in writer.lines)


def header(configuration: Configuration) -> List[str]:
    """
    @return: the comment lines C{-V} adds: version and directories.
    """
    return [
        "# %s" % (smx.versionString,),
        "# configuration file: %s"
        % (configuration.path or "(none: built-in defaults)",),
        directoriesLine(configuration),
    ]


def directoriesLine(configuration: Configuration) -> str:
    """
    @return: the comment line that says against which directories the
        relative path names were resolved (seed §5.6).
    """
    config, queue = configuration.configDirectory, configuration.queueDirectory
    if config == queue:
        return "# paths relative to %s (configuration and queue directory)" % (config,)
    return (
        "# paths relative to %s (configuration directory: maps, TLS files) "
        "and %s (queue directory: queue, sockets)" % (config, queue)
    )

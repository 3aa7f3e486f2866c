# -*- test-case-name: smx.config.test.test_build -*-
"""
Give the parsed entries (L{smx.config.grammar}) their meaning with the
option table (L{smx.config.options}): check every name, convert every
value, apply the rules of how often sections may appear, then reconcile
the settings (L{smx.config.reconcile}).

The public entry points are in L{smx.config}: L{loadConfiguration},
L{configurationFromText} and L{defaultConfiguration}.
"""

from __future__ import annotations

import os
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

from smx.config import options as table
from smx.config.errors import ConfigError
from smx.config.grammar import Entry, OptionEntry, SectionEntry, Token, parseEntries
from smx.config.model import Configuration, Section
from smx.config.reconcile import reconcile
from smx.config.schema import NO_NAME, REQUIRED_NAME, SectionSpec
from smx.config.values import ValueProblem, closest

_KEYWORD = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_LINE_END = re.compile(rb"\r\n|\r|\n")


def _validIn() -> Dict[str, List[str]]:
    """
    Map every lower-case option name and section keyword to the sections
    where it is valid, for hints such as "'io_timeout' is valid in
    'smtps', 'smtpc'".
    """
    where: Dict[str, List[str]] = {}
    for path, spec in table.ROOT.walk():
        title = ".".join(path) if path else "the global section"
        for name in [o.name for o in spec.options] + [
            s.keyword for s in spec.subsections
        ]:
            places = where.setdefault(name.lower(), [])
            if title not in places:
                places.append(title)
    return where


_VALID_IN = _validIn()


class _Builder:
    """
    Builds one L{Configuration} from entries.
    """

    def __init__(self, configuration: Configuration) -> None:
        self.configuration = configuration
        self.filename = configuration.filename
        self.groups: Dict[Tuple[int, str], List[Section]] = {}
        self.names: Dict[Tuple[Any, Optional[str]], Section] = {}

    def error(self, message: str, token: Token) -> ConfigError:
        return ConfigError(message, self.filename, token.line, token.column)

    def hint(self, name: str, here: Section) -> str:
        places = [p for p in _VALID_IN.get(name.lower(), []) if p != here.displayPath()]
        if not places:
            return ""
        return " ('%s' is valid in %s)" % (
            name,
            ", ".join(p if p.startswith("the ") else "'%s'" % (p,) for p in places),
        )

    def fill(self, section: Section, entries: Sequence[Entry]) -> None:
        for entry in entries:
            if isinstance(entry, OptionEntry):
                self.option(section, entry)
            else:
                self.subsection(section, entry)
        self.checkRequired(section)

    def option(self, section: Section, entry: OptionEntry) -> None:
        spec = section.spec
        name = entry.name
        option = spec.option(name.text)
        if option is None:
            sub = spec.subsection(name.text)
            if sub is not None:
                raise self.error(
                    "expected '{' after '%s' ('%s' is a section: write '%s { ... }')"
                    % (name.text, name.text, sub.keyword),
                    entry.equals or name,
                )
            choices = [o.name for o in spec.options]
            message = "unknown option '%s' in %s" % (name.text, section.describe())
            hint = self.hint(name.text, section)
            guess = closest(name.text, choices)
            if hint:
                message += hint
            elif guess is not None:
                message += "; did you mean '%s'?" % (guess,)
            raise self.error(message, name)
        try:
            value = option.type.convert(entry.value)
        except ValueProblem as e:
            token = e.token or Token("", "", entry.value.line, entry.value.column)
            raise self.error(
                "invalid value for option '%s' in %s: %s"
                % (option.name, section.describe(), e.message),
                token,
            )
        target, targetOption = section, option
        if option.aliasOf is not None:
            for keyword in option.aliasOf[:-1]:
                target = self.implicitSection(target, keyword, name)
            found = target.spec.option(option.aliasOf[-1])
            assert found is not None, "alias to unknown option %r" % (option.aliasOf,)
            targetOption = found
            if option.deprecated:
                self.configuration.warn(
                    "option '%s' is deprecated, use '%s'"
                    % (option.name, "' in section '".join(reversed(option.aliasOf))),
                    (name.line, name.column),
                )
        earlier = target.written(targetOption)
        if earlier is not None:
            (line, column), previous = earlier
            same = previous.lower() == name.text.lower()
            raise self.error(
                "option '%s' in %s is already set at line %d%s"
                % (
                    name.text,
                    section.describe(),
                    line,
                    "" if same else " (as '%s')" % (previous,),
                ),
                name,
            )
        target.store(
            targetOption,
            self.configuration.resolve(targetOption, value),
            (name.line, name.column),
            name.text,
        )

    def implicitSection(self, parent: Section, keyword: str, at: Token) -> Section:
        """
        The subsection an alias such as C{auth_flags} writes into; made
        if the file has none (yet).
        """
        existing = self.group(parent, keyword)
        if existing:
            return existing[0]
        spec = parent.spec.subsection(keyword)
        assert spec is not None, "alias into unknown section %r" % (keyword,)
        child = Section(spec, self.configuration, parent, None, (at.line, at.column))
        child.implicit = True
        parent.addSection(child)
        existing.append(child)
        return child

    def group(self, parent: Section, keyword: str) -> List[Section]:
        """
        The subsections of C{parent} with this keyword so far.
        """
        return self.groups.setdefault((id(parent), keyword.lower()), [])

    def subsection(self, parent: Section, entry: SectionEntry) -> None:
        keyword = entry.keyword
        spec = parent.spec.subsection(keyword.text)
        if spec is None:
            spec = self.unknownSection(parent, entry)
        name = entry.name.text if entry.name is not None else None
        if spec.naming == NO_NAME and entry.name is not None:
            raise self.error(
                "section '%s' takes no name (found '%s')" % (spec.keyword, name),
                entry.name,
            )
        if spec.naming == REQUIRED_NAME and entry.name is None:
            raise self.error(
                "section '%s' needs a name: '%s NAME { ... }'"
                % (spec.keyword, spec.keyword),
                keyword,
            )
        if entry.name is not None and not entry.name.text:
            raise self.error("empty section name", entry.name)
        existing = self.group(parent, keyword.text)
        if existing and existing[-1].implicit and name is None:
            child = existing[-1]
            child.implicit = False
            child.position = (keyword.line, keyword.column)
        else:
            key = self.checkCount(parent, spec, entry, existing)
            child = Section(
                spec,
                self.configuration,
                parent,
                name,
                (keyword.line, keyword.column),
                keyword=spec.keyword or keyword.text,
            )
            parent.addSection(child)
            existing.append(child)
            if key is not None:
                self.names[key] = child
        self.fill(child, entry.entries)

    def unknownSection(self, parent: Section, entry: SectionEntry) -> SectionSpec:
        """
        A section keyword the table does not know: at the top level, a
        service started by MCP if it sets C{mcp_type}; otherwise an error.
        """
        keyword = entry.keyword
        spec = parent.spec
        if not parent.keyword and _KEYWORD.match(keyword.text):
            for e in entry.entries:
                if isinstance(e, OptionEntry) and e.name.text.lower() in (
                    "mcp_type",
                    "type",
                ):
                    guess = closest(keyword.text, list(table.COMPONENTS))
                    if guess is not None:
                        self.configuration.warn(
                            "section '%s' is not an smx component; it is taken "
                            "as a service started by MCP (did you mean '%s'?)"
                            % (keyword.text, guess),
                            (keyword.line, keyword.column),
                        )
                    return table.serviceSpec(keyword.text)
        option = spec.option(keyword.text)
        if option is not None and entry.name is None:
            raise self.error(
                "expected '=' after '%s' ('%s' is an option: write '%s = value;')"
                % (keyword.text, keyword.text, option.name),
                entry.brace or keyword,
            )
        guess = closest(keyword.text, [s.keyword for s in spec.subsections])
        message = "unknown section '%s' in %s" % (keyword.text, parent.describe())
        hint = self.hint(keyword.text, parent)
        if hint:
            message += hint
        elif guess is not None:
            message += "; did you mean '%s'?" % (guess,)
        elif not parent.keyword:
            message += " (a service started by MCP needs 'mcp_type')"
        raise self.error(message, keyword)

    def checkCount(
        self,
        parent: Section,
        spec: SectionSpec,
        entry: SectionEntry,
        existing: List[Section],
    ) -> Optional[Tuple[Any, Optional[str]]]:
        """
        Check that one more section of this kind may be given here.

        @return: the key under which its name must be unique (map names
            are unique in the whole file), or C{None}.
        """
        keyword = entry.keyword
        nameToken = entry.name
        if existing and not spec.multiple:
            first = existing[0]
            raise self.error(
                "section '%s' is already given at line %d (only one is allowed%s)"
                % (
                    keyword.text,
                    first.position[0] if first.position else 0,
                    "" if not parent.keyword else " in %s" % (parent.describe(),),
                ),
                keyword,
            )
        if spec.maxCount is not None and len(existing) >= spec.maxCount:
            raise self.error(
                "too many '%s' sections in %s (at most %d)"
                % (spec.keyword, parent.describe(), spec.maxCount),
                keyword,
            )
        if spec.naming == NO_NAME:
            return None
        scope: Any = (
            "map" if spec.keyword == "map" else (id(parent), keyword.text.lower())
        )
        if nameToken is None:
            unnamed = self.names.get((scope, None))
            if unnamed is not None:
                raise self.error(
                    "a second unnamed '%s' section (the first is at line %d); "
                    "give each a name: '%s NAME { ... }'"
                    % (
                        keyword.text,
                        unnamed.position[0] if unnamed.position else 0,
                        spec.keyword,
                    ),
                    keyword,
                )
            return (scope, None)
        key = (scope, nameToken.text.lower())
        same = self.names.get(key)
        if same is not None:
            raise self.error(
                "section '%s %s' is already given at line %d"
                % (
                    spec.keyword,
                    nameToken.text,
                    same.position[0] if same.position else 0,
                ),
                nameToken,
            )
        return key

    def checkRequired(self, section: Section) -> None:
        for option in section.spec.options:
            if option.required and not section.isSet(option.name):
                raise section.error(
                    "%s requires option '%s'" % (section.describe(), option.name)
                )


def buildConfiguration(
    entries: Sequence[Entry],
    filename: Optional[str],
    path: Optional[str],
    configDirectory: str,
    queueDirectory: str,
) -> Configuration:
    """
    Make a checked L{Configuration} from parsed entries.

    @raise ConfigError: for anything the table does not accept.
    """
    configuration = Configuration(
        table.ROOT, path, filename, configDirectory, queueDirectory
    )
    _Builder(configuration).fill(configuration.globals, entries)
    reconcile(configuration)
    return configuration


def _directories(
    configDirectory: Optional[str], queueDirectory: Optional[str]
) -> tuple:
    queue = os.path.abspath(
        queueDirectory if queueDirectory is not None else os.getcwd()
    )
    config = os.path.abspath(configDirectory) if configDirectory is not None else queue
    return config, queue


def configurationFromText(
    text: str,
    filename: str = "smx.conf",
    queueDirectory: Optional[str] = None,
    configDirectory: Optional[str] = None,
) -> Configuration:
    """
    Make a configuration from the text of a file (for tests and for
    programs that read the file themselves).

    @param text: the whole file.
    @param filename: the name used in error messages.
    @param queueDirectory: the execution directory (default: the current
        directory).
    @param configDirectory: the base of configuration-relative paths
        (default: the queue directory).
    @raise ConfigError: if the text is not a valid configuration.
    """
    config, queue = _directories(configDirectory, queueDirectory)
    return buildConfiguration(
        parseEntries(text, filename), filename, None, config, queue
    )


#: the same as L{configurationFromText}
parseConfiguration = configurationFromText


def loadConfiguration(path: str, queueDirectory: Optional[str] = None) -> Configuration:
    """
    Read and check a configuration file (C{-f}).

    @param path: the file; its directory is the configuration directory.
    @param queueDirectory: the execution directory (default: the current
        directory).
    @raise ConfigError: if the file cannot be read, is not UTF-8 or is not
        a valid configuration.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except IsADirectoryError:
        raise ConfigError("is a directory, not a configuration file", path)
    except OSError as e:
        raise ConfigError("cannot read: %s" % (e.strerror or e,), path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        # lines end with LF, CR LF or CR, as in the grammar
        before = _LINE_END.split(data[: e.start])
        line = len(before)
        column = len(before[-1].decode("utf-8", "replace")) + 1
        raise ConfigError("not valid UTF-8 text", path, line, column)
    if text.startswith("\ufeff"):
        text = text[1:]
    absolute = os.path.abspath(path)
    config, queue = _directories(os.path.dirname(absolute), queueDirectory)
    return buildConfiguration(parseEntries(text, path), path, absolute, config, queue)


def defaultConfiguration(
    queueDirectory: Optional[str] = None, configDirectory: Optional[str] = None
) -> Configuration:
    """
    The built-in defaults, used when no C{-f} is given (seed §5).

    @param queueDirectory: the execution directory (default: the current
        directory).
    @param configDirectory: the base of configuration-relative paths
        (default: the queue directory).
    """
    config, queue = _directories(configDirectory, queueDirectory)
    return buildConfiguration([], None, None, config, queue)

# -*- test-case-name: smx.config.test.test_model -*-
"""
The configuration as the components see it: a L{Configuration} of
L{Section}s whose options are typed, defaulted and resolved.

    cfg = loadConfiguration("/etc/smx/smx.conf")
    smtps = cfg.section("smtps")          # the unnamed one, or the only one
    smtps["io_timeout"]                   # 300.0, default applied
    smtps.isSet("io_timeout")             # False
    smtps.section("tls")["cert_file"]     # None, or an absolute path
    cfg.section("smtps", "MSA")           # a named one (SectionNotFound)
    cfg.section("smar").sections("map")   # map declarations, .name

Options and keywords are case-insensitive.  Asking for an option or a
kind of subsection that the table does not have is a programming error
and raises C{KeyError}.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from smx.config.errors import ConfigError, SectionNotFound
from smx.config.schema import NO_NAME, Option, SectionSpec

Position = Tuple[int, int]


class Section:
    """
    One section of a configuration (or the global section).

    @ivar keyword: the canonical keyword (C{""} for the global section;
        as written for a service section that is not an smx component).
    @ivar name: the name of a named section, else C{None}.
    @ivar spec: the L{SectionSpec} of this kind of section.
    @ivar configuration: the L{Configuration} it belongs to.
    @ivar parent: the enclosing L{Section}, or C{None}.
    @ivar position: C{(line, column)} of its keyword in the file, or
        C{None} for a section that is not in the file (its defaults).
    """

    def __init__(
        self,
        spec: SectionSpec,
        configuration: "Configuration",
        parent: Optional["Section"] = None,
        name: Optional[str] = None,
        position: Optional[Position] = None,
        keyword: Optional[str] = None,
    ) -> None:
        self.spec = spec
        self.keyword = spec.keyword if keyword is None else keyword
        self.name = name
        self.configuration = configuration
        self.parent = parent
        self.position = position
        self._values: Dict[str, Any] = {}
        self._positions: Dict[str, Position] = {}
        self._written: Dict[str, str] = {}
        self._defaults: Dict[str, Any] = {}
        self._children: List[Section] = []
        self._absent: Dict[str, Section] = {}
        #: made by an alias such as C{auth_flags}, not (yet) written
        self.implicit = False

    # names

    def title(self) -> str:
        """
        @return: C{"smtps"}, C{"smtps MTA"} or C{"global"}.
        """
        if not self.keyword:
            return "global"
        if self.name is None:
            return self.keyword
        return "%s %s" % (self.keyword, self.name)

    def displayPath(self) -> str:
        """
        @return: the titles from the top, e.g. C{"smtps MTA.tls"}.
        """
        if self.parent is None or not self.parent.keyword:
            return self.title()
        return "%s.%s" % (self.parent.displayPath(), self.title())

    def describe(self) -> str:
        """
        @return: how error messages name it: C{"the global section"} or
            C{"section 'smtps.tls'"}.
        """
        if not self.keyword:
            return "the global section"
        return "section '%s'" % (self.displayPath(),)

    def __repr__(self) -> str:
        return "<Section %s>" % (self.displayPath(),)

    # options

    def _option(self, name: str) -> Tuple["Section", Option]:
        """
        Find an option, following aliases.

        @raise KeyError: if this kind of section has no such option.
        """
        option = self.spec.option(name)
        if option is None:
            raise KeyError("%s has no option %r" % (self.describe(), name))
        if option.aliasOf is None:
            return self, option
        section: Section = self
        for keyword in option.aliasOf[:-1]:
            section = section.section(keyword)
        return section._option(option.aliasOf[-1])

    def __getitem__(self, name: str) -> Any:
        section, option = self._option(name)
        key = option.name.lower()
        if key in section._values:
            return section._values[key]
        if key not in section._defaults:
            section._defaults[key] = section.configuration.resolve(
                option, option.defaultValue()
            )
        return section._defaults[key]

    def override(self, name: str, value: Any) -> None:
        """
        Set an option from the command line, after the file (seed §5:
        "later settings override earlier ones").  The value is checked
        against its type and bounds; call L{Configuration.reconcile} after
        the last override to check the settings that depend on each other
        (C{-C 7 -c 3} is fine although C{-C 7} alone contradicts the
        default of C{-c}).

        @param name: the option (any spelling the file accepts).
        @param value: its value as smx.conf text (C{"5m"}) or as a Python
            value of the option's type (C{300.0}, C{50}).
        @raise ConfigError: if the value does not fit the option.
        """
        from smx.config.grammar import parseValueText
        from smx.config.values import ValueProblem

        section, option = self._option(name)
        text = value if isinstance(value, str) else option.type.render(value)
        try:
            converted = option.type.convert(parseValueText(text, "command line"))
        except (ValueProblem, ConfigError) as e:
            raise ConfigError(
                "command line: invalid value %r for option '%s' in %s: %s"
                % (text, option.name, section.describe(), getattr(e, "message", e))
            )
        section.store(
            option, section.configuration.resolve(option, converted), None, option.name
        )

    def get(self, name: str, default: Any = None) -> Any:
        """
        Like C{self[name]}, but C{default} for an option this kind of
        section does not have.
        """
        try:
            return self[name]
        except KeyError:
            return default

    def isSet(self, name: str) -> bool:
        """
        @return: whether the option was written in the file (under this
            name or an alias of it).
        """
        section, option = self._option(name)
        return option.name.lower() in section._values

    def setOptions(self) -> List[str]:
        """
        @return: the canonical names of the options written in the file
            for this section, in table order.
        """
        return [o.name for o in self.spec.options if o.name.lower() in self._values]

    def positionOf(self, name: str) -> Optional[Position]:
        """
        @return: C{(line, column)} of where an option was set, or C{None}.
        """
        section, option = self._option(name)
        return section._positions.get(option.name.lower())

    def writtenAs(self, name: str) -> Optional[str]:
        """
        @return: the name an option was written as in the file (it may be
            an alias, e.g. C{max_recipients}), or C{None}.
        """
        section, option = self._option(name)
        return section._written.get(option.name.lower())

    def where(self, name: Optional[str] = None) -> str:
        """
        @return: C{"file:line:column"} of an option (or of the section
            when C{name} is C{None}), as far as known.
        """
        return self.error("", name).location()

    def error(self, message: str, name: Optional[str] = None) -> ConfigError:
        """
        Make the error a component raises when a value is unusable (e.g.
        a map file that does not exist), naming file, line and column.

        @param message: the problem.
        @param name: the option at fault, or C{None} for the section.
        """
        position = self.positionOf(name) if name is not None else None
        if position is None:
            position = self.position
        filename = self.configuration.filename
        if position is None:
            return ConfigError(message, filename)
        return ConfigError(message, filename, position[0], position[1])

    # subsections

    def _subspec(self, keyword: str) -> SectionSpec:
        spec = self.spec.subsection(keyword)
        if spec is not None:
            return spec
        for child in self._children:
            if child.keyword.lower() == keyword.lower():
                return child.spec
        raise KeyError("%s has no section %r" % (self.describe(), keyword))

    def sections(self, keyword: Optional[str] = None) -> List["Section"]:
        """
        @param keyword: the kind of subsection, or C{None} for all.
        @return: the subsections in file order.  C{map} declarations are
            shared by the global section and C{smar}: both list all of them.
        """
        if keyword is None:
            return list(self._children)
        spec = self._subspec(keyword)
        if spec.keyword == "map" and self.spec.keyword in ("", "smar"):
            return list(self.configuration._maps)
        return [c for c in self._children if c.keyword.lower() == keyword.lower()]

    def section(self, keyword: str, name: Optional[str] = None) -> "Section":
        """
        Get a subsection.

        @param keyword: its kind, e.g. C{"tls"}.
        @param name: the name of a named section, or C{None} for the
            unnamed one (or the only one, if there is one section of this
            kind).
        @return: the section, or one with the defaults of its kind if the
            file has none (for C{name=None}).
        @raise SectionNotFound: if C{name} is given and there is no such
            section.
        @raise KeyError: if this kind of section has no such subsection.
        """
        spec = self._subspec(keyword)
        candidates = self.sections(keyword)
        if name is None:
            for c in candidates:
                if c.name is None:
                    return c
            if len(candidates) == 1:
                return candidates[0]
            key = spec.keyword.lower()
            if key not in self._absent:
                self._absent[key] = Section(spec, self.configuration, self)
            return self._absent[key]
        for c in candidates:
            if c.name is not None and c.name.lower() == name.lower():
                return c
        raise SectionNotFound(
            "no section '%s %s' in %s"
            % (
                spec.keyword,
                name,
                "the configuration" if not self.keyword else self.describe(),
            ),
            self.configuration.filename,
        )

    # building (used by L{smx.config.build})

    def store(
        self, option: Option, value: Any, position: Optional[Position], writtenAs: str
    ) -> None:
        """
        Set an option while the configuration is built.

        @param option: the (canonical, not alias) option.
        @param value: its converted and resolved value.
        @param position: where it was written, or C{None}.
        @param writtenAs: the name as written (perhaps an alias).
        """
        key = option.name.lower()
        self._values[key] = value
        if position is None:
            self._positions.pop(key, None)
        else:
            self._positions[key] = position
        self._written[key] = writtenAs

    def written(self, option: Option) -> Optional[Tuple[Position, str]]:
        """
        @return: C{(position, name as written)} if an option was set from
            the file, else C{None}.
        """
        key = option.name.lower()
        if key not in self._positions:
            return None
        return self._positions[key], self._written[key]

    def addSection(self, child: "Section") -> None:
        """
        Add a subsection while the configuration is built.
        """
        self._children.append(child)
        if child.spec.keyword == "map":
            self.configuration._maps.append(child)


class Configuration:
    """
    A whole configuration.

    @ivar path: absolute path of the file, or C{None} when there is none.
    @ivar filename: the file name used in messages (as given).
    @ivar configDirectory: the base of relative map, configuration and TLS
        file names (seed §5.6 case 1).
    @ivar queueDirectory: the base of relative socket and database names,
        the execution directory (seed §5.6 case 2).
    @ivar globals: the global L{Section}.
    @ivar warnings: one line per problem that does not stop smx.
    """

    def __init__(
        self,
        root: SectionSpec,
        path: Optional[str],
        filename: Optional[str],
        configDirectory: str,
        queueDirectory: str,
    ) -> None:
        self.path = path
        self.filename = filename
        self.configDirectory = configDirectory
        self.queueDirectory = queueDirectory
        self.warnings: List[str] = []
        self._maps: List[Section] = []
        self.globals = Section(root, self)

    def resolve(self, option: Option, value: Any) -> Any:
        """
        Resolve a converted value of an option: relative paths become
        absolute (seed §5.6).
        """
        return option.type.resolve(value, self.configDirectory, self.queueDirectory)

    def reconcile(self) -> None:
        """
        Check the settings that depend on each other again (after
        L{Section.override}); see L{smx.config.reconcile}.

        @raise ConfigError: for a contradiction.
        """
        from smx.config.reconcile import reconcile

        reconcile(self)

    def section(self, keyword: str, name: Optional[str] = None) -> Section:
        """
        Get a top-level section; see L{Section.section}.
        """
        return self.globals.section(keyword, name)

    def sections(self, keyword: Optional[str] = None) -> List[Section]:
        """
        Get the top-level sections of one kind (all of them for C{None}),
        in file order; see L{Section.sections}.
        """
        return self.globals.sections(keyword)

    def warn(self, message: str, position: Optional[Position] = None) -> None:
        """
        Record a warning, located like a L{ConfigError}, once (the checks
        run again after command-line overrides).
        """
        if position is None:
            error = ConfigError(message, self.filename)
        else:
            error = ConfigError(message, self.filename, position[0], position[1])
        line = (
            "%s: warning: %s" % (error.location(), message)
            if error.location()
            else "warning: " + message
        )
        if line not in self.warnings:
            self.warnings.append(line)

    def __repr__(self) -> str:
        return "<Configuration %s>" % (self.path,)


def isNamed(spec: SectionSpec) -> bool:
    """
    @return: whether sections of this kind may have a name.
    """
    return spec.naming != NO_NAME

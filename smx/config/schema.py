# -*- test-case-name: smx.config.test.test_options -*-
"""
The building blocks of the option table (L{smx.config.options}): an
L{Option} is one entry C{name = value;}, a L{SectionSpec} one kind of
section C{keyword [name] { ... }}.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Tuple, Union

from smx.config.grammar import parseValueText
from smx.config.values import ValueType

#: values of L{SectionSpec.naming}
NO_NAME = "no name"
OPTIONAL_NAME = "optional name"
REQUIRED_NAME = "required name"


@dataclass(frozen=True)
class Option:
    """
    One option of the table.

    @ivar name: the canonical spelling (names are case-insensitive).
    @ivar type: its L{ValueType}.
    @ivar default: the default as smx.conf text (C{"5d"}, C{"8MB"},
        C{"{a, b}"}), or C{None} if the option has no value unless set.
    @ivar ref: the seed section that describes it, e.g. C{"§5.7"}.
    @ivar doc: one line of documentation.
    @ivar required: whether a section of this kind must set it.
    @ivar aliasOf: for an alternative spelling, the path of the option it
        stands for: C{("max_recipients_per_session",)} or, into a
        subsection, C{("auth", "flags")}.
    @ivar deprecated: whether using it gives a warning.
    @ivar group: C{"mcp"} for the options of seed §5.2, C{"log"} for
        §5.5, C{""} otherwise (used to arrange the documentation).
    @ivar dynamicDefault: computes the default when it depends on the
        machine (C{hostname}).
    @ivar defaultDoc: how the documentation describes a default that is
        not simply C{default}.
    @ivar inert: why the option has no effect in the mode smx runs in
        (embedded, one process), or C{None} if a component uses it.
        Setting it gives a warning (L{smx.config.effect}).
    @ivar inertFlags: for a flags option, C{(flag, why)} for each flag
        that has no effect (lower-case flag names).
    """

    name: str
    type: ValueType
    default: Optional[str]
    ref: str
    doc: str
    required: bool = False
    aliasOf: Optional[Tuple[str, ...]] = None
    deprecated: bool = False
    group: str = ""
    dynamicDefault: Optional[Callable[[], Any]] = None
    defaultDoc: Optional[str] = None
    inert: Optional[str] = None
    inertFlags: Tuple[Tuple[str, str], ...] = ()

    def inertFlag(self, flag: str) -> Optional[str]:
        """
        @return: why C{flag} (of a flags option) has no effect, or C{None}.
        """
        for name, why in self.inertFlags:
            if name == flag.lower():
                return why
        return None

    def defaultValue(self) -> Any:
        """
        @return: the converted (unresolved) default, or C{None}.
        """
        if self.dynamicDefault is not None:
            return self.dynamicDefault()
        if self.default is None:
            return None
        return self.type.convert(parseValueText(self.default))

    @property
    def unit(self) -> Optional[str]:
        return self.type.unit


@dataclass
class SectionSpec:
    """
    One kind of section.

    @ivar keyword: canonical spelling of its keyword (C{""} for the
        top level of the file).
    @ivar ref: the seed section that describes it.
    @ivar doc: one line (or a short paragraph) of documentation.
    @ivar options: its options, in documentation order.
    @ivar subsections: the kinds of sections it may contain.
    @ivar naming: L{NO_NAME}, L{OPTIONAL_NAME} or L{REQUIRED_NAME}.
    @ivar multiple: whether it may appear more than once in its parent
        (named sections need different names; at most one may be unnamed).
    @ivar maxCount: the most occurrences, or C{None}.
    @ivar inert: why a section of this kind has no effect in the mode smx
        runs in, or C{None}; giving one is a warning (its options are not
        warned about one by one).
    """

    keyword: str
    ref: str
    doc: str
    options: Tuple[Option, ...] = ()
    subsections: Tuple["SectionSpec", ...] = ()
    naming: str = NO_NAME
    multiple: bool = False
    maxCount: Optional[int] = None
    inert: Optional[str] = None
    _options: Dict[str, Option] = field(default_factory=dict, repr=False)
    _subsections: Dict[str, "SectionSpec"] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for o in self.options:
            if o.name.lower() in self._options:
                raise ValueError("option %s twice in %s" % (o.name, self.keyword))
            self._options[o.name.lower()] = o
        for s in self.subsections:
            self._subsections[s.keyword.lower()] = s

    def option(self, name: str) -> Optional[Option]:
        """
        @return: the option called C{name} (any case), or C{None}.
        """
        return self._options.get(name.lower())

    def subsection(self, keyword: str) -> Optional["SectionSpec"]:
        """
        @return: the kind of subsection with this keyword (any case), or
            C{None}.
        """
        return self._subsections.get(keyword.lower())

    def walk(
        self, path: Tuple[str, ...] = ()
    ) -> Iterator[Tuple[Tuple[str, ...], "SectionSpec"]]:
        """
        Yield C{(path, spec)} for this section and every subsection, depth
        first, C{path} being the keywords from the top.
        """
        yield path, self
        for sub in self.subsections:
            yield from sub.walk(path + (sub.keyword,))


Member = Union[Option, SectionSpec]


def section(
    keyword: str,
    ref: str,
    doc: str,
    members: Sequence[Member],
    naming: str = NO_NAME,
    multiple: bool = False,
    maxCount: Optional[int] = None,
    inert: Optional[str] = None,
) -> SectionSpec:
    """
    Declare a kind of section from a mixed list of options and
    subsections.

    @param inert: why such a section has no effect (see
        L{SectionSpec.inert}).
    """
    return SectionSpec(
        keyword,
        ref,
        doc,
        tuple(m for m in members if isinstance(m, Option)),
        tuple(m for m in members if isinstance(m, SectionSpec)),
        naming,
        multiple,
        maxCount,
        inert,
    )

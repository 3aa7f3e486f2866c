# -*- test-case-name: smx.config.test.test_defaults -*-
"""
NAME
    smx.config.settings - the typed settings objects of the components

SYNOPSIS
    @dataclasses.dataclass(frozen=True, slots=True)
    class QueueSettings:
        aqMaxEntries: int
        hostname: str
        ...
        OPTIONS: ClassVar[Mapping[str, str]] = {
            "aqMaxEntries": "AQ_max_entries",      # in the component section
            "ibdbFileSize": "IBDB.size",           # in a subsection
            "hostname": "/hostname",               # from the top of the file
        }
        DERIVED: ClassVar[Mapping[str, Tuple[str, ...]]] = {
            "headerOnlyInBounce": ("flags",),      # computed from options
            "queueDirectory": (),                  # not an option
        }

    values = optionValues(QueueSettings, cfg.section("qmgr"))

DESCRIPTION
    Every component gets a frozen settings object built from the
    configuration (C{QueueSettings.fromConfiguration(cfg)},
    C{ServerSettings.fromSection(section)}, ...).  Its fields have no
    defaults, and neither have the options among the arguments of the
    component's constructor: the option table (L{smx.config.options}) is
    the only place a default lives, and a configuration applies it
    (C{Section[name]} is the default when the option is not set).

    C{OPTIONS} maps each field that holds an option's value as the table
    gives it (seconds, bytes, absolute paths) to where the option is:
    C{"IBDB.size"} in the component's section, C{"/qmgr.flags"} from the
    top of the file.  C{DERIVED} names the fields computed from options,
    with those options.  Every field is in one of them; the tests in
    L{smx.config.test.test_defaults} walk both against the table.

    Tests build settings from the default configuration and change single
    fields with C{dataclasses.replace} (the C{default...Settings}
    functions of each package's C{testing} module), so that they run with
    what users run.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Tuple

from smx.config.schema import Option


def optionSection(section: Any, path: str) -> Tuple[Any, str]:
    """
    Find the section that holds the option at C{path}.

    @param section: the component's L{smx.config.Section}.
    @param path: C{"name"}, C{"sub.name"}, or C{"/section.name"} from the
        top of the file (C{"/hostname"}).
    @return: C{(section, option name)}.
    @raise KeyError: if a subsection or option does not exist in the table.
    """
    if path.startswith("/"):
        section = section.configuration.globals
        path = path[1:]
    *keywords, name = path.split(".")
    for keyword in keywords:
        section = section.section(keyword)
    return section, name


def optionValue(section: Any, path: str) -> Any:
    """
    @return: the value of the option at C{path} (see L{optionSection}),
        its default applied.
    """
    holder, name = optionSection(section, path)
    return holder[name]


def tableOption(section: Any, path: str) -> Option:
    """
    @return: the L{Option} of the table at C{path} (aliases followed).
    @raise KeyError: if there is none.
    """
    holder, name = optionSection(section, path)
    return holder._option(name)[1]


def optionValues(settingsClass: Any, section: Any) -> Dict[str, Any]:
    """
    @param settingsClass: a settings class with C{OPTIONS}.
    @param section: the component's section.
    @return: the keyword arguments of C{settingsClass} for every field in
        its C{OPTIONS}.
    """
    return {
        field: optionValue(section, path)
        for field, path in settingsClass.OPTIONS.items()
    }


def fieldNames(settingsClass: Any) -> Tuple[str, ...]:
    """
    @return: the names of the fields of a settings class, in order.
    """
    return tuple(f.name for f in dataclasses.fields(settingsClass))

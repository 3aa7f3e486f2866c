# -*- test-case-name: smx.pmilter.test.test_greylist -*-
"""
NAME
    smx.pmilter.settings - the settings a shipped pmilter reads

SYNOPSIS
    settings = settingsOf(server, "greylist")   # {"delay": 300.0, ...}

DESCRIPTION
    A host gives a pmilter its settings as C{server.options}: its
    subsection of C{smtps { pmilter { ... } } }} with the defaults filled
    in (L{smx.pmilter.plugins.pluginOptions}).  A host that gives none (a
    test, a program of someone else) leaves the pmilter with the defaults
    of the option table, which is the only place defaults are written.
"""

from __future__ import annotations

from typing import Any, Dict


def tableDefaults(name: str) -> Dict[str, Any]:
    """
    The defaults of a plugin's settings from the option table
    (C{smtps { pmilter { NAME { ... } } }}).

    @raise KeyError: the table has no settings for C{name}.
    """
    from smx.config.options import ROOT

    spec = ROOT
    for keyword in ("smtps", "pmilter", name):
        sub = spec.subsection(keyword) if spec is not None else None
        spec = sub  # type: ignore[assignment]
    if spec is None:
        raise KeyError("the option table has no settings for pmilter %r" % (name,))
    return {o.name: o.defaultValue() for o in spec.options}


def settingsOf(server: Any, name: str) -> Dict[str, Any]:
    """
    A plugin's settings: C{server.options} over the table's defaults.
    """
    settings = tableDefaults(name)
    settings.update(server.options or {})
    return settings

# -*- test-case-name: smx.config.test.test_splitoptions -*-
"""
The options only split mode reads (L{smx.split}): the sockets between
the components (seed §5.4) and how long a component waits for its peer.
In embedded mode (no top-level section sets C{path}, see
L{smx.config.effect}) the components call each other in one process, and
setting them has no effect.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:  # pragma: no cover
    from smx.config.model import Section
    from smx.config.schema import Option

#: section keyword ("" for the global options) -> options of split mode
SPLIT_ONLY = {
    "": ("SMAR_socket", "SMTPC_socket", "SMTPS_socket"),
    "qmgr": ("wait_for_client",),
    "smtpc": ("wait_for_server",),
}

#: why they have no effect in embedded mode
EMBEDDED = (
    "used in split mode between the components' processes, and no section "
    "of this configuration sets 'path' (doc/split.md)"
)


def splitOnlyUnused(section: "Section", option: "Option") -> Optional[str]:
    """
    @return: why C{option} of C{section} has no effect in embedded mode
        if it is one of L{SPLIT_ONLY} and the configuration runs
        embedded, else C{None}.
    """
    keyword = "" if section.parent is None else section.keyword
    if section.parent is not None and section.parent.parent is not None:
        return None
    if option.name not in SPLIT_ONLY.get(keyword, ()):
        return None
    for s in section.configuration.sections():
        if s.spec.option("path") is not None and s.isSet("path"):
            return None
    return EMBEDDED

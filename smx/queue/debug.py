# -*- test-case-name: smx.queue.test.test_debug -*-
"""
The debug categories of QMGR (seed App. E: C{qmgr -x c.n}).

Each category (L{smx.config.componentoptions.QMGR_DEBUG_CATEGORIES}) has
its own level: the qmgr option C{debug_categories} (or C{-x}) sets it,
C{debug_level} is the level of the others.  L{debug} writes a record
C{dbg=CATEGORY.LEVEL, ...} of severity DEBUG when the category's level is
at least the record's, whatever the C{log_level} of the qmgr log (the
debug levels are their own switch).  Level 1 records come once per
transaction or delivery attempt, level 2 once per recipient.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable

from smx.config.componentoptions import parseDebugOptions
from smx.log import Logger

SMTPS = 1
IBDB = 2
SCHED = 3
SMAR = 4
SMTPC = 5
DEFEDB = 6
DSN = 7
CONN = 8


class DebugLevels:
    """
    The debug level of each category.

    @ivar levels: category -> level, for the categories named.
    @ivar default: the level of every other category.
    """

    def __init__(self, levels: Dict[int, int], default: int = 0) -> None:
        self.levels = dict(levels)
        self.default = default

    @classmethod
    def fromOptions(cls, options: Iterable[str], default: int = 0) -> "DebugLevels":
        """
        @param options: debug options as C{-x} takes them (C{"1-3.4"}),
            later ones overriding earlier ones.
        @raise ValueError: for a bad option.
        """
        levels = {}  # type: Dict[int, int]
        for text in options:
            levels.update(parseDebugOptions(text))
        return cls(levels, default)

    def level(self, category: int) -> int:
        """The level of C{category}."""
        return self.levels.get(category, self.default)

    def __bool__(self) -> bool:
        return self.default > 0 or any(self.levels.values())


class DebugLogger(Logger):
    """
    A L{Logger} that also knows the debug levels (L{debug} looks for
    them); it writes to the sink of the logger it is made from.
    """

    def __init__(self, logger: Logger, levels: DebugLevels) -> None:
        Logger.__init__(self, logger.component, logger.level, logger.sink)
        self.debugLevels = levels


def debug(logger: Any, category: int, level: int, **fields: Any) -> None:
    """
    Write a debug record of C{category} at C{level} if the category's
    level (of a L{DebugLogger}) is at least C{level}.
    """
    levels = getattr(logger, "debugLevels", None)
    if levels is None or levels.level(category) < level:
        return
    record = {"dbg": "%d.%d" % (category, level)}  # type: Dict[str, Any]
    record.update(fields)
    logger.emit("DEBUG", 0, record)

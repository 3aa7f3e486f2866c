# -*- test-case-name: smx.test.test_logobserver -*-
"""
NAME
    smx.logobserver - smx's log records through twistd's text log, cheaply

SYNOPSIS
    observer = speedUp(twistdLogObserver(options))  # a TurnLog
    observer.startDirect()          # smx's records straight to it

DESCRIPTION
    Without a C{log { file }} option a component's records go to Twisted's
    global log, i.e. to twistd's text log (standard output under
    C{twistd -n}, which the MCP sends to the component's log file in split
    mode).  There Twisted formats every event in full: the time stamp with
    the local time zone computed anew, then the event's format string
    parsed, several microseconds for each of the half dozen records of a
    message in each process.

    L{speedUp} gives twistd's L{FileLogObserver} a formatter that writes
    exactly the same line for smx's records (events whose format is
    C{"{line}"}, L{smx.log._TwistedSink}): the time stamp made once per
    second, the rest put together directly.  Every other event goes to
    Twisted's own formatter as before.  The observer it returns, a
    L{TurnLog}, writes the text of a reactor turn with one C{write}
    instead of one per line (L{smx.log.TurnBuffer}).

    Once twistd logs through it, L{TurnLog.startDirect} sends smx's
    records straight to it (L{smx.log.writeTwistedRecordsTo}), past
    Twisted's log events and publisher: the same lines, in the same
    order, for a fraction of the cost.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

from twisted.logger import FileLogObserver, ILogObserver, formatTime, timeFormatRFC3339
from zope.interface import implementer

from smx import log as smxlog
from smx._twistedcompat import fileOfObserver


class _Stamp:
    """The time stamp of a second, made once per second."""

    def __init__(self, timeFormat: str) -> None:
        self.timeFormat = timeFormat
        self._second = -1
        self._text = ""

    def __call__(self, when: float) -> str:
        second = int(when)
        if second != self._second:
            self._second = second
            self._text = formatTime(float(second), self.timeFormat)
        return self._text


def classicFormatter(
    fallback: Callable[[Any], Optional[str]],
    timeFormat: str = timeFormatRFC3339,
    stamp: Optional[_Stamp] = None,
) -> Callable[[Any], Optional[str]]:
    """
    A formatter of C{"{time} [{namespace}#{level}] {line}\\n"} lines
    (Twisted's L{formatEventAsClassicLogText} with C{timeFormat}) for
    smx's records, C{fallback} for any other event.

    @param stamp: the L{_Stamp} to use (default: its own).
    """
    if stamp is None:
        stamp = _Stamp(timeFormat)

    def formatEvent(event: Any) -> Optional[str]:
        if (
            event.get("log_format") != "{line}"
            or "log_failure" in event
            or "log_system" in event
        ):
            return fallback(event)
        line = event.get("line")
        when = event.get("log_time")
        level = event.get("log_level")
        namespace = event.get("log_namespace")
        if (
            type(line) is not str
            or "\n" in line
            or when is None
            or level is None
            or namespace is None
        ):
            return fallback(event)
        return "%s [%s#%s] %s\n" % (stamp(when), namespace, level.name, line)

    return formatEvent


@implementer(ILogObserver)
class TurnLog:
    """
    twistd's text log observer made cheaper: lines formatted by
    L{classicFormatter}, the text of a reactor turn written at once, and
    smx's records accepted directly (L{record}).

    @ivar formatEvent: the formatter of Twisted's events.
    """

    def __init__(self, observer: FileLogObserver) -> None:
        self._stamp = _Stamp(timeFormatRFC3339)
        self.formatEvent = classicFormatter(observer.formatEvent, stamp=self._stamp)
        self._buffer = smxlog.TurnBuffer(fileOfObserver(observer))

    def __call__(self, event: Any) -> None:
        text = self.formatEvent(event)
        if text:
            self._buffer.add(text)

    def record(self, namespace: str, levelName: str, line: str) -> None:
        """
        One of smx's records, as L{__call__} would write the event
        C{Logger(namespace).emit(level, "{line}", line=line)}.
        """
        if "\n" in line:
            line = line.replace("\n", "\n\t")
        self._buffer.add(
            "%s [%s#%s] %s\n" % (self._stamp(time.time()), namespace, levelName, line)
        )

    def flush(self) -> None:
        """Write what was collected."""
        self._buffer.flush()

    def startDirect(self) -> None:
        """
        Take smx's records directly from now on (once twistd logs
        through this observer).
        """
        smxlog.writeTwistedRecordsTo(self)

    def stopDirect(self) -> None:
        """Let smx's records go through Twisted's log again."""
        if smxlog._direct is self:
            smxlog.writeTwistedRecordsTo(None)
        self.flush()


def speedUp(observer: Any) -> Any:
    """
    twistd's text log observer made cheaper (see the module docstring);
    any other observer is left as it is.

    @return: a L{TurnLog} for a L{FileLogObserver}, else C{observer}.
    """
    if isinstance(observer, FileLogObserver):
        return TurnLog(observer)
    return observer

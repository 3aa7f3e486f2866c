# -*- test-case-name: smx.test.test_logobserver -*-
"""
NAME
    smx.logobserver - smx's log records through twistd's text log, cheaply

SYNOPSIS
    observer = twistdLogObserver(options)          # a FileLogObserver
    speedUp(observer)

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
    Twisted's own formatter as before.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional

from twisted.logger import FileLogObserver, formatTime, timeFormatRFC3339


def classicFormatter(
    fallback: Callable[[Any], Optional[str]], timeFormat: str = timeFormatRFC3339
) -> Callable[[Any], Optional[str]]:
    """
    A formatter of C{"{time} [{namespace}#{level}] {line}\\n"} lines
    (Twisted's L{formatEventAsClassicLogText} with C{timeFormat}) for
    smx's records, C{fallback} for any other event.
    """
    stamp = [-1, ""]  # type: List[Any]

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
        second = int(when)
        if second != stamp[0]:
            stamp[0] = second
            stamp[1] = formatTime(float(second), timeFormat)
        return "%s [%s#%s] %s\n" % (stamp[1], namespace, level.name, line)

    return formatEvent


def speedUp(observer: Any) -> Any:
    """
    Give twistd's text log observer L{classicFormatter} (see the module
    docstring); any other observer is left as it is.

    @return: C{observer}.
    """
    if isinstance(observer, FileLogObserver):
        observer.formatEvent = classicFormatter(observer.formatEvent)
    return observer

# -*- test-case-name: smx.test.test_servicestop -*-
"""
NAME
    smx.servicestop - stop services one after the other

SYNOPSIS
    d = stopInReverse(list(multiService))

DESCRIPTION
    C{MultiService.stopService} calls every child's C{stopService} at once
    (in reverse order, but without waiting): QMGR would close IBDB while
    SMTPS still commits the messages whose final dot it received.
    L{stopInReverse} stops the last service first and each next one only
    when the one before has stopped (its C{stopService} Deferred fired),
    as the MCP stops its processes a rank at a time.

DIAGNOSTICS
    A service whose C{stopService} fails is logged with the failure; the
    others are stopped all the same.
"""

from __future__ import annotations

from typing import Any, List

from twisted.internet import defer
from twisted.logger import Logger

_log = Logger()


@defer.inlineCallbacks
def stopInReverse(services: List[Any]) -> Any:
    """
    Stop C{services} in reverse order, each once the one after it has
    stopped.

    @return: a L{Deferred} that fires (with C{None}) when all have
        stopped; at once if none waits for anything.
    """
    for child in reversed(services):
        try:
            yield defer.maybeDeferred(child.stopService)
        except Exception:
            _log.failure(
                "stopping {service}", service=getattr(child, "name", None) or child
            )

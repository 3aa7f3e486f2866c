# -*- test-case-name: smx.test.test_interfaces -*-
"""
An in-memory fake of L{IProcessSupervisor}.
"""

from __future__ import annotations

from typing import Any, Dict, List

from twisted.internet import defer
from zope.interface import implementer

from smx.interfaces import IProcessSupervisor


@implementer(IProcessSupervisor)
class FakeProcessSupervisor:
    """
    A supervisor of pretend processes.

    @ivar services: name -> C{dict} as returned by L{processes}.
    @ivar dependencies: name -> names restarted with it.
    """

    def __init__(self, names=(), dependencies=None) -> None:
        self.services = {}  # type: Dict[str, Dict[str, Any]]
        self.dependencies = dict(dependencies or {})  # type: Dict[str, List[str]]
        self._nextPid = 1000
        for name in names:
            self.services[name] = self._start(name, 0)

    def _start(self, name: str, restarts: int) -> Dict[str, Any]:
        self._nextPid += 1
        return {
            "name": name,
            "pid": self._nextPid,
            "state": "running",
            "restarts": restarts,
        }

    def processes(self):
        return defer.succeed([dict(s) for s in self.services.values()])

    def restart(self, name):
        if name not in self.services:
            return defer.fail(KeyError(name))
        for n in [name] + self.dependencies.get(name, []):
            if n in self.services:
                self.services[n] = self._start(n, self.services[n]["restarts"] + 1)
        return defer.succeed(None)

    def stop(self, name):
        if name not in self.services:
            return defer.fail(KeyError(name))
        self.services[name].update(pid=None, state="stopped")
        return defer.succeed(None)

# -*- test-case-name: smx.split.test.test_queue -*-
"""
Helpers for tests of split mode: serve an AMP factory on a real Unix
socket in the test's reactor, and stop what the test started.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from twisted.application import service
from twisted.internet import reactor

from smx.split.peer import listenSocket


def socketPath(testCase: Any, name: str = "sock") -> str:
    """
    A path for a Unix socket in a short temporary directory, removed after
    the test.
    """
    import shutil

    directory = tempfile.mkdtemp(prefix="smx-amp-")
    testCase.addCleanup(shutil.rmtree, directory, True)
    return os.path.join(directory, "s", name)


def serve(testCase: Any, factory: Any, path: str) -> Any:
    """
    Listen with C{factory} on the Unix socket C{path} until the test ends.

    @return: the listening port.
    """
    port = listenSocket(reactor, path, factory)
    testCase.addCleanup(port.stopListening)
    return port


def running(testCase: Any, svc: service.IService) -> service.IService:
    """
    Start C{svc} and stop it when the test ends.
    """
    svc.startService()
    testCase.addCleanup(svc.stopService)
    return svc


__all__ = ["socketPath", "serve", "running"]

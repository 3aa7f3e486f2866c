# -*- test-case-name: smx.test.test_libc -*-
"""
C library functions that Python's C{os} module lacks (Linux): looked up
once with C{ctypes}, typed, or C{None} where there is no such function.

    syncfs = function(("syncfs",), [ctypes.c_int])
    if syncfs is not None and syncfs(fd) != 0:
        raise OSError(ctypes.get_errno(), ...)
"""

from __future__ import annotations

import ctypes
import sys
from typing import Any, List, Sequence


def function(names: Sequence[str], argtypes: List[Any]) -> Any:
    """
    The first of C{names} that the C library has, with C{argtypes} and an
    C{int} result, C{errno} kept for C{ctypes.get_errno()}.

    @return: the function, or C{None} on another system than Linux or
        where the C library has none of them.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    for name in names:
        f = getattr(libc, name, None)
        if f is not None:
            f.argtypes = argtypes
            f.restype = ctypes.c_int
            return f
    return None

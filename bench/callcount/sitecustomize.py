"""
Count the Python calls of every process that imports this module: put
this directory first on C{PYTHONPATH} and name an output directory, every
user can write to, in C{SMX_CALLS} (split mode's MCP passes both on to
the components):

    mkdir -m 1777 /tmp/calls
    SMX_CALLS=/tmp/calls PYTHONPATH=bench/callcount:$PWD \\
        .venv/bin/python bench/ab.py --split --rounds 1 --messages 2000
    .venv/bin/python bench/calls.py /tmp/calls/calls-smx-smtps-*.json --messages 1000

At exit each process writes C{calls-PROGRAM-PID.json} there: each Python
function called (file, first line, name) and each builtin, with its
number of calls.  C{SMX_CALLERS} (names, comma-separated) also counts who
called the functions of those names.  The profile hook makes a process
several times slower: count calls with it, do not time them.
"""

import atexit
import collections
import json
import os
import sys

_OUT = os.environ.get("SMX_CALLS")

if _OUT:
    _counts = collections.Counter()  # type: collections.Counter
    _callers = collections.Counter()  # type: collections.Counter
    _watch = frozenset(filter(None, os.environ.get("SMX_CALLERS", "").split(",")))

    def _profile(frame, event, arg):  # type: ignore[no-untyped-def]
        if event == "call":
            code = frame.f_code
            _counts[(code.co_filename, code.co_firstlineno, code.co_name)] += 1
            if code.co_name in _watch and frame.f_back is not None:
                back = frame.f_back
                where = (back.f_code.co_filename, back.f_lineno, back.f_code.co_name)
                _callers[(code.co_name,) + where] += 1
        elif event == "c_call":
            _counts[("", 0, getattr(arg, "__qualname__", repr(arg)))] += 1

    def _dump() -> None:
        sys.setprofile(None)
        # the program's name as started (twistd rewrites sys.argv)
        try:
            with open("/proc/self/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            program = os.path.basename(argv[1] or argv[0]).decode("utf-8", "replace")
        except (OSError, IndexError):
            program = "python"
        path = os.path.join(_OUT, "calls-%s-%d.json" % (program, os.getpid()))
        with open(path, "w") as f:
            json.dump(
                {
                    "calls": [list(k) + [v] for k, v in _counts.items()],
                    "callers": [list(k) + [v] for k, v in _callers.items()],
                },
                f,
            )

    atexit.register(_dump)
    sys.setprofile(_profile)

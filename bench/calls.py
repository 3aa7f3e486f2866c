"""
Summarize the call counts that C{bench/callcount/sitecustomize.py}
wrote: Python and builtin calls per message, the functions called most,
the files whose functions are called most, and (with C{SMX_CALLERS}) the
callers of the watched functions.

    .venv/bin/python bench/calls.py /tmp/calls/calls-smx-qmgr-*.json --messages 2000

C{--messages} is what the process handled (for an SMTPS process of two,
about half of those sent).  The counts include the process's start.
"""

import argparse
import collections
import json
import os
import signal
import sys
from typing import Dict, List, Optional

_SITE = os.sep + "site-packages" + os.sep


def _short(path: str) -> str:
    if _SITE in path:
        return path.split(_SITE, 1)[1]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
    return path[len(root) :] if path.startswith(root) else path


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("file")
    p.add_argument("--messages", type=int, required=True)
    p.add_argument("--top", type=int, default=40)
    a = p.parse_args(argv)
    # quietly cut short when piped into head
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    with open(a.file) as f:
        data = json.load(f)
    n = a.messages
    python = [c for c in data["calls"] if c[0]]
    builtin = [c for c in data["calls"] if not c[0]]
    print(
        "%.0f Python calls, %.0f builtin calls per message"
        % (sum(c[3] for c in python) / n, sum(c[3] for c in builtin) / n)
    )
    print("\nfunctions")
    for path, line, name, count in sorted(python, key=lambda c: -c[3])[: a.top]:
        print("%8.2f %s:%d %s" % (count / n, _short(path), line, name))
    files = collections.Counter()  # type: Dict[str, int]
    for path, _, _, count in python:
        files[_short(path)] += count
    print("\nfiles")
    for path, count in files.most_common(a.top // 2):
        print("%8.1f %s" % (count / n, path))
    if data["callers"]:
        print("\ncallers")
        for name, path, line, caller, count in sorted(
            data["callers"], key=lambda c: -c[4]
        )[: a.top]:
            print(
                "%8.2f %-20s <- %s:%d %s"
                % (count / n, name, _short(path), line, caller)
            )


if __name__ == "__main__":
    main(sys.argv[1:])

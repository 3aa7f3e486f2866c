"""
A/B of smx against itself: the working tree against a git revision, on
the relay workload, alternately, with CPU per message from /proc.

    .venv/bin/python bench/ab.py --base HEAD~1 --rounds 3 --messages 5000 --sessions 10
    .venv/bin/python bench/ab.py --split --base HEAD~1     # split mode, as root

The base revision is checked out into a temporary git worktree and run
with C{PYTHONPATH} pointing at it (ahead of the editable install), so both
sides use the same virtual environment, smtp-source and sink.  With
C{--split} both sides run in split mode (L{mta.SmxSplit}: the worktree is
made under C{/var/tmp}, which the component users can read, and the
work tree's side is put on C{PYTHONPATH} too) and each round also prints
the CPU per message of each component process.  This is how
each change in bench/RESULTS.md was kept or dropped: the machine is noisy,
so only differences that hold across rounds count.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from bench import clients, mta, procstat  # noqa: E402
from bench.sink import SmtpSink  # noqa: E402


def _components(pid: int) -> Dict[int, str]:
    """
    The processes of the tree of C{pid} (an MCP) by the name of the
    program each runs (C{smx-qmgr}, C{smx-smtps}, ...).
    """
    names = {}
    for p in procstat.processTree(pid):
        try:
            with open("/proc/%d/cmdline" % (p,), "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        program = argv[1] if len(argv) > 1 and argv[1] else argv[0]
        names[p] = os.path.basename(program.decode("utf-8", "replace"))
    return names


def relayOnce(
    messages: int, sessions: int, size: int, hold: bool = False, split: bool = False
) -> Dict[str, Any]:
    """
    One smx relay run (or, with C{hold}, durable receive: delivery held,
    counted when acknowledged): messages per second and CPU ms per
    message; with C{split}, in split mode, and also the CPU ms per
    message of each component process (C{"processes"}: name, user ms,
    system ms).
    """
    sinkPort = mta.freePort(mta.SINK_HOST)
    sink = SmtpSink(mta.SINK_HOST, sinkPort)
    m = mta.SmxSplit() if split else mta.Smx()
    try:
        m.start(sinkPort, hold=hold)
        names = _components(m.pid) if split else {m.pid: "smx"}
        before = {p: procstat.userSystem(p) for p in names}
        t0 = time.monotonic()
        source = clients.smtpSource(m.port, messages, sessions, size, 600)
        source.communicate(timeout=600)
        if not hold and sink.waitFor(messages, 600) is None:
            raise RuntimeError("the sink counted %d of %d" % (sink.count, messages))
        t1 = time.monotonic()
        after = {p: procstat.userSystem(p) for p in names}
        processes = []
        for p in sorted(names, key=lambda p: names[p]):
            user = (after[p][0] - before[p][0]) / messages * 1000
            system = (after[p][1] - before[p][1]) / messages * 1000
            processes.append((names[p], user, system))
        return {
            "msgs_per_s": messages / (t1 - t0),
            "cpu_ms_per_msg": sum(u + s for _, u, s in processes),
            "processes": processes,
        }
    finally:
        m.stop()
        sink.stop()


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", default="HEAD", help="git revision to compare with")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--messages", type=int, default=5000)
    p.add_argument("--sessions", type=int, default=10)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument(
        "--hold", action="store_true", help="durable receive instead of relay"
    )
    p.add_argument(
        "--split", action="store_true", help="split mode (as root), CPU per process"
    )
    mta.addSettleOption(p)
    a = p.parse_args(argv)
    root = os.path.dirname(HERE)
    # split mode's component users must be able to read the base's tree
    tree = tempfile.mkdtemp(prefix="smx-ab-", dir="/var/tmp" if a.split else None)
    os.chmod(tree, 0o755)
    subprocess.run(
        ["git", "-C", root, "worktree", "add", "--detach", tree, a.base],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    # what PYTHONPATH held (bench/callcount, say) stays after each side's tree
    outer = os.environ.get("PYTHONPATH")
    try:
        for i in range(a.rounds):
            for name, path in (("base", tree), ("new", root if a.split else None)):
                mta.settle(a.settle)
                paths = [q for q in (path, outer) if q]
                if paths:
                    os.environ["PYTHONPATH"] = os.pathsep.join(paths)
                else:
                    os.environ.pop("PYTHONPATH", None)
                r = relayOnce(a.messages, a.sessions, a.size, a.hold, a.split)
                print(
                    "round %d %-4s %7.0f msg/s  %.2f ms CPU/msg"
                    % (i, name, r["msgs_per_s"], r["cpu_ms_per_msg"]),
                    flush=True,
                )
                if a.split:
                    for program, user, system in r["processes"]:
                        print(
                            "    %-12s user %.3f  sys %.3f ms/msg"
                            % (program, user, system),
                            flush=True,
                        )
    finally:
        if outer is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = outer
        subprocess.run(
            ["git", "-C", root, "worktree", "remove", "--force", tree],
            stdout=subprocess.DEVNULL,
        )
        shutil.rmtree(tree, ignore_errors=True)


if __name__ == "__main__":
    main()

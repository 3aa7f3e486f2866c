"""
A/B of smx against itself: the working tree against a git revision, on
the relay workload, alternately, with CPU per message from /proc.

    .venv/bin/python bench/ab.py --base HEAD~1 --rounds 3 --messages 5000 --sessions 10

The base revision is checked out into a temporary git worktree and run
with C{PYTHONPATH} pointing at it (ahead of the editable install), so both
sides use the same virtual environment, smtp-source and sink.  This is how
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
from typing import Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from bench import clients, mta  # noqa: E402
from bench.sink import SmtpSink  # noqa: E402


def _ticks(pid: int) -> int:
    with open("/proc/%d/stat" % (pid,)) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def relayOnce(
    messages: int, sessions: int, size: int, hold: bool = False
) -> Dict[str, float]:
    """
    One smx relay run (or, with C{hold}, durable receive: delivery held,
    counted when acknowledged): messages per second and CPU ms per
    message.
    """
    sinkPort = mta.freePort(mta.SINK_HOST)
    sink = SmtpSink(mta.SINK_HOST, sinkPort)
    m = mta.Smx()
    try:
        m.start(sinkPort, hold=hold)
        t0, c0 = time.monotonic(), _ticks(m.pid)
        source = clients.smtpSource(m.port, messages, sessions, size, 600)
        source.communicate(timeout=600)
        if not hold and sink.waitFor(messages, 600) is None:
            raise RuntimeError("the sink counted %d of %d" % (sink.count, messages))
        t1, c1 = time.monotonic(), _ticks(m.pid)
        hz = os.sysconf("SC_CLK_TCK")
        return {
            "msgs_per_s": messages / (t1 - t0),
            "cpu_ms_per_msg": (c1 - c0) / hz / messages * 1000,
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
    mta.addSettleOption(p)
    a = p.parse_args(argv)
    root = os.path.dirname(HERE)
    tree = tempfile.mkdtemp(prefix="smx-ab-")
    subprocess.run(
        ["git", "-C", root, "worktree", "add", "--detach", tree, a.base],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    try:
        for i in range(a.rounds):
            for name, path in (("base", tree), ("new", None)):
                mta.settle(a.settle)
                if path:
                    os.environ["PYTHONPATH"] = path
                else:
                    os.environ.pop("PYTHONPATH", None)
                r = relayOnce(a.messages, a.sessions, a.size, a.hold)
                print(
                    "round %d %-4s %7.0f msg/s  %.2f ms CPU/msg"
                    % (i, name, r["msgs_per_s"], r["cpu_ms_per_msg"]),
                    flush=True,
                )
    finally:
        os.environ.pop("PYTHONPATH", None)
        subprocess.run(
            ["git", "-C", root, "worktree", "remove", "--force", tree],
            stdout=subprocess.DEVNULL,
        )
        shutil.rmtree(tree, ignore_errors=True)


if __name__ == "__main__":
    main()

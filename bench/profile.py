"""
A profile of smx under the relay workload (1 KB, 10 sessions).

With py-spy (C{.venv/bin/py-spy}, sampling, attached to the running
process, C{--nonblocking}, C{--idle}: wall-clock samples, so the time
the reactor thread spends blocked in fsync(2) shows, and so does its idle
time in epoll_wait): two relay passes on one smx, the first
recorded as collapsed stacks (C{profile-smx.txt}, the input of any flame
graph tool) from which C{profile-top.txt} lists the functions with the
most samples, the second as a flame graph (C{profile-smx.svg}).  Without
py-spy: twistd's cProfile (C{profile-smx.pstats}, and the same
C{profile-top.txt} from pstats).
"""

import collections
import io
import os
import pstats
import re
import shutil
import signal
import subprocess
import time
from typing import Any, Dict, List

from bench import clients, mta
from bench.sink import SmtpSink

_LINE = re.compile(r":\d+\)$")


def _pySpy() -> str:
    here = os.path.join(mta.VENV_BIN, "py-spy")
    return here if os.path.exists(here) else (shutil.which("py-spy") or "")


def _relay(m: mta.MTA, sink: SmtpSink, n: int, total: int) -> None:
    source = clients.smtpSource(m.port, n, 10, 1024, 300)
    source.communicate(timeout=300)
    if sink.waitFor(total, 300) is None:
        raise RuntimeError("the sink counted %d of %d" % (sink.count, total))


def topFromCollapsed(path: str, limit: int = 30) -> str:
    """
    The functions with the most samples in a collapsed-stack file: by
    their own samples (self) and by the samples they are on the stack
    (inclusive).
    """
    own: Dict[str, int] = collections.Counter()
    incl: Dict[str, int] = collections.Counter()
    total = 0
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack or not count.isdigit():
                continue
            k = int(count)
            total += k
            frames = [_LINE.sub(")", fr) for fr in stack.split(";")]
            own[frames[-1]] += k
            for fr in set(frames):
                incl[fr] += k
    out = io.StringIO()
    out.write("%d samples (py-spy)\n\nself%%  function\n" % (total,))
    for fr, k in sorted(own.items(), key=lambda x: -x[1])[:limit]:
        out.write("%5.1f  %s\n" % (100.0 * k / max(total, 1), fr))
    out.write("\ninclusive%  function\n")
    for fr, k in sorted(incl.items(), key=lambda x: -x[1])[: limit + 20]:
        out.write("%5.1f  %s\n" % (100.0 * k / max(total, 1), fr))
    return out.getvalue()


def _spy(pid: int, fmt: str, path: str) -> "subprocess.Popen[bytes]":
    p = subprocess.Popen(
        [
            _pySpy(),
            "record",
            "--nonblocking",
            "--pid",
            str(pid),
            "--rate",
            "200",
            "--format",
            fmt,
            "-o",
            path,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)
    return p


def _stopSpy(p: "subprocess.Popen[bytes]") -> None:
    p.send_signal(signal.SIGINT)
    try:
        p.wait(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(timeout=10)


def profileRelay(m: mta.Smx, n: int, out: str, current: List[Any]) -> None:
    """
    Profile C{m} relaying C{n} messages; results in C{out}.  C{current}
    gets what was started, for the caller to stop.
    """
    sinkPort = mta.freePort(mta.SINK_HOST)
    sink = SmtpSink(mta.SINK_HOST, sinkPort)
    current.append(sink)
    if _pySpy():
        m.start(sinkPort)
        current.append(m)
        collapsed = os.path.join(out, "profile-smx.txt")
        spy = _spy(m.pid, "raw", collapsed)
        try:
            _relay(m, sink, n, n)
        finally:
            _stopSpy(spy)
        spy = _spy(m.pid, "flamegraph", os.path.join(out, "profile-smx.svg"))
        try:
            _relay(m, sink, n, 2 * n)
        finally:
            _stopSpy(spy)
        with open(os.path.join(out, "profile-top.txt"), "w") as f:
            f.write(topFromCollapsed(collapsed))
        return
    stats = os.path.join(out, "profile-smx.pstats")
    m.profilePath = stats
    m.start(sinkPort)
    current.append(m)
    _relay(m, sink, n, n)
    m.stop()
    s = io.StringIO()
    p = pstats.Stats(stats, stream=s)
    p.sort_stats("tottime").print_stats(30)
    p.sort_stats("cumulative").print_stats(40)
    with open(os.path.join(out, "profile-top.txt"), "w") as f:
        f.write(s.getvalue())

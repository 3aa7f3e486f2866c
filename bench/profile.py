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

from bench import clients, mta, procstat
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


def _spy(pid: int, fmt: str, path: str, wait: float = 1.0) -> "subprocess.Popen[bytes]":
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
    time.sleep(wait)
    return p


def _stopSpy(p: "subprocess.Popen[bytes]") -> None:
    mta.terminate(p, signal.SIGINT)


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


def _componentName(pid: int) -> str:
    """C{qmgr}, C{smtps0}, ... from a split-mode process's command line."""
    with open("/proc/%d/cmdline" % (pid,), "rb") as f:
        argv = f.read().split(b"\0")
    name = ""
    for i, arg in enumerate(argv):
        base = os.path.basename(arg.decode("utf-8", "replace"))
        if base.startswith("smx-"):
            name = base[4:]
        elif arg == b"-i" and i + 1 < len(argv):
            name += argv[i + 1].decode()
    return name or str(pid)


def profileSplit(
    m: "mta.SmxSplit",
    n: int,
    sessions: int,
    out: str,
    current: List[Any],
    hold: bool = False,
    spy: bool = True,
) -> str:
    """
    Profile split-mode smx relaying (or, with C{hold}, receiving) C{n}
    1 KB messages with C{sessions} sessions: every process (MCP and
    components) under its own C{py-spy record} (CPU samples only, no
    idle time: C{profile-split-NAME.txt} and C{-top.txt}), and the CPU
    each process used over the run.

    @return: a table of the CPU per message of each process.
    """
    sinkPort = mta.freePort(mta.SINK_HOST)
    sink = SmtpSink(mta.SINK_HOST, sinkPort)
    current.append(sink)
    m.start(sinkPort, hold=hold)
    current.append(m)
    pids = procstat.processTree(m.pid)
    names = {p: ("mcp" if p == m.pid else _componentName(p)) for p in pids}
    spies = []
    if spy and _pySpy():
        for p in pids:
            path = os.path.join(out, "profile-split-%s.txt" % (names[p],))
            spies.append((names[p], path, _spy(p, "raw", path, wait=0)))
        time.sleep(1.0)
    before = {p: procstat.userSystem(p) for p in pids}
    t0 = time.monotonic()
    try:
        source = clients.smtpSource(m.port, n, sessions, 1024, 300)
        source.communicate(timeout=300)
        if not hold and sink.waitFor(n, 300) is None:
            raise RuntimeError("the sink counted %d of %d" % (sink.count, n))
        seconds = time.monotonic() - t0
        after = {p: procstat.userSystem(p) for p in pids}
    finally:
        for _, _, spy in spies:
            _stopSpy(spy)
    for name, path, _ in spies:
        if os.path.exists(path):
            with open(path[: -len(".txt")] + "-top.txt", "w") as f:
                f.write(topFromCollapsed(path))
    lines = [
        "%d messages, %d sessions, %.0f msg/s%s\n"
        % (n, sessions, n / seconds, " (with py-spy)" if spies else ""),
        "| process | CPU ms/msg | user | sys |",
        "|---|---|---|---|",
    ]
    total = [0.0, 0.0]
    for p in sorted(pids, key=lambda p: names[p]):
        used = [a - b for a, b in zip(after.get(p, (0, 0)), before.get(p, (0, 0)))]
        total = [t + u for t, u in zip(total, used)]
        lines.append(
            "| %s | %.2f | %.2f | %.2f |"
            % (
                names[p],
                sum(used) / n * 1000,
                used[0] / n * 1000,
                used[1] / n * 1000,
            )
        )
    lines.append(
        "| all | %.2f | %.2f | %.2f |"
        % (sum(total) / n * 1000, total[0] / n * 1000, total[1] / n * 1000)
    )
    return "\n".join(lines) + "\n"

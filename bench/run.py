"""
smx against Postfix, side by side: the benchmark harness (run by hand,
C{make bench}; see bench/README.md).

Each measurement starts a fresh MTA (empty queue) and a fresh sink, runs
one workload, records the figures and stops both.  The MTAs alternate
(smx, Postfix, smx, Postfix, ...) so that the drift of the machine falls
on both alike.  Raw figures go to bench/results/<timestamp>/raw.jsonl as
they are taken; summary.md, chart.png and the profile of smx follow.
"""

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench import clients, floor, mta, profile, report  # noqa: E402
from bench.sink import SmtpSink, TimingSink  # noqa: E402

WORKLOADS = ("relay", "durable", "latency", "idle", "profile")
MTAS = ("smx", "smx-split", "floor", "postfix")

#: seconds to wait after the last message reached the sink, to see that
#: no duplicate follows
DUPLICATE_WAIT = 2.0


def parseArgs(argv: List[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench/run.py", description="Benchmark smx against Postfix."
    )
    p.add_argument("--runs", type=int, default=3, help="runs per MTA and case")
    p.add_argument(
        "--messages", type=int, default=5000, help="messages per throughput run"
    )
    p.add_argument(
        "--messages-single",
        type=int,
        default=None,
        help="messages per run with 1 session (default: --messages)",
    )
    p.add_argument("--sizes", default="1024,20480", help="message sizes (bytes)")
    p.add_argument("--sessions", default="1,10,50", help="concurrent sessions")
    p.add_argument(
        "--durable-sessions", default="10,50", help="sessions of the durable runs"
    )
    p.add_argument(
        "--durable-sizes", default="1024", help="sizes of the durable runs (bytes)"
    )
    p.add_argument(
        "--latency-messages", type=int, default=200, help="messages per latency run"
    )
    p.add_argument("--idle", type=int, default=10000, help="idle sessions")
    p.add_argument(
        "--profile-messages",
        type=int,
        default=5000,
        help="messages of the profiled smx relay run (1 KB, 10 sessions)",
    )
    p.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        help="comma-separated subset of " + ",".join(WORKLOADS),
    )
    p.add_argument(
        "--no-reuse-connection",
        action="store_true",
        help="smx without the qmgr flag reuse_connection",
    )
    p.add_argument(
        "--timeout", type=float, default=300, help="limit of one run (seconds)"
    )
    p.add_argument("--output", default=None, help="results folder")
    p.add_argument(
        "--revision",
        default=None,
        help="measure smx at this git revision (checked out in a temporary "
        "worktree every user can read, first on PYTHONPATH), not the work tree",
    )
    p.add_argument(
        "--mtas",
        default="smx,smx-split,postfix",
        help="MTAs to measure, interleaved in this order: smx (embedded), "
        "smx-split (MCP and components, as root), floor (bench/floor.py: the least a "
        "Python MTA of that layout does), postfix",
    )
    p.add_argument(
        "--split-smtps", type=int, default=2, help="SMTPS processes of smx-split"
    )
    p.add_argument(
        "--split-smtpc", type=int, default=1, help="SMTPC processes of smx-split"
    )
    mta.addSettleOption(p, default=80.0)
    a = p.parse_args(argv)
    a.sizes = [int(x) for x in a.sizes.split(",") if x]
    a.sessions = [int(x) for x in a.sessions.split(",") if x]
    a.durable_sessions = [int(x) for x in a.durable_sessions.split(",") if x]
    a.durable_sizes = [int(x) for x in a.durable_sizes.split(",") if x]
    a.workloads = [w for w in a.workloads.split(",") if w]
    a.mtas = [m for m in a.mtas.split(",") if m]
    for m in a.mtas:
        if m not in MTAS:
            p.error("unknown MTA %r" % (m,))
    for w in a.workloads:
        if w not in WORKLOADS:
            p.error("unknown workload %r" % (w,))
    if a.runs < 1 or a.messages < 1:
        p.error("--runs and --messages must be positive")
    return a


def ensurePrograms() -> None:
    """
    Install Postfix from Debian if its programs are missing (as root).
    """
    needed = ["/usr/sbin/postfix", "/usr/sbin/smtp-source", "/usr/sbin/smtp-sink"]
    if all(os.path.exists(p) for p in needed):
        return
    if os.geteuid() != 0:
        sys.exit("bench: Postfix is not installed; run as root or apt-get it")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(
        ["debconf-set-selections"],
        input=b"postfix postfix/main_mailer_type select No configuration\n",
        check=True,
    )
    subprocess.run(["apt-get", "update", "-q"], env=env, check=True, timeout=600)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", "postfix"],
        env=env,
        check=True,
        timeout=600,
    )


def raiseFileLimit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(need, soft)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError):
        pass
    if want < need:
        print("bench: RLIMIT_NOFILE hard limit %d is below %d" % (hard, need))


class Bench:
    def __init__(self, args: argparse.Namespace, out: str) -> None:
        self.args = args
        self.out = out
        self.raw = open(os.path.join(out, "raw.jsonl"), "a")
        self.current: List[Any] = []

    def record(self, r: Dict[str, Any]) -> None:
        r["time"] = time.time()
        self.raw.write(json.dumps(r, sort_keys=True) + "\n")
        self.raw.flush()
        shown = {k: v for k, v in r.items() if k not in ("time",)}
        print("  " + json.dumps(shown, sort_keys=True), flush=True)

    def newMTA(self, name: str) -> mta.MTA:
        if name == "smx":
            return mta.Smx(reuseConnection=not self.args.no_reuse_connection)
        if name == "smx-split":
            return mta.SmxSplit(
                reuseConnection=not self.args.no_reuse_connection,
                smtps=self.args.split_smtps,
                smtpc=self.args.split_smtpc,
            )
        if name == "floor":
            return floor.Floor()
        return mta.Postfix()

    def interleave(self, label: str, measure: Callable[[str, int], None]) -> None:
        for run in range(self.args.runs):
            for name in self.args.mtas:
                mta.settle(self.args.settle)  # the same for both MTAs
                print("%s run %d %s" % (label, run, name), flush=True)
                try:
                    measure(name, run)
                except Exception as e:  # one failed run must not end the bench
                    self.record(
                        {
                            "workload": label.split()[0],
                            "mta": name,
                            "run": run,
                            "ok": False,
                            "error": repr(e),
                        }
                    )

    def throughput(
        self, workload: str, name: str, run: int, size: int, sessions: int
    ) -> None:
        n = self.args.messages
        if sessions == 1 and self.args.messages_single:
            n = self.args.messages_single
        hold = workload == "durable"
        sinkPort = mta.freePort(mta.SINK_HOST)
        sink = None if hold else SmtpSink(mta.SINK_HOST, sinkPort)
        m = self.newMTA(name)
        self.current = [m, sink]
        try:
            m.start(sinkPort, hold=hold)
            cpu0 = m.cpuSeconds()
            t0 = time.monotonic()
            source = clients.smtpSource(m.port, n, sessions, size, self.args.timeout)
            try:
                _, err = source.communicate(timeout=self.args.timeout)
            except subprocess.TimeoutExpired:
                source.kill()
                source.communicate(timeout=10)
                raise RuntimeError("smtp-source did not finish")
            tSent = time.monotonic()
            if hold:
                tEnd, counted = tSent, n
            else:
                assert sink is not None
                left = max(1.0, self.args.timeout - (tSent - t0))
                got = sink.waitFor(n, left)
                counted = sink.count
                tEnd = got if got is not None else time.monotonic()
            cpu1 = m.cpuSeconds()
            rss = m.rssBytes()
            extra: Dict[str, Any] = {}
            if sink is not None:
                # no duplicate: nothing more arrives after the n-th
                time.sleep(DUPLICATE_WAIT)
                extra["delivered"] = sink.count
            if isinstance(m, mta.SmxSplit):
                # no loss: every message acknowledged is in the queue
                # (durable), none is left there (relay)
                queued = m.queuedFiles()
                if hold:
                    deadline = time.monotonic() + 10
                    while queued < n and time.monotonic() < deadline:
                        time.sleep(0.2)
                        queued = m.queuedFiles()
                extra["queued"] = queued
            r = {
                "workload": workload,
                "mta": name,
                "run": run,
                "size": size,
                "sessions": sessions,
                "messages": n,
                "counted": counted,
                "ok": counted >= n
                and source.returncode == 0
                and not err.strip()
                and extra.get("delivered", n) == n
                and extra.get("queued", n if hold else 0) == (n if hold else 0),
                "seconds": tEnd - t0,
                "send_seconds": tSent - t0,
                "msgs_per_s": counted / (tEnd - t0),
                "accept_msgs_per_s": n / (tSent - t0),
                "cpu_seconds": cpu1 - cpu0,
                "cpu_per_1000": (cpu1 - cpu0) / n * 1000,
                "rss_bytes": rss,
            }
            r.update(extra)
            if source.returncode != 0 or err.strip():
                r["source_stderr"] = err.decode("utf-8", "replace")[-500:]
            self.record(r)
        finally:
            self.cleanup()

    def latency(self, name: str, run: int) -> None:
        sinkPort = mta.freePort(mta.SINK_HOST)
        sink = TimingSink(mta.SINK_HOST, sinkPort)
        m = self.newMTA(name)
        self.current = [m, sink]
        try:
            m.start(sinkPort)
            r = clients.latency(m.port, sink, self.args.latency_messages, 1024)
            r.update({"workload": "latency", "mta": name, "run": run, "size": 1024})
            r["ok"] = r["lost"] == 0
            self.record(r)
        finally:
            self.cleanup()

    def idle(self, run: int) -> None:
        m = self.newMTA("smx")
        self.current = [m]
        try:
            m.start(mta.freePort(mta.SINK_HOST))
            before = m.rssBytes()
            r = clients.idleSessions(
                m.port,
                self.args.idle,
                3.0,
                lambda: {"rss_after": m.rssBytes(), "alive": m.process.poll() is None},
            )
            r.update(
                {"workload": "idle", "mta": "smx", "run": run, "rss_before": before}
            )
            r["ok"] = r["established"] == self.args.idle and r["alive"]
            self.record(r)
        finally:
            self.cleanup()

    def cleanup(self) -> None:
        for thing in reversed(self.current):
            if thing is not None:
                try:
                    thing.stop()
                except Exception as e:
                    print("bench: stopping %r: %r" % (thing, e))
        self.current = []

    def main(self) -> None:
        a = self.args
        if "relay" in a.workloads:
            for size in a.sizes:
                for s in a.sessions:
                    self.interleave(
                        "relay %dB %d sessions" % (size, s),
                        lambda name, run: self.throughput("relay", name, run, size, s),
                    )
        if "durable" in a.workloads:
            for size in a.durable_sizes:
                for s in a.durable_sessions:
                    self.interleave(
                        "durable %dB %d sessions" % (size, s),
                        lambda name, run: self.throughput(
                            "durable", name, run, size, s
                        ),
                    )
        if "latency" in a.workloads:
            self.interleave("latency", self.latency)
        if "idle" in a.workloads:
            for run in range(a.runs):
                print("idle run %d smx" % (run,), flush=True)
                try:
                    self.idle(run)
                except Exception as e:
                    self.record(
                        {
                            "workload": "idle",
                            "mta": "smx",
                            "run": run,
                            "ok": False,
                            "error": repr(e),
                        }
                    )
        if "profile" in a.workloads:
            print("profile smx (relay 1 KB, 10 sessions)", flush=True)
            m = self.newMTA("smx")
            assert isinstance(m, mta.Smx)
            self.current = []
            try:
                profile.profileRelay(m, a.profile_messages, self.out, self.current)
            except Exception as e:
                print("bench: profile failed: %r" % (e,))
            finally:
                self.cleanup()
            if "smx-split" in a.mtas:
                print("profile smx-split (relay 1 KB, 10 sessions)", flush=True)
                split = self.newMTA("smx-split")
                assert isinstance(split, mta.SmxSplit)
                try:
                    table = profile.profileSplit(
                        split, a.profile_messages, 10, self.out, self.current
                    )
                    with open(os.path.join(self.out, "profile-split.md"), "w") as f:
                        f.write(table)
                except Exception as e:
                    print("bench: split profile failed: %r" % (e,))
                finally:
                    self.cleanup()


def writeSummary(out: str, args: argparse.Namespace, started: str) -> None:
    records = report.load(os.path.join(out, "raw.jsonl"))
    charted = report.chart(records, os.path.join(out, "chart.png"))
    with open(os.path.join(out, "environment.json")) as f:
        env = json.load(f)
    text = [
        "# smx vs Postfix — %s\n" % (started,),
        "Machine: %s, %s CPUs, Python %s, Postfix %s, smx commit %s.\n"
        % (env["platform"], env["cpus"], env["python"], env["postfix"], env["commit"]),
        "Command: `%s`%s\n"
        % (
            env["command"],
            "".join(", then `%s`" % (c,) for c in env.get("added", [])),
        ),
        "Medians with [min–max] over the runs; runs interleaved smx, Postfix, "
        "smx, Postfix, ...; each run on a fresh MTA with an empty queue.  "
        "Throughput is from the first message sent to the last one counted "
        "by `smtp-sink -c` (relay) or acknowledged to `smtp-source` "
        "(durable); CPU is user+sys of the MTA's processes.  Settings: "
        "bench/README.md.\n",
        report.summaryTable(records),
    ]
    if charted:
        text.append("![throughput](chart.png)\n")
    else:
        text.append("(no chart: matplotlib is not installed)\n")
    split = os.path.join(out, "profile-split.md")
    if os.path.exists(split):
        with open(split) as f:
            text.append("### smx split mode: CPU per process (py-spy running)\n")
            text.append(f.read())
    top = os.path.join(out, "profile-top.txt")
    if os.path.exists(top):
        with open(top) as f:
            text.append("### smx profile (relay, 1 KB, 10 sessions)\n\n```\n")
            text.append("".join(f.readlines()[:45]) + "```\n")
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write("\n".join(text))


def useRevision(revision: str) -> str:
    """
    Check C{revision} out into a temporary git worktree that every user
    can read (split mode's components run as their own users), removed at
    exit, and put it first on C{PYTHONPATH}, which every MTA process
    inherits (the MCP passes its environment on).

    @return: the worktree's directory.
    """
    import atexit
    import tempfile

    tree = tempfile.mkdtemp(prefix="smx-bench-tree-", dir="/var/tmp")
    os.chmod(tree, 0o755)
    subprocess.run(
        ["git", "-C", ROOT, "worktree", "add", "--detach", tree, revision],
        check=True,
        stdout=subprocess.DEVNULL,
    )

    def remove() -> None:
        subprocess.run(
            ["git", "-C", ROOT, "worktree", "remove", "--force", tree],
            stdout=subprocess.DEVNULL,
        )
        shutil.rmtree(tree, ignore_errors=True)

    atexit.register(remove)
    os.environ["PYTHONPATH"] = tree
    return tree


def main(argv: List[str]) -> None:
    args = parseArgs(argv)
    ensurePrograms()
    raiseFileLimit(args.idle + 1000)
    started = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.output or os.path.join(ROOT, "bench", "results", started)
    os.makedirs(out, exist_ok=True)
    postfixVersion = subprocess.run(
        ["/usr/sbin/postconf", "-d", "-h", "mail_version"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    if args.revision:
        tree = useRevision(args.revision)
        commit = args.revision
    else:
        tree = ROOT
        commit = "HEAD"
    commit = subprocess.run(
        ["git", "-C", tree, "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    if (
        tree == ROOT
        and subprocess.run(
            ["git", "-C", ROOT, "diff", "--quiet", "HEAD", "--", "smx"]
        ).returncode
    ):
        commit += " (with changes not committed)"
    envPath = os.path.join(out, "environment.json")
    if os.path.exists(envPath):
        # Adding workloads to an earlier run's folder: keep its record.
        with open(envPath) as f:
            env = json.load(f)
        env.setdefault("added", []).append(" ".join(["bench/run.py"] + argv))
        with open(envPath, "w") as f:
            json.dump(env, f, indent=1)
    else:
        with open(envPath, "w") as f:
            json.dump(
                {
                    "platform": platform.platform(),
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "postfix": postfixVersion,
                    "commit": commit,
                    "command": " ".join(["bench/run.py"] + argv),
                    "args": vars(args),
                },
                f,
                indent=1,
            )
    print("bench: results in %s" % (out,), flush=True)
    bench = Bench(args, out)

    def interrupted(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt()

    signal.signal(signal.SIGTERM, interrupted)
    try:
        bench.main()
    except KeyboardInterrupt:
        print("bench: interrupted; stopping what was started")
    finally:
        bench.cleanup()
        bench.raw.close()
    writeSummary(out, args, started)
    print("bench: %s" % (os.path.join(out, "summary.md"),))
    if shutil.which("cat"):
        with open(os.path.join(out, "summary.md")) as f:
            sys.stdout.write(f.read())


if __name__ == "__main__":
    main(sys.argv[1:])

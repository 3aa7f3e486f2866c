"""
From the raw measurements (JSON lines) to summary.md and chart.png.

Each raw record has C{workload}, C{mta}, C{run} and the workload's
parameters and figures.  A I{case} is a workload with its parameters
(e.g. relay, 1 KB, 10 sessions); for each case and MTA the summary gives
the median and the min-max over the runs, and the ratio smx/Postfix of
the medians and of each interleaved pair.
"""

import json
import statistics
from typing import Any, Dict, List, Optional, Tuple

# workload -> (parameters that make the case, headline figure, unit,
# higher is better)
HEADLINES = {
    "relay": (("size", "sessions"), "msgs_per_s", "msg/s", True),
    "durable": (("size", "sessions"), "msgs_per_s", "msg/s", True),
    "latency": (("size",), "p50_ms", "ms", False),
}


#: the smx setups (run.py's MTA names) and how their rows are marked: the
#: embedded one (one process) and split mode (MCP and components)
SMX_VARIANTS = {"smx": "", "smx-split": " (split)", "floor": " (floor)"}


def load(path: str) -> List[Dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _fmt(x: Optional[float]) -> str:
    if x is None:
        return "-"
    if abs(x) >= 100:
        return "%.0f" % x
    if abs(x) >= 10:
        return "%.1f" % x
    return "%.2f" % x


def _spread(values: List[float]) -> str:
    if not values:
        return "-"
    return "%s [%s–%s]" % (
        _fmt(statistics.median(values)),
        _fmt(min(values)),
        _fmt(max(values)),
    )


def _cases(
    records: List[Dict[str, Any]], workload: str
) -> Dict[Tuple[Any, ...], Dict[str, Dict[int, Dict[str, Any]]]]:
    keys = HEADLINES[workload][0]
    cases: Dict[Tuple[Any, ...], Dict[str, Dict[int, Dict[str, Any]]]] = {}
    for r in records:
        if r.get("workload") != workload or not r.get("ok", True):
            continue
        case = tuple(r[k] for k in keys)
        cases.setdefault(case, {}).setdefault(r["mta"], {})[r["run"]] = r
    return cases


def _values(byRun: Dict[int, Dict[str, Any]], field: str) -> List[float]:
    return [r[field] for r in byRun.values() if r.get(field) is not None]


def _ratios(
    smx: Dict[int, Dict[str, Any]], pfx: Dict[int, Dict[str, Any]], field: str
) -> List[float]:
    out = []
    for run, r in smx.items():
        p = pfx.get(run)
        if p and r.get(field) and p.get(field):
            out.append(r[field] / p[field])
    return out


def _caseName(workload: str, case: Tuple[Any, ...]) -> str:
    keys = HEADLINES[workload][0]
    parts = []
    for k, v in zip(keys, case):
        if k == "size":
            parts.append("%g KB" % (v / 1024.0))
        elif k == "sessions":
            parts.append("%d sess" % v)
    return ", ".join(parts)


def summaryTable(records: List[Dict[str, Any]]) -> str:
    lines = []
    for workload in ("relay", "durable", "latency"):
        keys, field, unit, higher = HEADLINES[workload]
        cases = _cases(records, workload)
        if not cases:
            continue
        lines.append(
            "### %s (%s, %s is better)\n"
            % (workload, unit, "higher" if higher else "lower")
        )
        extra = "cpu s/1000 msg" if workload != "latency" else "p99 ms"
        extraField = "cpu_per_1000" if workload != "latency" else "p99_ms"
        lines.append(
            "| case | smx %s | Postfix %s | smx/Postfix (medians) "
            "| smx/Postfix per pair | smx %s | Postfix %s | runs |"
            % (field, field, extra, extra)
        )
        lines.append("|---|---|---|---|---|---|---|---|")
        for case, variant in [
            (case, variant)
            for case in sorted(cases)
            for variant in SMX_VARIANTS
            if variant in cases[case]
        ]:
            smx = cases[case].get(variant, {})
            pfx = cases[case].get("postfix", {})
            sv, pv = _values(smx, field), _values(pfx, field)
            ratio = (
                statistics.median(sv) / statistics.median(pv)
                if sv and pv and statistics.median(pv)
                else None
            )
            pair = _ratios(smx, pfx, field)
            lines.append(
                "| %s | %s | %s | %s | %s | %s | %s | %d/%d |"
                % (
                    _caseName(workload, case) + SMX_VARIANTS[variant],
                    _spread(sv),
                    _spread(pv),
                    _fmt(ratio),
                    _spread(pair),
                    _spread(_values(smx, extraField)),
                    _spread(_values(pfx, extraField)),
                    len(sv),
                    len(pv),
                )
            )
        lines.append("")
    idle = [r for r in records if r.get("workload") == "idle"]
    if idle:
        lines.append("### idle sessions against smx\n")
        lines.append(
            "| run | sessions asked | established | failures | seconds to open "
            "| smx RSS before (MB) | smx RSS with sessions (MB) | KB/session |"
        )
        lines.append("|---|---|---|---|---|---|---|---|")
        for r in idle:
            perSession = (
                (r["rss_after"] - r["rss_before"]) / 1024.0 / r["established"]
                if r.get("established")
                else None
            )
            lines.append(
                "| %d | %d | %d | %d | %s | %s | %s | %s |"
                % (
                    r["run"],
                    r["sessions"],
                    r["established"],
                    r["failures"],
                    _fmt(r["open_seconds"]),
                    _fmt(r["rss_before"] / 2**20),
                    _fmt(r["rss_after"] / 2**20),
                    _fmt(perSession),
                )
            )
        lines.append("")
    failed = [r for r in records if not r.get("ok", True)]
    if failed:
        lines.append("### failed measurements (left out above)\n")
        for r in failed:
            lines.append("- %s" % (json.dumps(r, sort_keys=True),))
        lines.append("")
    return "\n".join(lines)


def chart(records: List[Dict[str, Any]], path: str) -> bool:
    """
    Throughput by concurrency, smx and Postfix side by side (median, with
    min-max error bars), one panel per message size and workload.

    @return: C{False} if matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    panels = []
    for workload in ("relay", "durable"):
        cases = _cases(records, workload)
        for size in sorted({c[0] for c in cases}):
            panels.append((workload, size, cases))
    if not panels:
        return False
    fig, axes = plt.subplots(
        1, len(panels), figsize=(4.5 * len(panels), 4), squeeze=False
    )
    for ax, (workload, size, cases) in zip(axes[0], panels):
        sessions = sorted(c[1] for c in cases if c[0] == size)
        present = {m for c in cases.values() for m in c}
        shown = [
            (mta, colour, label)
            for mta, colour, label in (
                ("smx", "tab:blue", "smx"),
                ("smx-split", "tab:green", "smx split"),
                ("postfix", "tab:orange", "Postfix"),
            )
            if mta in present
        ]
        width = 0.8 / max(1, len(shown))
        for i, (mta, colour, label) in enumerate(shown):
            med, lo, hi = [], [], []
            for s in sessions:
                v = _values(cases[(size, s)].get(mta, {}), "msgs_per_s")
                m = statistics.median(v) if v else 0.0
                med.append(m)
                lo.append(m - min(v) if v else 0.0)
                hi.append(max(v) - m if v else 0.0)
            xs = [
                j + (i - (len(shown) - 1) / 2.0) * width for j in range(len(sessions))
            ]
            ax.bar(
                xs,
                med,
                width,
                yerr=[lo, hi],
                capsize=3,
                color=colour,
                label=label,
            )
        ax.set_xticks(range(len(sessions)))
        ax.set_xticklabels([str(s) for s in sessions])
        ax.set_xlabel("concurrent sessions")
        ax.set_ylabel("messages/s")
        ax.set_title("%s, %g KB" % (workload, size / 1024.0))
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True

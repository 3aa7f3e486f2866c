"""
Where an SMTP session's time goes under load: while C{smtp-source} keeps
C{--sessions} sessions busy against an MTA, one probing client opens
sessions one after the other and times each reply (the greeting, EHLO,
MAIL, RCPT, DATA, the final dot, QUIT).  The MTAs alternate, with a
settle before each run, as in C{bench/run.py}.

    .venv/bin/python bench/steps.py --mtas smx-split,postfix --sessions 9
    .venv/bin/python bench/steps.py --hold      # the next hop refuses

It prints, per MTA and run, the throughput of C{smtp-source} and the
median and 90th percentile of each step in ms.  A step whose reply waits
for the queue manager (the greeting and the final dot in smx's split
mode) shows how long the queue manager takes to answer under that load.
Run it as root (split mode and Postfix need it).
"""

import argparse
import os
import sys
import threading
import time
from typing import Dict, List

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import clients, mta  # noqa: E402
from bench.sink import SmtpSink  # noqa: E402

STEPS = ("greeting", "EHLO", "MAIL", "RCPT", "DATA", "dot", "QUIT")


def probe(port: int, stop: threading.Event, times: Dict[str, List[float]]) -> None:
    """
    Open sessions against 127.0.0.1:C{port} one after the other until
    C{stop} is set; add the seconds of each step to C{times}.
    """
    body = (b"Subject: probe\r\n\r\n" + b"x" * 70 + b"\r\n") * 14 + b".\r\n"
    commands = (
        ("EHLO", b"EHLO probe.bench.test\r\n"),
        ("MAIL", b"MAIL FROM:<%s>\r\n" % clients.FROM.encode()),
        ("RCPT", b"RCPT TO:<%s>\r\n" % clients.TO.encode()),
        ("DATA", b"DATA\r\n"),
        ("dot", body),
        ("QUIT", b"QUIT\r\n"),
    )
    while not stop.is_set():
        t0 = time.monotonic()
        c = clients.Conversation(port)
        try:
            c.reply()
            times["greeting"].append(time.monotonic() - t0)
            for step, data in commands:
                t0 = time.monotonic()
                c.sock.sendall(data)
                c.reply()
                times[step].append(time.monotonic() - t0)
        finally:
            c.sock.close()


def measure(m: mta.MTA, args: argparse.Namespace) -> str:
    sinkPort = mta.freePort(mta.SINK_HOST)
    sink = None if args.hold else SmtpSink(mta.SINK_HOST, sinkPort)
    times: Dict[str, List[float]] = {step: [] for step in STEPS}
    stop = threading.Event()
    try:
        m.start(sinkPort, hold=args.hold)
        prober = threading.Thread(target=probe, args=(m.port, stop, times))
        prober.start()
        try:
            t0 = time.monotonic()
            source = clients.smtpSource(
                m.port, args.messages, args.sessions, 1024, args.timeout
            )
            source.communicate(timeout=args.timeout)
            seconds = time.monotonic() - t0
        finally:
            stop.set()
            prober.join()
    finally:
        m.stop()
        if sink is not None:
            sink.stop()
    cells = [
        "%s %.2f/%.2f"
        % (
            step,
            1000 * (clients.percentile(times[step], 50) or 0),
            1000 * (clients.percentile(times[step], 90) or 0),
        )
        for step in STEPS
        if times[step]
    ]
    return "%d msg/s, %d probes; ms median/p90: %s" % (
        args.messages / seconds,
        len(times["QUIT"]),
        ", ".join(cells),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mtas", default="smx-split,postfix")
    parser.add_argument("--sessions", type=int, default=9)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--hold", action="store_true", help="the next hop refuses")
    parser.add_argument("--timeout", type=float, default=300)
    mta.addSettleOption(parser, default=20.0)
    args = parser.parse_args()
    makers = {
        "smx": lambda: mta.Smx(),
        "smx-split": lambda: mta.SmxSplit(),
        "postfix": lambda: mta.Postfix(),
    }
    unknown = [n for n in args.mtas.split(",") if n not in makers]
    if unknown:
        parser.error(
            "--mtas: unknown %s (choose from %s)"
            % (", ".join(unknown), ", ".join(sorted(makers)))
        )
    try:
        for run in range(args.runs):
            for name in args.mtas.split(","):
                mta.settle(args.settle)
                print("%s run %d: %s" % (name, run, measure(makers[name](), args)))
                sys.stdout.flush()
    finally:
        mta.removeDirectories()


if __name__ == "__main__":
    main()

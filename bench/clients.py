"""
The sending side: C{smtp-source} for the throughput workloads, a
sequential client for the latency workload, and an asyncio client that
holds many idle SMTP sessions open.
"""

import asyncio
import socket
import statistics
import subprocess
import time
from typing import Any, Dict, List, Optional

FROM = "sender@bench.test"
TO = "rcpt@sink.test"

# Sessions being opened at once by the idle client: below the listen(2)
# backlog of 50 that Twisted uses by default, so no SYN is dropped.
OPENING = 40


def smtpSource(
    port: int, messages: int, sessions: int, size: int, timeout: float
) -> subprocess.Popen:  # type: ignore[type-arg]
    """
    Start C{smtp-source -s SESSIONS -m MESSAGES -l SIZE} against
    127.0.0.1:C{port} (one connection per message, its default).
    """
    return subprocess.Popen(
        [
            "/usr/sbin/smtp-source",
            "-s",
            str(sessions),
            "-m",
            str(messages),
            "-l",
            str(size),
            "-f",
            FROM,
            "-t",
            TO,
            "-M",
            "bench.test",
            "127.0.0.1:%d" % (port,),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


class Conversation:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        # No Nagle: the final dot must leave at once, not 40 ms later after
        # the server's delayed ACK of the body.
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def reply(self) -> bytes:
        while True:
            lines = self.buf.split(b"\r\n")
            for i, line in enumerate(lines[:-1]):
                if len(line) >= 4 and line[3:4] == b" ":
                    self.buf = b"\r\n".join(lines[i + 1 :])
                    return line
            data = self.sock.recv(4096)
            if not data:
                raise ConnectionError("connection closed")
            self.buf += data

    def command(self, line: bytes, expect: bytes) -> None:
        self.sock.sendall(line + b"\r\n")
        r = self.reply()
        if not r.startswith(expect):
            raise RuntimeError("%r: %r" % (line, r))


def latency(
    port: int, sink: Any, messages: int, size: int, pause: float = 0.02
) -> Dict[str, Any]:
    """
    Send C{messages} messages one after the other, one session each, and
    wait for each to arrive at C{sink} (a L{bench.sink.TimingSink}) before
    the next.  The latency of a message is from the moment the client
    sends the final dot to the moment the sink reads it.

    @return: p50/p99/max of that latency and of the 250 reply, in ms.
    """
    filler = (b"x" * 76 + b"\r\n") * max(1, size // 78)
    delivered: List[float] = []
    acked: List[float] = []
    lost = 0
    for seq in range(messages):
        c = Conversation(port)
        try:
            c.reply()
            c.command(b"EHLO latency.bench.test", b"250")
            c.command(b"MAIL FROM:<%s>" % FROM.encode(), b"250")
            c.command(b"RCPT TO:<%s>" % TO.encode(), b"250")
            c.command(b"DATA", b"354")
            c.sock.sendall(
                b"From: <%s>\r\nTo: <%s>\r\nSubject: latency %d\r\n"
                b"X-Bench-Seq: %d\r\n\r\n" % (FROM.encode(), TO.encode(), seq, seq)
                + filler
            )
            t0 = time.monotonic()
            c.sock.sendall(b".\r\n")
            r = c.reply()
            t1 = time.monotonic()
            if not r.startswith(b"250"):
                raise RuntimeError("final dot: %r" % (r,))
            c.sock.sendall(b"QUIT\r\n")
        finally:
            c.sock.close()
        arrived = sink.waitFor(seq, 10.0)
        if arrived is None:
            lost += 1
        else:
            delivered.append((arrived - t0) * 1000)
        acked.append((t1 - t0) * 1000)
        time.sleep(pause)
    return {
        "messages": messages,
        "lost": lost,
        "p50_ms": percentile(delivered, 50),
        "p99_ms": percentile(delivered, 99),
        "max_ms": max(delivered) if delivered else None,
        "ack_p50_ms": percentile(acked, 50),
        "ack_p99_ms": percentile(acked, 99),
    }


def percentile(values: List[float], p: float) -> Optional[float]:
    """The C{p}th percentile of C{values} (C{None} for none)."""
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1]


async def _idle(port: int, n: int, hold: float, sample: Any) -> Dict[str, Any]:
    opened: List[asyncio.StreamWriter] = []
    failures = 0
    errors: Dict[str, int] = {}
    sem = asyncio.Semaphore(OPENING)

    async def one() -> None:
        nonlocal failures
        async with sem:
            try:
                r, w = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", port), 30
                )
                line = await asyncio.wait_for(r.readline(), 30)
                if not line.startswith(b"220"):
                    raise ConnectionError(line)
                w.write(b"EHLO idle.bench.test\r\n")
                while True:
                    line = await asyncio.wait_for(r.readline(), 30)
                    if not line or line[3:4] != b"-":
                        break
                if not line.startswith(b"250"):
                    raise ConnectionError(line)
                opened.append(w)
            except (OSError, asyncio.TimeoutError, ConnectionError) as e:
                failures += 1
                errors[type(e).__name__ + " " + str(e)[:60]] = (
                    errors.get(type(e).__name__ + " " + str(e)[:60], 0) + 1
                )

    t0 = time.monotonic()
    await asyncio.gather(*(one() for _ in range(n)))
    openTime = time.monotonic() - t0
    await asyncio.sleep(hold)
    # Are they all still open?  A closed session has EOF waiting.
    result = {
        "sessions": n,
        "established": len(opened),
        "failures": failures,
        "errors": errors,
        "open_seconds": openTime,
    }
    result.update(sample())
    for w in opened:
        w.close()
    return result


def idleSessions(port: int, n: int, hold: float, sample: Any) -> Dict[str, Any]:
    """
    Open C{n} SMTP sessions (greeting read and EHLO answered, at most OPENING
    being opened at once), keep them idle for C{hold} seconds, call
    C{sample()} (which returns a dict, e.g. the MTA's RSS) and close them.
    """
    return asyncio.run(_idle(port, n, hold, sample))

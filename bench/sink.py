"""
The receiving end of the relay: Postfix's C{smtp-sink -c} on 127.0.0.2,
and, for the latency workload, a small Python sink that notes the time at
which each message's final dot arrives.
"""

import os
import re
import socket
import socketserver
import subprocess
import threading
import time
from typing import Dict, Optional

_MESG = re.compile(rb"mesg=(\d+)")
_SEQ = re.compile(rb"^X-Bench-Seq: (\d+)\r?$", re.M)


class SmtpSink:
    """
    C{smtp-sink -u nobody -c 127.0.0.2:PORT 256}; its running counters are
    read from its standard output by a thread.

    @ivar count: the last C{mesg=} counter printed.
    """

    def __init__(self, host: str, port: int) -> None:
        self.count = 0
        self.changed = threading.Condition()
        self.process = subprocess.Popen(
            [
                "/usr/sbin/smtp-sink",
                "-u",
                "nobody",
                "-c",
                "%s:%d" % (host, port),
                "256",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection((host, port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("smtp-sink did not start")

    def _read(self) -> None:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        tail = b""
        while True:
            data = os.read(fd, 65536)
            if not data:
                return
            found = _MESG.findall(tail + data)
            tail = data[-32:]
            if found:
                with self.changed:
                    self.count = int(found[-1])
                    self.changed.notify_all()

    def waitFor(self, n: int, timeout: float) -> Optional[float]:
        """
        Wait until the sink has counted C{n} messages.

        @return: the C{time.monotonic()} at which it saw the count, or
            C{None} after C{timeout} seconds.
        """
        deadline = time.monotonic() + timeout
        with self.changed:
            while self.count < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.changed.wait(min(left, 0.5))
        return time.monotonic()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.reader.join(timeout=5)


class _Handler(socketserver.StreamRequestHandler):
    disable_nagle_algorithm = True

    def handle(self) -> None:
        sink: "TimingSink" = self.server.sink  # type: ignore[attr-defined]
        w = self.wfile
        w.write(b"220 timing-sink ESMTP\r\n")
        while True:
            line = self.rfile.readline(4096)
            if not line:
                return
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                # like smtp-sink and every common MTA: PIPELINING
                w.write(b"250-timing-sink\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
            elif verb == b"DATA":
                w.write(b"354 go on\r\n")
                body = []
                while True:
                    line = self.rfile.readline(65536)
                    if not line or line == b".\r\n":
                        break
                    body.append(line)
                now = time.monotonic()
                m = _SEQ.search(b"".join(body))
                if m:
                    sink.arrived(int(m.group(1)), now)
                w.write(b"250 2.0.0 Ok\r\n")
            elif verb == b"QUIT":
                w.write(b"221 bye\r\n")
                return
            else:
                w.write(b"250 2.0.0 Ok\r\n")


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class TimingSink:
    """
    A thread-per-connection SMTP sink that records, for each message with
    an C{X-Bench-Seq: N} header, the monotonic time its final dot arrived.
    """

    def __init__(self, host: str, port: int) -> None:
        self.arrivals: Dict[int, float] = {}
        self.changed = threading.Condition()
        self.server = _Server((host, port), _Handler)
        self.server.sink = self  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def arrived(self, seq: int, when: float) -> None:
        with self.changed:
            self.arrivals[seq] = when
            self.changed.notify_all()

    def waitFor(self, seq: int, timeout: float) -> Optional[float]:
        deadline = time.monotonic() + timeout
        with self.changed:
            while seq not in self.arrivals:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.changed.wait(left)
            return self.arrivals[seq]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

"""
The floor: the least a store-and-forward MTA in Python on Twisted, laid
out as split-mode smx is, must do per message; as an MTA of the bench
(C{bench/run.py --mtas floor,postfix}).

It is not smx and delivers nothing anyone should rely on.  It measures
what the speed targets of issue 16 ask of the language and the layout
rather than of smx's code: every step that split mode cannot leave out,
done with the fewest Python calls, and nothing else:

  - two SMTP server processes serve one listening socket (passed
    descriptor, as the MCP passes it);
  - per session the server asks the queue manager (a line over a Unix
    socket, one answer) before its greeting, as SMTPS asks QMGR in
    C{sessionOpen}; it answers every command with a fixed reply and no
    check at all (no address parsing, no policy, no limits, no log);
  - after the final dot it writes the content to a new file (open,
    write, close), hands its name to the queue manager and says 250 only
    when the queue manager answers that the file and the envelope record
    are on stable storage: the queue manager appends the records of a
    reactor turn to one file and makes them durable with one
    C{syncfs(2)} per turn (the group commit of smx's IBDB);
  - the queue manager hands each message to one delivery process over a
    Unix socket, which sends it to the next hop (a cache of open SMTP
    connections; MAIL, RCPT and DATA pipelined; no check of the replies
    beyond their count), reports back, and the queue manager appends a
    done record and removes the file;
  - with C{hold} (the durable workload) the queue manager keeps every
    message and delivers none.

Left out, though smx must do them: AMP and typed values between the
processes, address parsing and resolution, access maps, limits, policy
hooks, headers (Received:), queue identifiers, logging, timeouts,
deferral, DSN, TLS, and users per process.

SYNOPSIS
    python -m bench.floor serve DIR PORT SINKPORT [hold]
"""

import ctypes
import ctypes.util
import itertools
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from twisted.internet import protocol

from bench import mta

SMTPS_PROCESSES = 2
CONNECTIONS = 20

#: C{FLOOR_AMP=1}: the processes talk Twisted's stock AMP (one command per
#: step, L{Open}, L{Commit}, L{Deliver}) instead of lines
AMP = os.environ.get("FLOOR_AMP") == "1"


class _Lines(protocol.Protocol):
    """A protocol of lines ending in C{delimiter}: L{linesReceived}."""

    delimiter = b"\n"
    buffer = b""

    def dataReceived(self, data: bytes) -> None:
        lines = (self.buffer + data).split(self.delimiter)
        self.buffer = lines.pop()
        self.linesReceived(lines)

    def linesReceived(self, lines: List[bytes]) -> None:
        raise NotImplementedError()


def _commands() -> Any:
    from twisted.protocols import amp

    class Open(amp.Command):
        arguments = [(b"sid", amp.Unicode())]
        response: List[Any] = []

    class Commit(amp.Command):
        arguments = [
            (b"sid", amp.Unicode()),
            (b"path", amp.Unicode()),
            (b"sender", amp.Unicode()),
            (b"recipient", amp.Unicode()),
        ]
        response: List[Any] = []

    class Deliver(amp.Command):
        arguments = Commit.arguments[1:]  # path, sender, recipient
        response: List[Any] = []

    return Open, Commit, Deliver


def _syncfs() -> Any:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    return libc.syncfs


def _queueManager(directory: str, hold: bool) -> None:
    from twisted.internet import defer, reactor
    from twisted.protocols import amp

    Open, Commit, Deliver = _commands()

    ibdb = os.open(
        os.path.join(directory, "ibdb"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600
    )
    queueFd = os.open(os.path.join(directory, "q"), os.O_RDONLY)
    syncfs = _syncfs()
    records: List[bytes] = []
    #: what answers each commit of this turn, after the sync
    answers: List[Callable[[], Any]] = []
    #: (path, sender, recipient) of the messages committed this turn
    deliveries: List[Tuple[bytes, bytes, bytes]] = []
    agent: List[Any] = []
    turn: List[Any] = []

    def endOfTurn() -> None:
        del turn[:]
        os.write(ibdb, b"".join(records))
        if answers:
            if syncfs(queueFd) != 0:
                raise OSError(ctypes.get_errno(), "syncfs")
        del records[:]
        for answer in answers:
            answer()
        del answers[:]
        if deliveries and agent:
            if AMP:
                for path, sender, recipient in deliveries:
                    agent[0].callRemote(
                        Deliver,
                        path=path.decode(),
                        sender=sender.decode(),
                        recipient=recipient.decode(),
                    ).addCallback(lambda _, p=path: delivered(p))
            else:
                agent[0].transport.write(
                    b"".join(b"D %s %s %s\n" % message for message in deliveries)
                )
            del deliveries[:]

    def committed(line: bytes, path: bytes, sender: bytes, recipient: bytes) -> None:
        records.append(line)
        if not hold:
            deliveries.append((path, sender, recipient))
        later()

    def delivered(path: bytes) -> None:
        records.append(b"D " + path + b"\n")
        os.unlink(path)
        later()

    def later() -> None:
        if not turn:
            turn.append(reactor.callLater(0, endOfTurn))

    class Server(_Lines):
        def linesReceived(self, lines: List[bytes]) -> None:
            for line in lines:
                kind = line[:1]
                if kind == b"O":
                    self.transport.write(line + b"\n")
                elif kind == b"T":
                    _, sid, path, sender, recipient = line.split(b" ")
                    answer = b"T " + sid + b"\n"
                    answers.append(lambda a=answer: self.transport.write(a))
                    committed(line + b"\n", path, sender, recipient)
                elif kind == b"R":
                    delivered(line[2:])

    class Agent(Server):
        def connectionMade(self) -> None:
            agent.append(self)
            later()  # what was committed before the agent came

    class QueueAMP(amp.AMP):
        @Open.responder
        def open(self, sid: str) -> Dict[str, Any]:
            return {}

        @Commit.responder
        def commit(self, sid: str, path: str, sender: str, recipient: str) -> Any:
            line = "T %s %s %s %s\n" % (sid, path, sender, recipient)
            d: Any = defer.Deferred()
            answers.append(lambda: d.callback({}))
            committed(line.encode(), path.encode(), sender.encode(), recipient.encode())
            return d

    class AgentAMP(QueueAMP):
        def connectionMade(self) -> None:
            super().connectionMade()
            agent.append(self)
            later()

    protocols = (QueueAMP, AgentAMP) if AMP else (Server, Agent)
    for name, factoryClass in zip(("qmgr", "smtpc"), protocols):
        factory = protocol.Factory()
        factory.protocol = factoryClass
        reactor.listenUNIX(os.path.join(directory, name), factory)
    reactor.run()


def _smtpServer(directory: str, fd: int) -> None:
    from twisted.internet import reactor
    from twisted.protocols import amp

    Open, Commit, _ = _commands()

    from smx import net

    queue = os.path.join(directory, "q")
    sessions: Dict[bytes, Any] = {}
    counter = itertools.count()
    prefix = b"%d-" % (os.getpid(),)
    replies = {
        b"EHLO": b"250-floor\r\n250-PIPELINING\r\n250 8BITMIME\r\n",
        b"HELO": b"250 floor\r\n",
        b"MAIL": b"250 2.1.0 Ok\r\n",
        b"RCPT": b"250 2.1.5 Ok\r\n",
        b"DATA": b"354 End data with <CR><LF>.<CR><LF>\r\n",
        b"RSET": b"250 2.0.0 Ok\r\n",
        b"NOOP": b"250 2.0.0 Ok\r\n",
        b"QUIT": b"221 2.0.0 Bye\r\n",
    }

    class Queue(_Lines):
        def linesReceived(self, lines: List[bytes]) -> None:
            for line in lines:
                session = sessions.get(line[2:])
                if session is None:
                    continue
                if line[:1] == b"O":
                    session.transport.write(b"220 floor ESMTP\r\n")
                else:
                    session.transport.write(b"250 2.0.0 Ok: queued\r\n")

    class Session(protocol.Protocol):
        buffer = b""
        inData = False
        sender = b""
        recipient = b""

        def connectionMade(self) -> None:
            self.sid = prefix + b"%d" % (next(counter),)
            sessions[self.sid] = self
            if AMP:
                qmgr.callRemote(Open, sid=self.sid.decode()).addCallback(
                    lambda _: self.transport.write(b"220 floor ESMTP\r\n")
                )
                return
            qmgr.transport.write(b"O " + self.sid + b"\n")

        def dataReceived(self, data: bytes) -> None:
            data = self.buffer + data
            while data:
                if self.inData:
                    end = data.find(b"\r\n.\r\n")
                    if end < 0:
                        self.buffer = data
                        return
                    self.stored(data[: end + 2])
                    data = data[end + 5 :]
                    self.inData = False
                    continue
                end = data.find(b"\r\n")
                if end < 0:
                    break
                line, data = data[:end], data[end + 2 :]
                verb = line[:4].upper()
                if verb == b"MAIL":
                    self.sender = line[10:].strip()
                elif verb == b"RCPT":
                    self.recipient = line[8:].strip()
                elif verb == b"DATA":
                    self.inData = True
                self.transport.write(replies.get(verb, b"502 5.5.2 Error\r\n"))
                if verb == b"QUIT":
                    self.transport.loseConnection()
            self.buffer = data

        def stored(self, content: bytes) -> None:
            name = self.sid + b"-%d" % (next(counter),)
            path = os.path.join(queue.encode(), name)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, content)
            finally:
                os.close(fd)
            if AMP:
                qmgr.callRemote(
                    Commit,
                    sid=self.sid.decode(),
                    path=path.decode(),
                    sender=self.sender.decode(),
                    recipient=self.recipient.decode(),
                ).addCallback(
                    lambda _: self.transport.write(b"250 2.0.0 Ok: queued\r\n")
                )
                return
            qmgr.transport.write(
                b"T %s %s %s %s\n" % (self.sid, path, self.sender, self.recipient)
            )

        def connectionLost(self, reason: Any = None) -> None:
            sessions.pop(self.sid, None)

    def serveSessions(_: Any) -> None:
        factory = protocol.Factory()
        factory.protocol = Session
        port = reactor.adoptStreamPort(fd, socket.AF_INET, factory)
        port.transport = net.Server  # send at once, as SMTPS does
        os.close(fd)

    qmgr = amp.AMP() if AMP else Queue()
    connected = protocol.ClientCreator(reactor, lambda: qmgr).connectUNIX(
        os.path.join(directory, "qmgr")
    )
    connected.addCallback(serveSessions)
    reactor.run()


def _deliveryAgent(directory: str, sinkPort: int) -> None:
    from twisted.internet import defer, reactor
    from twisted.protocols import amp

    _, _, Deliver = _commands()

    from smx import net

    idle: List[Any] = []
    waiting: List[Tuple[bytes, bytes, bytes, Any]] = []
    opened = [0]

    class Next(_Lines):
        delimiter = b"\r\n"
        path = b""
        content: Optional[bytes] = None
        expected = 1  # the greeting
        greeted = False

        def send(self, path: bytes, sender: bytes, recipient: bytes, done: Any) -> None:
            self.done = done
            self.path = path
            with open(path, "rb") as f:
                self.content = f.read()
            self.expected = 3
            self.transport.write(
                b"MAIL FROM:%s\r\nRCPT TO:%s\r\nDATA\r\n" % (sender, recipient)
            )

        def linesReceived(self, lines: List[bytes]) -> None:
            for line in lines:
                if line[3:4] == b"-":
                    continue
                self.expected -= 1
                if self.expected:
                    continue
                if not self.greeted:
                    self.greeted = True
                    self.expected = 1
                    self.transport.write(b"EHLO floor.test\r\n")
                    continue
                if self.path and self.content is not None:
                    self.expected = 1
                    self.transport.write(self.content + b".\r\n")
                    self.content = None
                    continue
                if self.path:
                    self.done()
                    self.path = b""
                self.ready()

        def ready(self) -> None:
            if waiting:
                self.send(*waiting.pop(0))
            else:
                idle.append(self)

        def connectionLost(self, reason: Any = None) -> None:
            if self in idle:
                idle.remove(self)
            opened[0] -= 1

    class Queue(_Lines):
        def linesReceived(self, lines: List[bytes]) -> None:
            for line in lines:
                _, path, sender, recipient = line.split(b" ")
                take(path, sender, recipient, lambda p=path: reported(p))

    def reported(path: bytes) -> None:
        queue.transport.write(b"R " + path + b"\n")

    def take(path: bytes, sender: bytes, recipient: bytes, done: Any) -> None:
        if idle:
            idle.pop().send(path, sender, recipient, done)
            return
        waiting.append((path, sender, recipient, done))
        if opened[0] < CONNECTIONS:
            opened[0] += 1
            net.connectTCP(
                reactor,
                mta.SINK_HOST,
                sinkPort,
                protocol.ClientFactory.forProtocol(Next),
            )

    class AgentAMP(amp.AMP):
        @Deliver.responder
        def deliver(self, path: str, sender: str, recipient: str) -> Any:
            d: Any = defer.Deferred()
            take(
                path.encode(),
                sender.encode(),
                recipient.encode(),
                lambda: d.callback({}),
            )
            return d

    queue = AgentAMP() if AMP else Queue()
    protocol.ClientCreator(reactor, lambda: queue).connectUNIX(
        os.path.join(directory, "smtpc")
    )
    reactor.run()


def serve(directory: str, port: int, sinkPort: int, hold: bool) -> None:
    """
    The parent of the floor's processes (the root of its process tree):
    bind the port, start the queue manager, the delivery process and the
    SMTP servers, and stop them all on SIGTERM.
    """
    os.makedirs(os.path.join(directory, "q"), exist_ok=True)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((mta.MTA_HOST, port))
    listener.listen(1024)
    listener.setblocking(False)
    me = [sys.executable, "-m", "bench.floor"]
    children = [subprocess.Popen(me + ["qmgr", directory, "hold" if hold else "relay"])]
    deadline = time.monotonic() + 30
    while not os.path.exists(os.path.join(directory, "smtpc")):
        if time.monotonic() > deadline or children[0].poll() is not None:
            mta.terminate(children[0])
            raise RuntimeError("the floor's queue manager did not start")
        time.sleep(0.05)
    children.append(subprocess.Popen(me + ["smtpc", directory, str(sinkPort)]))
    fd = listener.fileno()
    for _ in range(SMTPS_PROCESSES):
        children.append(
            subprocess.Popen(me + ["smtps", directory, str(fd)], pass_fds=(fd,))
        )
    listener.close()

    def stop(*_: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            child.wait()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    while True:
        if any(child.poll() is not None for child in children):
            stop()
        time.sleep(0.5)


class Floor(mta.MTA):
    """The floor as an MTA of the bench (C{--mtas floor})."""

    name = "floor"

    def __init__(self) -> None:
        self.process: Optional["subprocess.Popen[bytes]"] = None
        self.directory = ""

    def start(self, sinkPort: int, hold: bool = False) -> None:
        self.directory = tempfile.mkdtemp(prefix="bench-floor-")
        self.port = mta.freePort(mta.MTA_HOST)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.floor", "serve", self.directory]
            + [str(self.port), str(sinkPort)]
            + (["hold"] if hold else []),
            cwd=mta.ROOT,
        )
        self.pid = self.process.pid
        try:
            mta.waitForGreeting(mta.MTA_HOST, self.port)
        except RuntimeError:
            self.stop()
            raise

    def stop(self) -> None:
        if self.process is not None:
            mta.terminate(self.process)
            self.process = None
        if self.directory:
            mta.retire(self.directory)
            self.directory = ""


def main(argv: List[str]) -> None:
    role = argv[0]
    if role == "serve":
        serve(argv[1], int(argv[2]), int(argv[3]), argv[4:] == ["hold"])
    elif role == "qmgr":
        _queueManager(argv[1], argv[2] == "hold")
    elif role == "smtps":
        _smtpServer(argv[1], int(argv[2]))
    elif role == "smtpc":
        _deliveryAgent(argv[1], int(argv[2]))
    else:
        raise SystemExit("usage: python -m bench.floor serve DIR PORT SINKPORT [hold]")


if __name__ == "__main__":
    main(sys.argv[1:])

# -*- test-case-name: smx.test.test_metricsgather,smx.test.test_integration_metricsgather -*-
"""
NAME
    smx.metricsgather - one Prometheus endpoint for every process of
    split mode

SYNOPSIS
    metrics { address = "127.0.0.1:9125"; }     # in a split configuration

    curl http://127.0.0.1:9125/metrics          # served by the MCP

DESCRIPTION
    In split mode (L{smx.mcp}) each component process counts its own log
    records (L{smx.metrics.MetricsRecorder}) and serves its metrics in
    the text exposition format on a Unix socket of its own,
    C{metrics/SERVICE/NUMBER.sock} in the main queue directory: a client
    connects and reads the text until the process closes the connection
    (L{ProcessMetricsService}).  The MCP tells each process of an smx
    component (C{qmgr}, C{smar}, C{smtpc}, C{smtps}) the name of that
    socket in the environment variable C{SMX_METRICS_SOCKET} when the
    configuration has C{metrics { address }}; a component started
    without it serves no socket.

    The MCP serves the HTTP endpoint (L{GatherService}): at each scrape
    it reads every running process's text at once (at most
    L{SCRAPE_TIMEOUT} each), parses it (L{parseExposition}) and merges
    the families (L{mergeFamilies}): one C{HELP} and C{TYPE} per family,
    every sample with the labels C{component} (the section keyword) and
    C{process} (the MCP's process number, unique per keyword), so that
    the counters of the two SMTPS processes stay apart (C{sum} or
    C{rate} them in PromQL; a restarted process's counter starts at 0
    again, which C{rate} handles per series).  It adds
    C{smx_scrape_up{component,process}} (0 for a process that is not
    running, did not answer in time or answered nonsense: it is left
    out, the scrape still answers) and C{smx_process_restarts_total}.

    Why the MCP and not QMGR: the MCP is the one process that runs all
    the time (QMGR is restarted, and with it its dependencies: an
    endpoint in QMGR would be gone when something is wrong), it knows
    which processes should run, so a process that is down is reported
    even when it never made its socket, and a restarted process is found
    again at once (its slot keeps its socket name); being root it reads
    every component's socket without adding the component users to each
    other's groups.

CONFIGURATION PARAMETERS
    metrics { address }   where the MCP listens (none: no metrics)

SECURITY
    The endpoint has no authentication (listen on a loopback address).
    The MCP runs as root: it reads at most L{MAX_TEXT} bytes from a
    process, parses the text strictly (a malformed text leaves that
    process out) and writes back only names, label values and numbers
    it parsed.  Each socket directory C{metrics/SERVICE} belongs to the
    service's user and group, mode 0750; the sockets are mode 0660; the
    MCP reads only a socket, not a symbolic link the service's user put
    there.

DIAGNOSTICS
    An address the MCP cannot bind ends it at start with one line (as
    its other sockets, L{smx.mcp.sockets.ListenError}).  A process that
    stops answering is logged once by the MCP (C{func=scrape}), and
    again when it answers again.
"""

from __future__ import annotations

import os
import re
import stat
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from twisted.application import service
from twisted.internet import defer, endpoints, error, protocol
from twisted.python.failure import Failure

from smx.log import Logger
from smx.metrics import (
    MetricsRecorder,
    RecorderHooks,
    componentRecorder,
    escapeLabelValue,
    metricsAddress,
    metricsSite,
)

#: the environment variable that names a component process's metrics socket
METRICS_SOCKET = "SMX_METRICS_SOCKET"
#: the directory of the metrics sockets, in the main queue directory
METRICS_DIRECTORY = "metrics"
#: seconds the MCP waits for one process's text
SCRAPE_TIMEOUT = 1.0
#: the most bytes the MCP reads from one process
MAX_TEXT = 4 * 1024 * 1024
#: the section keywords whose processes serve metrics
COMPONENTS = ("smar", "qmgr", "smtpc", "smtps")

#: the metrics (L{smx.metrics.METRICS}) each component's process shows
SPLIT_FAMILIES = {
    "smtps": frozenset(
        [
            "smx_messages_received_total",
            "smx_sessions_total",
            "smx_sessions_refused_total",
            "smx_tls_sessions_total",
            "smx_pmilter_calls_total",
            "smx_pmilter_failures_total",
            "smx_milter_calls_total",
            "smx_milter_failures_total",
            "smx_policy_requests_total",
            "smx_policy_failures_total",
        ]
    ),
    "qmgr": frozenset(
        [
            "smx_messages_queued_total",
            "smx_recipients_delivered_total",
            "smx_recipients_deferred_total",
            "smx_recipients_bounced_total",
            "smx_dsns_total",
            "smx_delivery_latency_seconds",
            "smx_sessions_open",
            "smx_qmgr_sessions_refused_total",
            "smx_queue_transactions",
            "smx_queue_recipients",
            "smx_queue_iqdb",
            "smx_queue_iqdb_max",
            "smx_queue_aq",
            "smx_queue_aq_max",
            "smx_queue_defedb",
            "smx_queue_cdb_bytes",
            "smx_queue_oldest_deferred_seconds",
            "smx_queue_disk_short",
            "smx_defedb_open",
            "smx_destination_connections",
            "smx_destination_connection_limit",
            "smx_ibdb_commits_total",
            "smx_ibdb_records_total",
            "smx_ibdb_files",
            "smx_ibdb_fsync_seconds",
            "smx_ibdb_commit_records",
            "smx_milter_calls_total",
            "smx_milter_failures_total",
            "smx_uptime_seconds",
        ]
    ),
    "smar": frozenset(
        ["smx_map_lookups_total", "smx_dns_queries_total", "smx_dns_errors_total"]
    ),
    "smtpc": frozenset(),
}


# -- the text format -----------------------------------------------------------


class ExpositionError(ValueError):
    """
    A text that is not in the exposition format; the message names the
    line.
    """


#: one label pair, the label name and its value as written (escaped)
Label = Tuple[str, str]


@dataclass(frozen=True)
class Sample:
    """
    One sample line.

    @ivar name: the sample's name (C{x_bucket} of histogram C{x}).
    @ivar labels: its labels, values escaped as written.
    @ivar value: the value as written.
    @ivar timestamp: the timestamp as written, or C{None}.
    """

    name: str
    labels: Tuple[Label, ...]
    value: str
    timestamp: Optional[str] = None

    def line(self) -> str:
        """The sample's line (without the newline)."""
        text = self.name
        if self.labels:
            text += "{%s}" % ",".join('%s="%s"' % pair for pair in self.labels)
        text += " " + self.value
        if self.timestamp is not None:
            text += " " + self.timestamp
        return text


@dataclass
class Family:
    """
    A metric family: its name, type, help text (escaped as written) and
    samples.
    """

    name: str
    kind: str = "untyped"
    help: Optional[str] = None
    samples: List[Sample] = field(default_factory=list)
    typed: bool = False

    def lines(self) -> List[str]:
        """The family's lines."""
        out = []
        if self.help is not None:
            out.append("# HELP %s %s" % (self.name, self.help))
        out.append("# TYPE %s %s" % (self.name, self.kind))
        out.extend(sample.line() for sample in self.samples)
        return out


_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\\n]|\\[\\"n])*)"\s*')
_VALUE = re.compile(
    r"[+-]?(?:Inf|NaN|[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?"
    r"|\.[0-9]+(?:[eE][+-]?[0-9]+)?)\Z"
)
_TIMESTAMP = re.compile(r"-?[0-9]+\Z")
_KINDS = ("counter", "gauge", "histogram", "summary", "untyped")
_SUFFIXES = {
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("_sum", "_count"),
}


def _parseLabels(text: str, lineno: int) -> Tuple[Tuple[Label, ...], str]:
    """
    The labels at the start of C{text} (after C{"{"}) and what follows
    the closing C{"}"}.
    """
    labels = []  # type: List[Label]
    seen = set()
    pos = 0
    while True:
        stripped = text[pos:].lstrip(" \t")
        pos = len(text) - len(stripped)
        if stripped.startswith("}"):
            return tuple(labels), text[pos + 1 :]
        match = _LABEL.match(text, pos)
        if match is None:
            raise ExpositionError("line %d: bad label" % (lineno,))
        name, value = match.group(1), match.group(2)
        if name in seen:
            raise ExpositionError("line %d: label %s twice" % (lineno, name))
        seen.add(name)
        labels.append((name, value))
        pos = match.end()
        if text.startswith(",", pos):
            pos += 1
        elif not text.startswith("}", pos):
            raise ExpositionError("line %d: bad label list" % (lineno,))


def _parseSample(line: str, lineno: int) -> Sample:
    match = _NAME.match(line)
    if match is None:
        raise ExpositionError("line %d: no metric name" % (lineno,))
    name = match.group(0)
    rest = line[match.end() :]
    labels = ()  # type: Tuple[Label, ...]
    if rest.startswith("{"):
        labels, rest = _parseLabels(rest[1:], lineno)
    parts = rest.split()
    if not rest[:1].isspace() or len(parts) not in (1, 2):
        raise ExpositionError("line %d: expected a value" % (lineno,))
    if not _VALUE.match(parts[0]):
        raise ExpositionError("line %d: bad value %r" % (lineno, parts[0][:40]))
    timestamp = None
    if len(parts) == 2:
        if not _TIMESTAMP.match(parts[1]):
            raise ExpositionError("line %d: bad timestamp" % (lineno,))
        timestamp = parts[1]
    return Sample(name, labels, parts[0], timestamp)


def parseExposition(text: str) -> List[Family]:
    """
    Parse a text in the exposition format (0.0.4).

    @return: its families, in the order they first appear.
    @raise ExpositionError: for a line that is not in the format, a
        second C{HELP} or C{TYPE} of a family, a C{TYPE} after samples.
    """
    families = {}  # type: Dict[str, Family]

    def family(name: str) -> Family:
        if name not in families:
            families[name] = Family(name)
        return families[name]

    def owner(name: str) -> Family:
        if name in families:
            return families[name]
        for kind, suffixes in _SUFFIXES.items():
            for suffix in suffixes:
                base = name[: -len(suffix)]
                if (
                    name.endswith(suffix)
                    and base in families
                    and families[base].kind == kind
                ):
                    return families[base]
        return family(name)

    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        if line.startswith("#"):
            words = line[1:].lstrip(" \t").split(None, 2)
            if len(words) < 2 or words[0] not in ("HELP", "TYPE"):
                continue  # a comment
            if not _NAME.fullmatch(words[1]):
                raise ExpositionError("line %d: bad metric name" % (lineno,))
            f = family(words[1])
            if words[0] == "HELP":
                if f.help is not None:
                    raise ExpositionError(
                        "line %d: second HELP of %s" % (lineno, f.name)
                    )
                f.help = words[2].strip() if len(words) > 2 else ""
            else:
                kind = words[2].strip() if len(words) > 2 else ""
                if kind not in _KINDS:
                    raise ExpositionError("line %d: bad type %r" % (lineno, kind[:20]))
                if f.typed or f.samples:
                    raise ExpositionError(
                        "line %d: TYPE of %s after its samples or twice"
                        % (lineno, f.name)
                    )
                f.kind, f.typed = kind, True
            continue
        sample = _parseSample(line, lineno)
        owner(sample.name).samples.append(sample)
    return list(families.values())


def _relabel(labels: Tuple[Label, ...], extra: Tuple[Label, ...]) -> Tuple[Label, ...]:
    """
    C{extra} in front of C{labels}; a label of C{labels} with a name of
    C{extra} is renamed C{exported_NAME}, as Prometheus does.
    """
    if not extra:
        return labels
    names = {name for name, _ in extra}
    return extra + tuple(
        ("exported_" + name if name in names else name, value) for name, value in labels
    )


def mergeFamilies(
    sources: Sequence[Tuple[Tuple[Label, ...], Sequence[Family]]],
) -> Tuple[List[Family], List[str]]:
    """
    Merge the families of several processes into one exposition.

    @param sources: the labels that name each process (C{component},
        C{process}) and its families.
    @return: the merged families (in the order they first appear; one
        HELP and TYPE each, the first process's; every sample with the
        labels of its process in front of its own) and the problems: a
        family whose type differs from the one first seen (its samples
        are left out).
    """
    merged = {}  # type: Dict[str, Family]
    problems = []  # type: List[str]
    for extra, families in sources:
        for f in families:
            into = merged.get(f.name)
            if into is None:
                into = merged[f.name] = Family(f.name, f.kind, f.help, [], f.typed)
            elif into.kind != f.kind:
                problems.append(
                    "%s is a %s in %s, a %s before"
                    % (f.name, f.kind, _describe(extra), into.kind)
                )
                continue
            if into.help is None:
                into.help = f.help
            into.samples.extend(
                Sample(s.name, _relabel(s.labels, extra), s.value, s.timestamp)
                for s in f.samples
            )
    return list(merged.values()), problems


def _describe(labels: Tuple[Label, ...]) -> str:
    return " ".join("%s=%s" % pair for pair in labels) or "the MCP"


def renderFamilies(families: Sequence[Family]) -> str:
    """
    The exposition text of C{families}.
    """
    lines = []  # type: List[str]
    for f in families:
        lines.extend(f.lines())
    return "\n".join(lines) + "\n"


# -- one component process -----------------------------------------------------


class _TextProtocol(protocol.Protocol):
    """
    Writes the process's metrics to whoever connects, then closes.
    """

    def connectionMade(self) -> None:
        d = defer.maybeDeferred(self.factory.render)  # type: ignore[attr-defined]
        d.addCallback(self._cbRendered)
        d.addErrback(self._ebRendered)

    def _cbRendered(self, text: str) -> None:
        self.transport.write(text.encode("utf-8"))  # type: ignore[union-attr]
        self.transport.loseConnection()  # type: ignore[union-attr]

    def _ebRendered(self, failure: Failure) -> None:
        # the MCP sees an empty answer: this process is left out (up 0)
        Logger("mcp").warn("metrics", error=failure.getErrorMessage())
        self.transport.loseConnection()  # type: ignore[union-attr]


class ProcessMetricsService(service.Service):
    """
    The metrics of one component process on its Unix socket: the
    recorder attached to the log records (in front of an observer that
    was there, e.g. TLS reporting's) and the socket, while it runs.

    @ivar port: the listening port while running.
    """

    name = "metrics"  # type: ignore[assignment]

    def __init__(
        self, reactor: Any, path: str, recorder: MetricsRecorder, component: str
    ) -> None:
        self.reactor = reactor
        self.path = path
        self.recorder = recorder
        self.hooks = RecorderHooks(recorder)
        self.component = component
        self.port = None  # type: Any
        self.started = time.time()

    def render(self) -> Any:
        """
        The process's text: its component's metrics and its start time.
        """

        def _cbText(text: str) -> str:
            return text + (
                "# HELP smx_process_start_time_seconds when this process "
                "started (Unix time)\n"
                "# TYPE smx_process_start_time_seconds gauge\n"
                "smx_process_start_time_seconds %s\n" % (repr(float(self.started)),)
            )

        return self.recorder.collect().addCallback(_cbText)

    def startService(self) -> None:
        from smx.split.peer import listenSocket

        service.Service.startService(self)
        self.started = time.time()
        self.hooks.attach()
        factory = protocol.Factory.forProtocol(_TextProtocol)
        factory.render = self.render  # type: ignore[attr-defined]
        factory.noisy = False
        self.port = listenSocket(self.reactor, self.path, factory)

    def stopService(self) -> Any:
        service.Service.stopService(self)
        self.hooks.detach()
        port, self.port = self.port, None
        if port is not None:
            return port.stopListening()
        return None


def processMetricsService(
    reactor: Any,
    component: str,
    components: Dict[str, Any],
    environ: Optional[Mapping[str, str]] = None,
) -> Optional[ProcessMetricsService]:
    """
    The metrics socket of a component process of split mode, or C{None}
    when the MCP did not name one (C{SMX_METRICS_SOCKET}).

    @param component: C{qmgr}, C{smtps}, C{smtpc} or C{smar}.
    @param components: what L{smx.split.service.makeComponentService}
        built (QMGR, the SMTPS listeners).
    """
    path = (os.environ if environ is None else environ).get(METRICS_SOCKET)
    if not path:
        return None
    recorder = componentRecorder(reactor, components)
    recorder.families = SPLIT_FAMILIES.get(component, frozenset())
    return ProcessMetricsService(reactor, path, recorder, component)


# -- the MCP: reading and merging ------------------------------------------------


class _Reader(protocol.Protocol):
    """
    Reads one process's text until it closes the connection.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.chunks = []  # type: List[bytes]
        self.size = 0
        self.done = defer.Deferred(self._cancel)  # type: defer.Deferred[bytes]

    def _cancel(self, d: defer.Deferred) -> None:
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            if not self.done.called:
                self.done.errback(ValueError("more than %d bytes" % (self.limit,)))
            self.transport.abortConnection()  # type: ignore[union-attr]
            return
        self.chunks.append(data)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if self.done.called:
            return
        if reason.check(error.ConnectionDone):
            self.done.callback(b"".join(self.chunks))
        else:
            self.done.errback(reason)


def fetchText(
    reactor: Any, path: str, timeout: float = SCRAPE_TIMEOUT, limit: int = MAX_TEXT
) -> defer.Deferred:
    """
    Read the text a process serves on the Unix socket C{path}.

    @return: a L{Deferred} firing with the text, or failing (no socket,
        nobody listening, more than C{limit} bytes, no end within
        C{timeout} seconds: L{defer.TimeoutError}).
    """
    from smx.unixsocket import socketName

    reader = _Reader(limit)
    factory = protocol.Factory()
    factory.protocol = lambda: reader  # type: ignore[assignment]
    factory.noisy = False
    try:
        endpoint = endpoints.UNIXClientEndpoint(reactor, socketName(path), timeout)
    except Exception:
        return defer.fail()
    d = endpoint.connect(factory)
    d.addCallback(lambda _: reader.done)
    d.addCallback(lambda data: data.decode("utf-8"))
    d.addTimeout(timeout, reactor)
    return d


@dataclass(frozen=True)
class Target:
    """
    One process the MCP reads.

    @ivar component: the section keyword (C{smtps}).
    @ivar process: the MCP's number of the process.
    @ivar path: its metrics socket, or C{None} when it is not running.
    @ivar restarts: how often the MCP started it again.
    """

    component: str
    process: str
    path: Optional[str]
    restarts: int = 0

    @property
    def labels(self) -> Tuple[Label, ...]:
        return (
            ("component", escapeLabelValue(self.component)),
            ("process", escapeLabelValue(self.process)),
        )


class MetricsGatherer:
    """
    Reads every process's metrics and merges them (what the MCP's
    endpoint shows).

    @ivar targets: returns the processes to read.
    """

    def __init__(
        self,
        reactor: Any,
        targets: Callable[[], List[Target]],
        timeout: float = SCRAPE_TIMEOUT,
        log: Optional[Logger] = None,
    ) -> None:
        self.reactor = reactor
        self.targets = targets
        self.timeout = timeout
        self.log = log or Logger("mcp")
        self._down = set()  # type: set

    def _scrape(self, target: Target) -> defer.Deferred:
        if target.path is None:
            return defer.succeed(None)
        try:
            # the directory is the process's user's: not a link to a
            # socket of root's
            if not stat.S_ISSOCK(os.lstat(target.path).st_mode):
                raise OSError("not a socket")
        except OSError:
            d = defer.fail()
        else:
            d = fetchText(self.reactor, target.path, self.timeout)
        d.addCallback(parseExposition)

        def _ebScrape(failure: Failure) -> None:
            if target.labels not in self._down:
                self._down.add(target.labels)
                self.log.warn(
                    "scrape",
                    component=target.component,
                    process=target.process,
                    path=target.path,
                    error=failure.getErrorMessage() or repr(failure.value),
                )
            return None

        def _cbScrape(families: List[Family]) -> List[Family]:
            if target.labels in self._down:
                self._down.discard(target.labels)
                self.log.notice(
                    func="scrape",
                    component=target.component,
                    process=target.process,
                    up=1,
                )
            return families

        return d.addCallbacks(_cbScrape, _ebScrape)

    def collect(self) -> defer.Deferred:
        """
        Read and merge.

        @return: a L{Deferred} firing with the text (never failing for a
            process that does not answer).
        """
        targets = self.targets()
        d = defer.gatherResults([self._scrape(t) for t in targets])
        return d.addCallback(lambda results: self.render(targets, results))

    def render(
        self, targets: Sequence[Target], results: Sequence[Optional[List[Family]]]
    ) -> str:
        """
        The merged text of what each target answered (C{None}: nothing).
        """
        up = Family(
            "smx_scrape_up",
            "gauge",
            "1 if the MCP read this process's metrics, 0 if it is down or "
            "did not answer",
            typed=True,
        )
        restarts = Family(
            "smx_process_restarts_total",
            "counter",
            "how often the MCP started this process again",
            typed=True,
        )
        for target, families in zip(targets, results):
            up.samples.append(
                Sample(up.name, target.labels, "0" if families is None else "1")
            )
            restarts.samples.append(
                Sample(restarts.name, target.labels, str(target.restarts))
            )
        sources = [((), [up, restarts])]  # type: List[Any]
        sources += [
            (target.labels, families)
            for target, families in zip(targets, results)
            if families is not None
        ]
        merged, problems = mergeFamilies(sources)
        for problem in problems:
            self.log.warn("scrape", error=problem)
        return renderFamilies(merged)


# -- the MCP's side ------------------------------------------------------------


def socketPath(queueDirectory: str, serviceName: str, number: int) -> str:
    """
    The metrics socket of process C{number} of the service (section)
    C{serviceName}.
    """
    return os.path.join(
        queueDirectory, METRICS_DIRECTORY, serviceName, "%d.sock" % (number,)
    )


def supervisorTargets(supervisor: Any) -> Callable[[], List[Target]]:
    """
    The processes of smx's components the MCP runs (its process table).
    """

    def targets() -> List[Target]:
        out = []
        for s in supervisor.services:
            keyword = s.keyword.lower()
            if keyword not in COMPONENTS or s.mcpType == "nostartaccept":
                continue
            for p in supervisor.slots[s.name]:
                path = None
                if p.state == "running":
                    path = socketPath(supervisor.queueDirectory, s.name, p.number)
                out.append(Target(keyword, str(p.number), path, p.restarts))
        return out

    return targets


def processEnviron(supervisor: Any) -> Callable[[Any], Dict[str, str]]:
    """
    What the MCP adds to the environment of a process it starts: for a
    process of an smx component, C{SMX_METRICS_SOCKET}, its directory
    made first (the service's user's, mode 0750).
    """

    def environ(process: Any) -> Dict[str, str]:
        s = process.service
        if s.keyword.lower() not in COMPONENTS:
            return {}
        path = socketPath(supervisor.queueDirectory, s.name, process.number)
        directory = os.path.dirname(path)
        try:
            # whatever the MCP's umask: the users pass through metrics/
            os.makedirs(os.path.dirname(directory), mode=0o755, exist_ok=True)
            os.chmod(os.path.dirname(directory), 0o755)
            os.makedirs(directory, mode=0o750, exist_ok=True)
            os.chmod(directory, 0o750)
            if os.geteuid() == 0 and s.uid is not None:
                os.chown(directory, s.uid, s.gid if s.gid is not None else -1)
        except OSError as e:
            supervisor.log.warn(
                "metrics", service=s.name, path=directory, error=e.strerror or str(e)
            )
            return {}
        return {METRICS_SOCKET: path}

    return environ


class GatherService(service.Service):
    """
    The MCP's HTTP listener of the merged metrics.

    @ivar port: the listening port (bound by L{bind}) until stopped.
    """

    name = "metrics"  # type: ignore[assignment]

    def __init__(
        self, reactor: Any, host: str, port: int, gatherer: MetricsGatherer
    ) -> None:
        self.reactor = reactor
        self.host = host
        self.portNumber = port
        self.gatherer = gatherer
        self.port = None  # type: Any

    def bind(self) -> None:
        """
        Listen (as root, before the processes start).

        @raise smx.mcp.sockets.ListenError: naming the option.
        """
        from smx.mcp.sockets import ListenError

        if self.port is not None:
            return
        try:
            self.port = self.reactor.listenTCP(
                self.portNumber, metricsSite(self.gatherer), interface=self.host
            )
        except error.CannotListenError as e:
            raise ListenError(
                "option 'address' in section 'metrics': cannot listen on %s:%d: %s"
                % (self.host, self.portNumber, e.socketError)
            )

    def startService(self) -> None:
        service.Service.startService(self)
        self.bind()

    def stopService(self) -> Any:
        service.Service.stopService(self)
        port, self.port = self.port, None
        if port is not None:
            return port.stopListening()
        return None


def gatherService(configuration: Any, supervisor: Any) -> Optional[GatherService]:
    """
    The MCP's metrics endpoint for C{metrics { address }}, bound, and the
    supervisor told to name each process's socket; C{None} without an
    address.

    @raise smx.mcp.sockets.ListenError: the address cannot be bound.
    """
    address = metricsAddress(configuration)
    if address is None:
        return None
    gatherer = MetricsGatherer(
        supervisor.reactor, supervisorTargets(supervisor), log=supervisor.log
    )
    gather = GatherService(supervisor.reactor, *address, gatherer)
    gather.bind()
    supervisor.processEnviron = processEnviron(supervisor)
    return gather

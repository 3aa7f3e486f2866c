# -*- test-case-name: smx.test.test_metrics,smx.test.test_integration_metrics -*-
"""
NAME
    smx.metrics - Prometheus metrics of an embedded smx

SYNOPSIS
    metrics { address = "127.0.0.1:9125"; }

    curl http://127.0.0.1:9125/metrics

DESCRIPTION
    An optional HTTP listener (twisted.web) that serves the Prometheus
    text exposition format (version 0.0.4) at C{/metrics}.

    Counters come from the App. C.2 log records the components write
    anyway: L{MetricsRecorder} is the L{smx.log.Logger.observer}, it sees
    every record (whatever the C{log_level}) and costs a dictionary
    lookup and an integer addition for a record it counts.  Gauges (queue
    sizes, sessions, connections per destination) are read from QMGR when
    the endpoint is scraped (L{smx.queue.qmgr.QueueManager.status}, what
    C{smx qmgrctl} shows).  C{doc/metrics.md} lists every metric.

    In split mode each component process serves its own metrics on a
    Unix socket and the MCP serves them all on one endpoint
    (L{smx.metricsgather}, C{doc/metrics.md}).

CONFIGURATION PARAMETERS
    metrics { address }   where to listen (none: no listener)

SECURITY
    The endpoint has no authentication: listen on a loopback address (or
    one only the monitoring host reaches).  It shows counts and queue
    sizes, never addresses or message contents, except the destination
    host names of open delivery connections.

DIAGNOSTICS
    An address that cannot be bound stops C{twistd smx} at start with the
    reason.  A record the recorder cannot count is logged by L{smx.log}
    and dropped; logging goes on.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Collection, Dict, List, Optional, Sequence, Tuple

from twisted.application import service
from twisted.internet import defer
from twisted.web import resource, server

from smx.log import ChainedObserver, Logger

#: the content type of the text exposition format
CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"

#: bucket bounds of the delivery latency histogram (seconds)
DELIVERY_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 30, 60, 300, 1800, 3600, 14400, 86400)

#: bucket bounds of the fsync and lookup latency histograms (seconds)
FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5)

#: bucket bounds of the IBDB commit size histogram (records)
COMMIT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024)

#: every metric: name, type, help, label names (doc/metrics.md)
METRICS = (
    (
        "smx_messages_received_total",
        "counter",
        "messages accepted (250 to the final dot)",
        ("listener",),
    ),
    (
        "smx_messages_queued_total",
        "counter",
        "transactions QMGR queued (with DSNs)",
        (),
    ),
    ("smx_recipients_delivered_total", "counter", "recipients delivered", ("mailer",)),
    (
        "smx_recipients_deferred_total",
        "counter",
        "temporary delivery failures",
        ("mailer",),
    ),
    (
        "smx_recipients_bounced_total",
        "counter",
        "permanent delivery failures",
        ("mailer",),
    ),
    ("smx_dsns_total", "counter", "DSNs queued, by kind", ("kind",)),
    ("smx_sessions_total", "counter", "SMTP sessions opened", ("listener",)),
    (
        "smx_sessions_refused_total",
        "counter",
        "SMTP sessions refused, by reply code",
        ("listener", "code"),
    ),
    (
        "smx_tls_sessions_total",
        "counter",
        "STARTTLS handshakes completed",
        ("listener", "version"),
    ),
    (
        "smx_delivery_latency_seconds",
        "histogram",
        "from queueing to delivery of a recipient",
        (),
    ),
    ("smx_sessions_open", "gauge", "SMTP sessions open", ()),
    (
        "smx_qmgr_sessions_refused_total",
        "counter",
        "sessions QMGR refused (connection limits)",
        (),
    ),
    ("smx_queue_transactions", "gauge", "transactions in the queue", ()),
    ("smx_queue_recipients", "gauge", "recipients in the queue, by state", ("state",)),
    ("smx_queue_iqdb", "gauge", "recipients waiting in IQDB", ()),
    ("smx_queue_iqdb_max", "gauge", "IQDB_max_entries", ()),
    ("smx_queue_aq", "gauge", "recipients in the active queue", ()),
    ("smx_queue_aq_max", "gauge", "AQ_max_entries", ()),
    ("smx_queue_defedb", "gauge", "transactions waiting to be written to DEFEDB", ()),
    (
        "smx_queue_cdb_bytes",
        "gauge",
        "bytes of the contents of queued transactions",
        (),
    ),
    (
        "smx_queue_oldest_deferred_seconds",
        "gauge",
        "age of the oldest deferred message (0: none)",
        (),
    ),
    (
        "smx_queue_disk_short",
        "gauge",
        "1 while the queue disk is below min_disk_space",
        (),
    ),
    ("smx_defedb_open", "gauge", "1 while DEFEDB is open", ()),
    (
        "smx_destination_connections",
        "gauge",
        "open delivery connections per destination",
        ("destination",),
    ),
    (
        "smx_destination_connection_limit",
        "gauge",
        "slow-start connection limit per destination",
        ("destination",),
    ),
    ("smx_ibdb_commits_total", "counter", "IBDB group commits (fsyncs)", ()),
    ("smx_ibdb_records_total", "counter", "IBDB records committed", ()),
    ("smx_ibdb_files", "gauge", "IBDB log files", ()),
    ("smx_ibdb_fsync_seconds", "histogram", "IBDB fsync latency", ()),
    ("smx_ibdb_commit_records", "histogram", "records per IBDB group commit", ()),
    ("smx_map_lookups_total", "counter", "map lookups", ("map",)),
    (
        "smx_dns_queries_total",
        "counter",
        "DNS queries sent (not answered from the cache)",
        ("type",),
    ),
    ("smx_dns_errors_total", "counter", "DNS lookups that failed", ("type",)),
    ("smx_pmilter_calls_total", "counter", "pmilter calls", ()),
    ("smx_pmilter_failures_total", "counter", "pmilter calls that failed", ()),
    ("smx_milter_calls_total", "counter", "milter calls (stages)", ("milter",)),
    (
        "smx_milter_failures_total",
        "counter",
        "milter calls answered by default_action (milter down, slow, bad)",
        ("milter",),
    ),
    (
        "smx_policy_requests_total",
        "counter",
        "Postfix policy server requests",
        ("policy",),
    ),
    (
        "smx_policy_failures_total",
        "counter",
        "policy requests answered by default_action (server down, slow, bad)",
        ("policy",),
    ),
    ("smx_uptime_seconds", "gauge", "seconds since QMGR started", ()),
)  # type: Tuple[Tuple[str, str, str, Tuple[str, ...]], ...]

_TYPES = {m[0]: m for m in METRICS}


class Histogram:
    """
    Cumulative buckets, a sum and a count.

    @ivar bounds: the upper bounds of the buckets (without C{+Inf}).
    """

    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * len(self.bounds)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        """Count one observation."""
        self.sum += value
        self.count += 1
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
                break

    def lines(self, name: str) -> List[str]:
        """The exposition lines of this histogram."""
        out = []
        total = 0
        for bound, n in zip(self.bounds, self.counts):
            total += n
            out.append('%s_bucket{le="%s"} %d' % (name, _number(bound), total))
        out.append('%s_bucket{le="+Inf"} %d' % (name, self.count))
        out.append("%s_sum %s" % (name, _number(self.sum)))
        out.append("%s_count %d" % (name, self.count))
        return out


def _number(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


def escapeLabelValue(value: str) -> str:
    """A label value as written between the quotes of the text format."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class MetricsRecorder:
    """
    Counts the log records of the components (the observer of
    L{smx.log.Logger}) and renders every metric.

    @ivar counters: metric name -> label values -> count.
    @ivar histograms: metric name -> L{Histogram}.
    @ivar listeners: SMTPS logger -> listener name (its smtps section's
        name, C{"smtps"} for the unnamed one).
    """

    def __init__(self, clock: Any, qmgr: Any = None) -> None:
        """
        @param clock: an C{IReactorTime} (latencies).
        @param qmgr: the L{smx.queue.qmgr.QueueManager} whose status gives
            the gauges, or C{None}.
        """
        self.clock = clock
        self.qmgr = qmgr
        self.counters = {
            name: {} for name, kind, _, _ in METRICS if kind == "counter"
        }  # type: Dict[str, Dict[Tuple[str, ...], int]]
        self.histograms = {
            "smx_delivery_latency_seconds": Histogram(DELIVERY_BUCKETS),
            "smx_ibdb_fsync_seconds": Histogram(FAST_BUCKETS),
            "smx_ibdb_commit_records": Histogram(COMMIT_BUCKETS),
        }
        self.listeners = {}  # type: Dict[Any, str]
        #: the metrics L{render} shows (C{None}: all; in split mode those
        #: of the process's component, L{smx.metricsgather})
        self.families = None  # type: Optional[Collection[str]]
        self._queuedAt = {}  # type: Dict[Any, float]
        self._received = self.counters["smx_messages_received_total"]
        self._sessions = self.counters["smx_sessions_total"]
        self._refused = self.counters["smx_sessions_refused_total"]
        self._tls = self.counters["smx_tls_sessions_total"]
        self._delivered = self.counters["smx_recipients_delivered_total"]
        self._deferred = self.counters["smx_recipients_deferred_total"]
        self._bounced = self.counters["smx_recipients_bounced_total"]
        self._queued = self.counters["smx_messages_queued_total"]
        self._dsns = self.counters["smx_dsns_total"]
        self._dnsErrors = self.counters["smx_dns_errors_total"]
        self._dnsQueries = self.counters["smx_dns_queries_total"]
        self._latency = self.histograms["smx_delivery_latency_seconds"]
        self._components = {
            "smtps": self._smtps,
            "qmgr": self._qmgr,
            "smar": self._smar,
        }  # type: Dict[str, Callable[[Any, Dict[str, Any]], None]]
        self._qmgrStats = {
            "queued": self._qmgrQueued,
            "ok": self._qmgrOk,
            "temp": self._qmgrTemp,
            "perm": self._qmgrPerm,
            "done": self._qmgrDone,
        }  # type: Dict[Any, Callable[[Dict[str, Any]], None]]

    # -- counting (the hot path) --------------------------------------------

    def observe(self, logger: Any, fields: Dict[str, Any]) -> None:
        """
        Count one record (L{smx.log.Logger.observer}).
        """
        handler = self._components.get(logger.component)
        if handler is not None:
            handler(logger, fields)

    def _qmgr(self, logger: Any, fields: Dict[str, Any]) -> None:
        if "milter_calls" in fields:
            self._milterSession(fields)
            return
        handler = self._qmgrStats.get(fields.get("stat"))
        if handler is not None:
            handler(fields)
        elif "dsn_for" in fields:
            key = (str(fields.get("kind")),)
            self._dsns[key] = self._dsns.get(key, 0) + 1

    def _qmgrQueued(self, fields: Dict[str, Any]) -> None:
        self._queued[()] = self._queued.get((), 0) + 1
        self._queuedAt[fields.get("ss_ta")] = self.clock.seconds()

    def _qmgrOk(self, fields: Dict[str, Any]) -> None:
        key = (fields.get("mailer") or "none",)
        self._delivered[key] = self._delivered.get(key, 0) + 1
        start = self._queuedAt.get(fields.get("ss_ta"))
        if start is not None:
            self._latency.observe(max(self.clock.seconds() - start, 0.0))

    def _qmgrTemp(self, fields: Dict[str, Any]) -> None:
        key = (fields.get("mailer") or "none",)
        self._deferred[key] = self._deferred.get(key, 0) + 1

    def _qmgrPerm(self, fields: Dict[str, Any]) -> None:
        key = (fields.get("mailer") or "none",)
        self._bounced[key] = self._bounced.get(key, 0) + 1

    def _qmgrDone(self, fields: Dict[str, Any]) -> None:
        self._queuedAt.pop(fields.get("ss_ta"), None)

    def _smtps(self, logger: Any, fields: Dict[str, Any]) -> None:
        stat = fields.get("stat")
        if "policy" in fields and "action" in fields and "sev" not in fields:
            # smx.milter.policyclient's record of each decision (not its
            # warning about an ignored action such as FILTER)
            self._policyDecided(fields)
            return
        if "milter_calls" in fields:
            self._milterSession(fields)
            return
        if stat == 0:
            if "size" in fields and "discard" not in fields:
                key = (self.listeners.get(logger, "smtps"),)
                self._received[key] = self._received.get(key, 0) + 1
        elif "relay" in fields:
            key = (self.listeners.get(logger, "smtps"),)
            self._sessions[key] = self._sessions.get(key, 0) + 1
        elif fields.get("where") == "connection":
            if "starttls" in fields:
                tls = (
                    self.listeners.get(logger, "smtps"),
                    str(fields.get("version", "unknown")),
                )
                self._tls[tls] = self._tls.get(tls, 0) + 1
            elif stat is not None:
                code = (self.listeners.get(logger, "smtps"), str(stat))
                self._refused[code] = self._refused.get(code, 0) + 1

    def _policyDecided(self, fields: Dict[str, Any]) -> None:
        key = (str(fields["policy"]),)
        counter = self.counters["smx_policy_requests_total"]
        counter[key] = counter.get(key, 0) + 1
        if fields.get("default"):
            counter = self.counters["smx_policy_failures_total"]
            counter[key] = counter.get(key, 0) + 1

    def _milterSession(self, fields: Dict[str, Any]) -> None:
        # smx.milter.client's record of a milter session's end
        key = (str(fields.get("milter")),)
        for name, field in (
            ("smx_milter_calls_total", "milter_calls"),
            ("smx_milter_failures_total", "milter_failures"),
        ):
            counter = self.counters[name]
            counter[key] = counter.get(key, 0) + int(fields.get(field) or 0)

    def _smar(self, logger: Any, fields: Dict[str, Any]) -> None:
        if "dns_query" in fields:
            key = (str(fields.get("type")),)
            self._dnsQueries[key] = self._dnsQueries.get(key, 0) + 1
        elif "dns_lookup" in fields:
            key = (str(fields.get("type")),)
            self._dnsErrors[key] = self._dnsErrors.get(key, 0) + 1

    def ibdbCommitted(self, records: int, seconds: float) -> None:
        """
        One IBDB group commit (L{smx.queue.ibdb.IncomingBackupLog}'s
        C{commitObserver}): its records and its fsync time.
        """
        self.histograms["smx_ibdb_commit_records"].observe(records)
        self.histograms["smx_ibdb_fsync_seconds"].observe(seconds)

    # -- gauges and rendering ------------------------------------------------

    def gauges(self, status: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        """
        The gauges (and QMGR's own counters) from QMGR's status.

        @return: metric name -> value, or label values -> value.
        """
        if status is None:
            return {}
        out = {
            "smx_sessions_open": status.get("sessions", 0),
            "smx_qmgr_sessions_refused_total": status.get("sessionsRefused", 0),
            "smx_queue_transactions": status.get("transactions", 0),
            "smx_queue_recipients": {
                (state,): n for state, n in (status.get("recipients") or {}).items()
            },
            "smx_queue_iqdb": status.get("iqdb", 0),
            "smx_queue_iqdb_max": status.get("iqdbMax", 0),
            "smx_queue_aq": status.get("aq", 0),
            "smx_queue_aq_max": status.get("aqMax", 0),
            "smx_queue_defedb": status.get("defedbPending", 0),
            "smx_queue_disk_short": bool(status.get("diskShort")),
            "smx_defedb_open": bool(status.get("defedb")),
            "smx_ibdb_commits_total": status.get("ibdbCommits", 0),
            "smx_ibdb_files": status.get("ibdbFiles", 0),
            "smx_uptime_seconds": status.get("uptime", 0.0),
        }  # type: Dict[str, Any]
        destinations = status.get("destinations") or {}
        out["smx_destination_connections"] = {
            (name or "local",): d.get("open", 0) for name, d in destinations.items()
        }
        out["smx_destination_connection_limit"] = {
            (name or "local",): d.get("limit", 0) for name, d in destinations.items()
        }
        out.update(self._queueScan())
        return out

    def _queueScan(self) -> Dict[str, Any]:
        """
        What QMGR's status does not say: CDB bytes, the oldest deferred
        message, IBDB records (one pass over the transactions in memory).
        """
        qmgr = self.qmgr
        store = getattr(qmgr, "store", None)
        if store is None:
            return {}
        size = 0
        oldest = None  # type: Optional[float]
        for ta in store.transactions.values():
            if ta.finished:
                continue
            size += ta.size
            if ta.received and any(
                r.state == "deferred" for r in ta.recipients.values()
            ):
                if oldest is None or ta.received < oldest:
                    oldest = ta.received
        out = {
            "smx_queue_cdb_bytes": size,
            "smx_queue_oldest_deferred_seconds": (
                max(time.time() - oldest, 0.0) if oldest is not None else 0
            ),
        }  # type: Dict[str, Any]
        log = getattr(qmgr, "log", None)
        if log is not None and hasattr(log, "records"):
            out["smx_ibdb_records_total"] = log.records
        return out

    def render(self, status: Optional[Dict[str, Any]] = None) -> str:
        """
        Every metric in the text exposition format.

        @param status: QMGR's status (gauges), or C{None}.
        """
        gauges = self.gauges(status)
        lines = []  # type: List[str]
        for name, kind, text, labels in METRICS:
            if self.families is not None and name not in self.families:
                continue
            lines.append("# HELP %s %s" % (name, text))
            lines.append("# TYPE %s %s" % (name, kind))
            if kind == "histogram":
                lines.extend(self.histograms[name].lines(name))
                continue
            if name in gauges:
                values = gauges[name]
            else:
                values = self.counters.get(name, {})
            if not isinstance(values, dict):
                values = {(): values}
            if not labels and not values:
                values = {(): 0}
            for key in sorted(values):
                if labels:
                    text = ",".join(
                        '%s="%s"' % (label, escapeLabelValue(str(value)))
                        for label, value in zip(labels, key)
                    )
                    lines.append("%s{%s} %s" % (name, text, _number(values[key])))
                else:
                    lines.append("%s %s" % (name, _number(values[key])))
        return "\n".join(lines) + "\n"

    def collect(self) -> defer.Deferred:
        """
        Ask QMGR for its status and render every metric.

        @return: a L{Deferred} firing with the text.
        """
        if self.qmgr is None:
            return defer.succeed(self.render(None))
        return defer.maybeDeferred(self.qmgr.status).addCallback(self.render)


class MetricsPage(resource.Resource):
    """
    C{GET /metrics} (and C{/}): the text exposition format.
    """

    isLeaf = True

    def __init__(self, recorder: Any) -> None:
        """
        @param recorder: a L{MetricsRecorder}, or anything whose
            C{collect()} gives the text (L{smx.metricsgather}).
        """
        resource.Resource.__init__(self)
        self.recorder = recorder

    def render_GET(self, request: Any) -> Any:
        if request.postpath not in ([b"metrics"], [b""], []):
            request.setResponseCode(404)
            return b"not found: try /metrics\n"
        d = self.recorder.collect()

        def _cbRendered(text: str) -> None:
            request.setHeader(b"content-type", CONTENT_TYPE)
            request.write(text.encode("utf-8"))
            request.finish()

        def _ebRendered(failure: Any) -> None:
            request.setResponseCode(500)
            request.setHeader(b"content-type", b"text/plain")
            request.write(
                ("cannot collect metrics: %s\n" % (failure.getErrorMessage(),)).encode(
                    "utf-8", "replace"
                )
            )
            request.finish()

        d.addCallbacks(_cbRendered, _ebRendered)
        return server.NOT_DONE_YET


def metricsSite(source: Any) -> server.Site:
    """
    The web site of L{MetricsPage} for C{source} (a L{MetricsRecorder},
    or the MCP's gatherer), without a log line per scrape.
    """
    site = server.Site(MetricsPage(source))
    site.noisy = False
    site.log = lambda request: None  # type: ignore[method-assign]
    return site


class RecorderHooks:
    """
    A L{MetricsRecorder} attached to the log records (in front of the
    observer that was there, which still sees every record) and to the
    commits of QMGR's IBDB, while a metrics service runs.
    """

    def __init__(self, recorder: MetricsRecorder) -> None:
        self.recorder = recorder
        self._observer = ChainedObserver(recorder.observe)

    def attach(self) -> None:
        self._observer.attach()
        ibdb = getattr(self.recorder.qmgr, "log", None)
        if ibdb is not None and hasattr(ibdb, "commitObserver"):
            ibdb.commitObserver = self.recorder.ibdbCommitted

    def detach(self) -> None:
        self._observer.detach()
        ibdb = getattr(self.recorder.qmgr, "log", None)  # type: Any
        if getattr(ibdb, "commitObserver", None) == self.recorder.ibdbCommitted:
            ibdb.commitObserver = None


class MetricsService(service.Service):
    """
    The HTTP listener, and the recorder attached to the log records while
    it runs.

    @ivar port: the listening port while running.
    """

    name = "metrics"  # type: ignore[assignment]

    def __init__(
        self, reactor: Any, host: str, port: int, recorder: MetricsRecorder
    ) -> None:
        self.reactor = reactor
        self.host = host
        self.portNumber = port
        self.recorder = recorder
        self.hooks = RecorderHooks(recorder)
        self.port = None  # type: Any

    def privilegedStartService(self) -> None:
        service.Service.privilegedStartService(self)
        self._listen()

    def startService(self) -> None:
        service.Service.startService(self)
        self._listen()
        self.hooks.attach()

    def _listen(self) -> None:
        if self.port is None:
            self.port = self.reactor.listenTCP(
                self.portNumber, metricsSite(self.recorder), interface=self.host
            )

    def stopService(self) -> Any:
        service.Service.stopService(self)
        self.hooks.detach()
        port, self.port = self.port, None
        if port is not None:
            return port.stopListening()
        return None


def metricsService(cfg: Any, reactor: Any, components: Dict[str, Any]) -> Any:
    """
    The metrics service of C{cfg} (C{metrics { address; }}), or C{None}
    when no address is set.

    @param components: what L{smx.components.assemble} built (QMGR and
        the SMTPS listeners, whose loggers name the listener label).
    """
    address = metricsAddress(cfg)
    if address is None:
        return None
    return MetricsService(reactor, *address, componentRecorder(reactor, components))


def metricsAddress(cfg: Any) -> Optional[Tuple[str, int]]:
    """
    The host and port of C{metrics { address; }} (default port 9125; no
    host written: loopback, since the endpoint has no authentication),
    or C{None} when no address is set.
    """
    from smx.config.values import splitAddress

    address = cfg.section("metrics")["address"]
    if not address:
        return None
    host, port = splitAddress(address, 9125)
    if address.startswith(":"):
        host = "127.0.0.1"
    return host, port


def componentRecorder(reactor: Any, components: Dict[str, Any]) -> MetricsRecorder:
    """
    The recorder of the components built (QMGR, and the SMTPS listeners,
    whose loggers name the listener label).
    """
    recorder = MetricsRecorder(reactor, components.get("qmgr"))
    for listener in components.get("smtps") or ():
        factory = getattr(listener, "factory", None)
        if factory is not None:
            name = getattr(factory.settings, "name", "") or "smtps"
            recorder.listeners[factory.log] = name
    return recorder

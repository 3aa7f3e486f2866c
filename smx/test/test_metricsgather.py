# -*- test-case-name: smx.test.test_metricsgather -*-
"""
Tests of L{smx.metricsgather}: parsing and merging the texts of the
processes of split mode, a component process's metrics socket and the
MCP's reading of them over real Unix sockets (the global reactor), and
its HTTP endpoint on a loopback port.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import tempfile
import stat
from typing import Any, List, Optional

from twisted.internet import defer, protocol, reactor
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from smx.log import Logger, MemorySink
from smx.metrics import METRICS, MetricsRecorder
from smx.metricsgather import (
    METRICS_SOCKET,
    SPLIT_FAMILIES,
    ExpositionError,
    Family,
    GatherService,
    MetricsGatherer,
    Sample,
    Target,
    fetchText,
    mergeFamilies,
    parseExposition,
    processEnviron,
    processMetricsService,
    renderFamilies,
    socketPath,
    supervisorTargets,
)

SMTPS_TEXT = """\
# HELP smx_messages_received_total messages accepted
# TYPE smx_messages_received_total counter
smx_messages_received_total{listener="smtps"} 3
smx_messages_received_total{listener="MSA"} 1
"""

QMGR_TEXT = """\
# HELP smx_delivery_latency_seconds latency
# TYPE smx_delivery_latency_seconds histogram
smx_delivery_latency_seconds_bucket{le="0.5"} 1
smx_delivery_latency_seconds_bucket{le="+Inf"} 2
smx_delivery_latency_seconds_sum 3.25
smx_delivery_latency_seconds_count 2
# TYPE smx_queue_transactions gauge
smx_queue_transactions 4
"""


class ParseTests(SynchronousTestCase):
    """
    L{parseExposition} reads the text format strictly.
    """

    def test_embeddedText(self) -> None:
        """
        The whole text of an embedded smx parses into one family per
        metric, the histogram's C{_bucket}, C{_sum} and C{_count} samples
        in the histogram's family.
        """
        recorder = MetricsRecorder(Clock())
        families = parseExposition(recorder.render(None))
        self.assertEqual([f.name for f in families], [m[0] for m in METRICS])
        latency = [f for f in families if f.name == "smx_delivery_latency_seconds"][0]
        self.assertEqual(latency.kind, "histogram")
        self.assertEqual(
            {s.name for s in latency.samples},
            {
                "smx_delivery_latency_seconds_bucket",
                "smx_delivery_latency_seconds_sum",
                "smx_delivery_latency_seconds_count",
            },
        )

    def test_labels(self) -> None:
        """
        Label values keep their escapes; a trailing comma, spaces and a
        timestamp are accepted; a family without HELP or TYPE is untyped.
        """
        [f] = parseExposition('x_total{a="q\\"uo\\\\te\\n", b = "2",} 1.5e3 1700\n')
        self.assertEqual(f.kind, "untyped")
        self.assertIsNone(f.help)
        self.assertEqual(
            f.samples,
            [
                Sample(
                    "x_total", (("a", 'q\\"uo\\\\te\\n'), ("b", "2")), "1.5e3", "1700"
                )
            ],
        )
        self.assertEqual(
            f.samples[0].line(), 'x_total{a="q\\"uo\\\\te\\n",b="2"} 1.5e3 1700'
        )

    def test_bad(self) -> None:
        """
        A malformed line, a second HELP or TYPE, or a TYPE after the
        family's samples is an L{ExpositionError} naming the line.
        """
        for text in [
            "x 1\ny{a=1} 2\n",
            "x one\n",
            "x 1_000\n",
            "x\n",
            'x{a="1",a="2"} 1\n',
            "# HELP x a\n# HELP x b\n",
            "# TYPE x gauge\n# TYPE x counter\n",
            "x 1\n# TYPE x gauge\n",
            "# TYPE x kind\n",
            "x 1 2 3\n",
            'x{a="1"}1\n',
        ]:
            self.assertRaises(ExpositionError, parseExposition, text)
        e = self.assertRaises(ExpositionError, parseExposition, "a 1\nb ?\n")
        self.assertIn("line 2", str(e))


class MergeTests(SynchronousTestCase):
    """
    L{mergeFamilies} makes one exposition of several processes' texts.
    """

    def merge(self, *sources: Any) -> List[Family]:
        merged, problems = mergeFamilies(
            [(labels, parseExposition(text)) for labels, text in sources]
        )
        self.assertEqual(problems, [])
        return merged

    def test_countersKeptApart(self) -> None:
        """
        The counters of two SMTPS processes stay two series, each with
        the labels of its process in front of its own; HELP and TYPE
        once.
        """
        one = (("component", "smtps"), ("process", "0"))
        two = (("component", "smtps"), ("process", "1"))
        text = renderFamilies(self.merge((one, SMTPS_TEXT), (two, SMTPS_TEXT)))
        self.assertEqual(text.count("# HELP smx_messages_received_total"), 1)
        self.assertEqual(text.count("# TYPE smx_messages_received_total"), 1)
        self.assertIn(
            'smx_messages_received_total{component="smtps",process="1",'
            'listener="MSA"} 1\n',
            text,
        )
        self.assertEqual(text.count("smx_messages_received_total{"), 4)
        # and it parses again, with the samples together
        [f] = parseExposition(text)
        self.assertEqual(len(f.samples), 4)

    def test_histogram(self) -> None:
        """
        A histogram's buckets, sum and count get the process's labels
        (C{le} stays), and an unlabelled gauge gets them too.
        """
        labels = (("component", "qmgr"), ("process", "0"))
        text = renderFamilies(self.merge((labels, QMGR_TEXT)))
        self.assertIn(
            'smx_delivery_latency_seconds_bucket{component="qmgr",process="0",'
            'le="+Inf"} 2\n',
            text,
        )
        self.assertIn(
            'smx_delivery_latency_seconds_sum{component="qmgr",process="0"} 3.25\n',
            text,
        )
        self.assertIn('smx_queue_transactions{component="qmgr",process="0"} 4\n', text)
        self.assertIn("# TYPE smx_delivery_latency_seconds histogram\n", text)

    def test_helpFromLater(self) -> None:
        """
        A family that first comes without HELP takes a later process's.
        """
        merged = self.merge(
            ((("p", "1"),), "# TYPE x gauge\nx 1\n"),
            ((("p", "2"),), "# HELP x the x\n# TYPE x gauge\nx 2\n"),
        )
        self.assertEqual(merged[0].help, "the x")

    def test_typeConflict(self) -> None:
        """
        A family whose type differs from the first process's is left out
        of the later process and named as a problem.
        """
        merged, problems = mergeFamilies(
            [
                ((("p", "1"),), parseExposition("# TYPE x gauge\nx 1\n")),
                ((("p", "2"),), parseExposition("# TYPE x counter\nx 2\n")),
            ]
        )
        self.assertEqual([s.value for s in merged[0].samples], ["1"])
        self.assertEqual(problems, ["x is a counter in p=2, a gauge before"])

    def test_labelClash(self) -> None:
        """
        A process's own label named like the process labels is renamed
        C{exported_NAME}, as Prometheus does.
        """
        [f] = self.merge(((("process", "3"),), 'x{process="mine"} 1\n'))
        self.assertEqual(
            f.samples[0].labels, (("process", "3"), ("exported_process", "mine"))
        )

    def test_render(self) -> None:
        """
        L{MetricsGatherer.render} adds C{smx_scrape_up} (0 for a process
        that gave nothing) and C{smx_process_restarts_total}, and leaves
        the silent process out.
        """
        gatherer = MetricsGatherer(Clock(), lambda: [])
        targets = [
            Target("qmgr", "0", "/q"),
            Target("smtps", "0", "/s0"),
            Target("smtps", "1", None, 2),
        ]
        text = gatherer.render(
            targets, [parseExposition(QMGR_TEXT), parseExposition(SMTPS_TEXT), None]
        )
        self.assertIn('smx_scrape_up{component="smtps",process="0"} 1\n', text)
        self.assertIn('smx_scrape_up{component="smtps",process="1"} 0\n', text)
        self.assertIn(
            'smx_process_restarts_total{component="smtps",process="1"} 2\n', text
        )
        self.assertNotIn('process="1",listener', text)
        self.assertEqual(len(parseExposition(text)), 5)


class _Service:
    def __init__(self, name: str, keyword: str, mcpType: str = "wait") -> None:
        self.name = name
        self.keyword = keyword
        self.mcpType = mcpType
        self.uid = None  # type: Optional[int]
        self.gid = None  # type: Optional[int]


class _Process:
    def __init__(self, service: _Service, number: int, state: str = "running"):
        self.service = service
        self.number = number
        self.state = state
        self.restarts = 1


class _Supervisor:
    def __init__(self, queueDirectory: str) -> None:
        self.queueDirectory = queueDirectory
        self.log = Logger("mcp", sink=MemorySink())
        qmgr = _Service("qmgr", "qmgr")
        msa = _Service("MSA", "smtps")
        procmail = _Service("procmail", "procmail")
        self.services = [qmgr, msa, procmail]
        self.slots = {
            "qmgr": [_Process(qmgr, 0)],
            "MSA": [_Process(msa, 2), _Process(msa, 3, "waiting")],
            "procmail": [_Process(procmail, 0)],
        }


class SupervisorTests(SynchronousTestCase):
    """
    What the MCP reads and what it tells the processes.
    """

    def test_targets(self) -> None:
        """
        The processes of smx's components, by keyword and number; a
        process that is not running has no socket to read.
        """
        supervisor = _Supervisor("/q")
        self.assertEqual(
            supervisorTargets(supervisor)(),
            [
                Target("qmgr", "0", "/q/metrics/qmgr/0.sock", 1),
                Target("smtps", "2", "/q/metrics/MSA/2.sock", 1),
                Target("smtps", "3", None, 1),
            ],
        )

    def test_environ(self) -> None:
        """
        A component process gets C{SMX_METRICS_SOCKET}, its directory
        made (mode 0750); another program gets nothing.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        supervisor = _Supervisor(directory)
        environ = processEnviron(supervisor)
        msa = supervisor.slots["MSA"][0]
        self.assertEqual(
            environ(msa), {METRICS_SOCKET: socketPath(directory, "MSA", 2)}
        )
        mode = os.stat(os.path.join(directory, "metrics", "MSA")).st_mode
        self.assertEqual(stat.S_IMODE(mode), 0o750)
        self.assertEqual(environ(supervisor.slots["procmail"][0]), {})

    def test_environOwner(self) -> None:
        """
        Run by root, the MCP gives a service's socket directory to the
        service's user and group, whatever its umask; C{metrics/} stays
        root's, mode 0755.
        """
        if os.geteuid() != 0:
            raise SkipTest("needs root (chown)")
        nobody = pwd.getpwnam("nobody")
        directory = self.mktemp()
        os.makedirs(directory)
        supervisor = _Supervisor(directory)
        msa = supervisor.slots["MSA"][0]
        msa.service.uid, msa.service.gid = nobody.pw_uid, nobody.pw_gid
        old = os.umask(0o077)
        try:
            processEnviron(supervisor)(msa)
        finally:
            os.umask(old)
        st = os.stat(os.path.join(directory, "metrics", "MSA"))
        self.assertEqual(
            (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)),
            (nobody.pw_uid, nobody.pw_gid, 0o750),
        )
        st = os.stat(os.path.join(directory, "metrics"))
        self.assertEqual((st.st_uid, stat.S_IMODE(st.st_mode)), (0, 0o755))

    def test_processService(self) -> None:
        """
        A component process serves a metrics socket only when the MCP
        named one, with the metrics of its component.
        """
        self.assertIsNone(processMetricsService(Clock(), "smtps", {}, {}))
        service = processMetricsService(
            Clock(), "smar", {}, {METRICS_SOCKET: "/q/metrics/smar/0.sock"}
        )
        assert service is not None
        self.assertEqual(service.path, "/q/metrics/smar/0.sock")
        self.assertEqual(service.recorder.families, SPLIT_FAMILIES["smar"])
        names = {m[0] for m in METRICS}
        for families in SPLIT_FAMILIES.values():
            self.assertEqual(families - names, set())


class _Silent(protocol.Protocol):
    """Accepts and never answers."""


class SocketTests(TestCase):
    """
    Component processes' sockets read by the MCP's gatherer: real Unix
    sockets in a temporary directory, the global reactor.
    """

    def setUp(self) -> None:
        # short: the names of Unix sockets are at most 107 bytes
        self.directory = tempfile.mkdtemp(prefix="smx-gather-", dir="/tmp")
        self.addCleanup(shutil.rmtree, self.directory, True)
        self.patch(Logger, "observer", None)

    def component(self, name: str, number: int) -> Any:
        """
        Start the metrics socket of an SMTPS process; return its service.
        """
        path = socketPath(self.directory, name, number)
        service = processMetricsService(reactor, "smtps", {}, {METRICS_SOCKET: path})
        assert service is not None
        service.startService()
        self.addCleanup(lambda: service.running and service.stopService())
        return service

    @defer.inlineCallbacks
    def test_gather(self) -> Any:
        """
        Two SMTPS processes count their own records and the gatherer
        shows both; a process whose socket is missing, one that does not
        answer in time and one not running are up 0, and the scrape
        still answers in about the timeout.
        """
        one = self.component("smtps", 0)
        Logger("smtps", sink=MemorySink()).info(size=10, stat=0)
        two = self.component("smtps", 1)
        log = Logger("smtps", sink=MemorySink())
        log.info(size=10, stat=0)
        log.info(size=10, stat=0)
        # in one process the second observer keeps the first behind it:
        # both count what came after the second started
        self.assertEqual(
            one.recorder.counters["smx_messages_received_total"], {("smtps",): 3}
        )
        silent = socketPath(self.directory, "smtps", 3)
        os.makedirs(os.path.dirname(silent), exist_ok=True)
        port = reactor.listenUNIX(  # type: ignore[attr-defined]
            silent, protocol.Factory.forProtocol(_Silent)
        )
        self.addCleanup(port.stopListening)
        targets = [
            Target("smtps", "0", one.path),
            Target("smtps", "1", two.path),
            Target("smtps", "2", socketPath(self.directory, "smtps", 2)),
            Target("smtps", "3", silent),
            Target("smtps", "4", None),
        ]
        gatherer = MetricsGatherer(
            reactor, lambda: targets, timeout=0.3, log=Logger("mcp", sink=MemorySink())
        )
        start = reactor.seconds()
        text = yield gatherer.collect()
        self.assertLess(reactor.seconds() - start, 2)
        self.assertIn(
            'smx_messages_received_total{component="smtps",process="0",'
            'listener="smtps"} 3\n',
            text,
        )
        self.assertIn(
            'smx_messages_received_total{component="smtps",process="1",'
            'listener="smtps"} 2\n',
            text,
        )
        for n, up in enumerate("11000"):
            self.assertIn(
                'smx_scrape_up{component="smtps",process="%d"} %s\n' % (n, up), text
            )
        self.assertIn(
            'smx_process_start_time_seconds{component="smtps",process="1"}', text
        )
        # the missing one and the silent one were logged once
        self.assertEqual(len(gatherer._down), 2)

    @defer.inlineCallbacks
    def test_restarted(self) -> Any:
        """
        A process that stopped is up 0; started again on its socket
        (a new process, counting from 0) it is read again; a symbolic
        link in place of its socket is not read.
        """
        one = self.component("smtps", 0)
        targets = [Target("smtps", "0", one.path)]
        gatherer = MetricsGatherer(
            reactor, lambda: targets, timeout=0.3, log=Logger("mcp", sink=MemorySink())
        )
        yield one.stopService()
        # a process killed with SIGKILL leaves its socket file behind
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(one.path)
        stale.close()
        text = yield gatherer.collect()
        self.assertIn('smx_scrape_up{component="smtps",process="0"} 0\n', text)
        self.component("smtps", 0)
        text = yield gatherer.collect()
        self.assertIn('smx_scrape_up{component="smtps",process="0"} 1\n', text)
        self.assertEqual(gatherer._down, set())
        # a symbolic link is not read (it could lead to a socket of root's)
        os.rename(one.path, one.path + ".real")
        os.symlink(one.path + ".real", one.path)
        text = yield gatherer.collect()
        self.assertIn('smx_scrape_up{component="smtps",process="0"} 0\n', text)

    @defer.inlineCallbacks
    def test_tooLong(self) -> Any:
        """
        More than the limit is a failure (the MCP reads a bounded text).
        """
        one = self.component("smtps", 0)
        yield self.assertFailure(
            fetchText(reactor, one.path, 1.0, limit=100), ValueError
        )
        text = yield fetchText(reactor, one.path, 1.0)
        self.assertIn("smx_messages_received_total", text)

    @defer.inlineCallbacks
    def test_http(self) -> Any:
        """
        The MCP's endpoint answers C{GET /metrics} with the merged text
        in the text format's content type; an address in use is a
        L{ListenError} naming the option.
        """
        from twisted.web.client import Agent, readBody

        from smx.mcp.sockets import ListenError

        one = self.component("smtps", 0)
        gatherer = MetricsGatherer(
            reactor,
            lambda: [Target("smtps", "0", one.path)],
            log=Logger("mcp", sink=MemorySink()),
        )
        service = GatherService(reactor, "127.0.0.1", 0, gatherer)
        service.bind()
        self.addCleanup(service.stopService)
        port = service.port.getHost().port
        response = yield Agent(reactor).request(
            b"GET", b"http://127.0.0.1:%d/metrics" % (port,)
        )
        body = yield readBody(response)
        self.assertEqual(response.code, 200)
        self.assertEqual(
            response.headers.getRawHeaders(b"content-type"),
            [b"text/plain; version=0.0.4; charset=utf-8"],
        )
        self.assertIn(b'smx_scrape_up{component="smtps",process="0"} 1', body)
        other = GatherService(reactor, "127.0.0.1", port, gatherer)
        e = self.assertRaises(ListenError, other.bind)
        self.assertIn("option 'address' in section 'metrics'", str(e))
        yield deferLater(reactor, 0, lambda: None)

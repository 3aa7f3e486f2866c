# -*- test-case-name: smx.split.test.test_queue -*-
"""
Tests for L{smx.split.queue}: the same behaviour tests of
L{IQueueManager} run against L{FakeQueueManager} in the process and
through L{QueueManagerProxy} and L{QueueManagerServer} over a real Unix
socket (in the test's reactor); then what only the proxy does: refuse
when QMGR cannot be reached, and close the sessions of a lost SMTPS;
the one-way content commit; the budget QMGR pushes (a real
L{smx.queue.qmgr.QueueManager}, also on a real tmpfs that fills).
"""

from __future__ import annotations

import os
from typing import Any, List

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from smx.interfaces import IQueueManager, QueueManagerUnavailable
from smx.log import Logger, MemorySink
from smx.queue.test.test_qmgr import QueueManagerTestMixin
from smx.queue.test.tmpfs import fill, mountTmpfs
from smx.queue.testing import FakeQueueManager, MemoryContentStore
from smx.split.queue import QueueManagerProxy, queueManagerFactory
from smx.split.testing import running, serve, socketPath
from smx.test.mta import until
from smx.values import Envelope

ENVELOPE = {
    "id": "S0000018A2B3C4D5E00",
    "session": "S0000018A2B3C4D5D00",
    "sender": "alice@example.org",
    "recipients": [
        {"address": "bob@example.com", "index": 0, "notify": "FAILURE"},
        {"address": "carol@example.com", "index": 1},
    ],
    "size": 1024,
    "client": "192.0.2.1",
    "received": 1700000000.5,
    "bodyType": "7BIT",
    "smtputf8": False,
    "envid": "abc",
    "ret": None,
    "contentPending": True,
    "requiretls": True,
}


class QueueManagerBehaviour:
    """
    What every L{IQueueManager} the SMTP server uses does, with a
    L{FakeQueueManager} C{self.backend} behind C{self.qmgr}.
    """

    qmgr: Any
    backend: FakeQueueManager

    def settle(self) -> Any:
        """A Deferred firing once calls that return nothing have arrived."""
        return self.qmgr.status()

    def test_provides(self) -> None:
        """
        It provides L{IQueueManager}.
        """
        self.assertTrue(verifyObject(IQueueManager, self.qmgr))  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def test_session(self) -> Any:
        """
        A session is accepted (C{None}), recorded, and closed.
        """
        reply = yield self.qmgr.sessionOpen("S1", "192.0.2.1")
        self.assertIsNone(reply)  # type: ignore[attr-defined]
        self.assertEqual(self.backend.sessions, {"S1": "192.0.2.1"})  # type: ignore[attr-defined]
        self.assertIsNone(self.qmgr.sessionClose("S1", "192.0.2.1"))  # type: ignore[attr-defined]
        yield self.settle()
        self.assertEqual(self.backend.closed, ["S1"])  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def test_sessionRefused(self) -> Any:
        """
        A refusal is the reply, unchanged.
        """
        self.backend.refuseSession = {"code": 421, "dsn": "4.7.0", "text": "later"}
        reply = yield self.qmgr.sessionOpen("S1", "192.0.2.1")
        self.assertEqual(reply, {"code": 421, "dsn": "4.7.0", "text": "later"})  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def test_checkAcceptance(self) -> Any:
        """
        C{checkAcceptance} answers C{None} or the backend's reply.
        """
        self.assertIsNone((yield self.qmgr.checkAcceptance(100, "S1")))  # type: ignore[attr-defined]
        self.backend.refuseTransaction = {"code": 452, "dsn": "4.3.1", "text": "disk"}
        reply = yield self.qmgr.checkAcceptance(0)
        self.assertEqual(reply["code"], 452)  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def test_commitTransaction(self) -> Any:
        """
        The envelope arrives with every field, the unknown C{requiretls}
        included.
        """
        result = yield self.qmgr.commitTransaction(ENVELOPE)
        self.assertIsNone(result)  # type: ignore[attr-defined]
        [got] = self.backend.envelopes
        self.assertEqual(Envelope.fromData(got), Envelope.fromData(ENVELOPE))  # type: ignore[attr-defined]
        self.assertTrue(got["requiretls"])  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def test_commitFails(self) -> Any:
        """
        A failed commit fails (SMTPS then answers 451).
        """
        self.backend.failCommit = ValueError("cannot write IBDB")
        with self.assertRaises(ValueError):  # type: ignore[attr-defined]
            yield self.qmgr.commitTransaction(ENVELOPE)

    @defer.inlineCallbacks
    def test_contentCommitted(self) -> Any:
        """
        C{contentCommitted} of a committed transaction is recorded; of an
        unknown one it is a C{KeyError}.
        """
        yield self.qmgr.commitTransaction(ENVELOPE)
        yield self.qmgr.contentCommitted(ENVELOPE["id"], True)
        self.assertEqual(self.backend.contents, [(ENVELOPE["id"], True)])  # type: ignore[attr-defined]
        with self.assertRaises(KeyError):  # type: ignore[attr-defined]
            yield self.qmgr.contentCommitted("S999", False)

    @defer.inlineCallbacks
    def test_statusListControl(self) -> Any:
        """
        C{status}, C{listQueue} and C{control} answer as the backend.
        """
        yield self.qmgr.commitTransaction(ENVELOPE)
        status = yield self.qmgr.status()
        self.assertEqual(status["transactions"], 1)  # type: ignore[attr-defined]
        entries = yield self.qmgr.listQueue()
        self.assertEqual([e["id"] for e in entries], [ENVELOPE["id"]])  # type: ignore[attr-defined]
        done = yield self.qmgr.control("hold", ENVELOPE["id"], recipient=1)
        self.assertEqual(done["command"], "hold")  # type: ignore[attr-defined]
        self.assertEqual(self.backend.controls, [("hold", ENVELOPE["id"], 1)])  # type: ignore[attr-defined]
        with self.assertRaises(KeyError):  # type: ignore[attr-defined]
            yield self.qmgr.control("delete", "S999")


class InProcessTests(QueueManagerBehaviour, unittest.TestCase):
    """
    The behaviour of L{FakeQueueManager} itself.
    """

    def setUp(self) -> None:
        self.backend = FakeQueueManager()
        self.qmgr = self.backend

    def settle(self) -> Any:
        return defer.succeed(None)


class ProxiedTests(QueueManagerBehaviour, unittest.TestCase):
    """
    The same behaviour through the proxy, AMP and the server, over a Unix
    socket.
    """

    def setUp(self) -> None:
        self.backend = FakeQueueManager()
        self.sink = MemorySink()
        self.answers = []  # type: List[defer.Deferred]
        self.backend.logger = Logger(  # type: ignore[attr-defined]
            "qmgr", sink=self.sink
        )
        path = socketPath(self)
        serve(self, queueManagerFactory(self.backend), path)
        self.qmgr = QueueManagerProxy(reactor, path, waitForServer=5)
        running(self, self.qmgr)

    @defer.inlineCallbacks
    def test_contentCommitted(self) -> Any:
        """
        C{contentCommitted} is one-way: the proxy's result fires at once,
        without waiting for QMGR; QMGR records it.  Of an unknown
        transaction, QMGR logs the C{KeyError} (C{sev=ERR}) and the
        connection goes on.
        """
        yield self.qmgr.commitTransaction(ENVELOPE)
        self.backend.contentCommitted = self.slowContentCommitted  # type: ignore[method-assign]
        d = self.qmgr.contentCommitted(ENVELOPE["id"], True)
        self.assertTrue(d.called)
        self.assertIsNone(self.successResultOf(d))
        yield self.settle()
        # QMGR got it, and has not answered yet
        self.assertEqual(self.backend.contents, [(ENVELOPE["id"], True)])
        [answer] = self.answers
        self.assertFalse(answer.called)
        answer.callback(None)
        del self.backend.contentCommitted
        yield self.qmgr.contentCommitted("S999", False)
        status = yield self.settle()
        self.assertEqual(status["transactions"], 1)
        [record] = [r for r in self.sink.lines() if "S999" in r]
        self.assertIn("sev=ERR", record)
        self.assertIn("QueueManagerServer.contentCommitted", record)
        self.assertIn("KeyError", record)

    def slowContentCommitted(self, transactionId: str, stored: bool) -> Any:
        """A C{contentCommitted} of QMGR that does not answer yet."""
        self.backend.contents.append((transactionId, stored))
        d = defer.Deferred()  # type: defer.Deferred
        self.answers.append(d)
        return d

    @defer.inlineCallbacks
    def test_badEnvelope(self) -> Any:
        """
        An envelope of the wrong shape is a C{ValueError}: QMGR's server
        checks it and does not hand it on.
        """
        with self.assertRaises(ValueError):
            yield self.qmgr.commitTransaction({"id": "S1", "recipients": "bob"})
        with self.assertRaises(ValueError):
            yield self.qmgr.commitTransaction(["not", "a", "mapping"])
        self.assertEqual(self.backend.envelopes, [])

    @defer.inlineCallbacks
    def test_checkedOnce(self) -> Any:
        """
        A QMGR with C{commitChecked} (L{smx.queue.qmgr.QueueManager}) gets
        the envelope its server checked through it, not through
        C{commitTransaction}, which would check it again.
        """
        calls = []
        self.backend.commitChecked = lambda e: (  # type: ignore[attr-defined]
            calls.append(e) or defer.succeed(None)
        )
        self.backend.commitTransaction = None  # type: ignore[assignment]
        yield self.qmgr.commitTransaction(ENVELOPE)
        self.assertEqual([e["id"] for e in calls], [ENVELOPE["id"]])

    @defer.inlineCallbacks
    def test_bigEnvelope(self) -> Any:
        """
        An envelope larger than one AMP value (64 KB) crosses whole.
        """
        envelope = dict(ENVELOPE)
        envelope["recipients"] = [
            {"address": "user%05d@%s.example.com" % (i, "x" * 40), "index": i}
            for i in range(3000)
        ]
        yield self.qmgr.commitTransaction(envelope)
        [got] = self.backend.envelopes
        self.assertEqual(len(got["recipients"]), 3000)
        self.assertEqual(got["recipients"][-1], envelope["recipients"][-1])

    @defer.inlineCallbacks
    def test_lostDuringCommit(self) -> Any:
        """
        QMGR going away before it confirms an envelope makes
        C{commitTransaction} fail (SMTPS answers 451, not 250), and the
        commit is not made again on the next connection.
        """
        self.backend.pending = []
        d = self.qmgr.commitTransaction(ENVELOPE)
        yield until(lambda: self.backend.pending, 5, 0.01)
        self.qmgr.peer.protocol.transport.loseConnection()
        with self.assertRaises(QueueManagerUnavailable):
            yield d
        yield self.settle()
        self.assertEqual(len(self.backend.envelopes), 1)

    @defer.inlineCallbacks
    def test_lostSessionsClosed(self) -> Any:
        """
        When an SMTPS process's connection ends, QMGR closes the sessions
        it had opened (they would count against the open connections for
        ever).
        """
        yield self.qmgr.sessionOpen("S1", "192.0.2.1")
        yield self.qmgr.sessionOpen("S2", "192.0.2.2")
        self.qmgr.sessionClose("S1", "192.0.2.1")
        yield self.settle()
        yield self.qmgr.stopService()
        yield until(lambda: "S2" in self.backend.closed, 5, 0.01)
        self.assertEqual(sorted(self.backend.closed), ["S1", "S2"])
        self.assertEqual(self.backend.sessions, {})
        self.qmgr.startService()


class PendingContentTests(unittest.TestCase):
    """
    An SMTPS process that goes away between the commit of an envelope
    and that of its content.
    """

    @defer.inlineCallbacks
    def test_settled(self) -> Any:
        """
        When its connection ends, a transaction whose whole content is in
        CDB goes on (SMTPS may have answered 250), one whose content is
        missing or short is forgotten: neither waits for a restart of
        QMGR.
        """
        store = MemoryContentStore()
        backend = FakeQueueManager()
        path = socketPath(self)
        serve(self, queueManagerFactory(backend, store), path)
        proxy = QueueManagerProxy(reactor, path, waitForServer=5)
        proxy.startService()
        ids = ["S%018X" % (i,) for i in range(3)]
        for taId, content in zip(ids, [b"x" * 1024, b"x" * 10, None]):
            if content is not None:
                w = store.createWriter(taId)
                w.write(content)
                yield w.commit()
            yield proxy.commitTransaction(dict(ENVELOPE, id=taId))
        # the first one's content commit arrives, as usual
        yield proxy.contentCommitted(ids[0], True)
        yield proxy.stopService()
        yield until(lambda: len(backend.contents) == 3, 5, 0.01)
        self.assertEqual(
            sorted(backend.contents), [(ids[0], True), (ids[1], False), (ids[2], False)]
        )

    @defer.inlineCallbacks
    def test_settledWhole(self) -> Any:
        """
        A pending transaction whose content is whole goes on when the
        connection ends without its content commit.
        """
        store = MemoryContentStore()
        backend = FakeQueueManager()
        path = socketPath(self)
        serve(self, queueManagerFactory(backend, store), path)
        proxy = QueueManagerProxy(reactor, path, waitForServer=5)
        proxy.startService()
        w = store.createWriter(ENVELOPE["id"])
        w.write(b"x" * ENVELOPE["size"])
        yield w.commit()
        yield proxy.commitTransaction(ENVELOPE)
        yield proxy.stopService()
        yield until(lambda: backend.contents, 5, 0.01)
        self.assertEqual(backend.contents, [(ENVELOPE["id"], True)])


class UnreachableTests(unittest.TestCase):
    """
    Without QMGR, the proxy refuses: SMTPS never answers 250.
    """

    def setUp(self) -> None:
        self.path = socketPath(self)
        self.qmgr = QueueManagerProxy(reactor, self.path, waitForServer=0.2)
        running(self, self.qmgr)

    @defer.inlineCallbacks
    def test_sessionOpen(self) -> Any:
        """
        A new session is refused with 421 after C{wait_for_server}.
        """
        reply = yield self.qmgr.sessionOpen("S1", "192.0.2.1")
        self.assertEqual((reply["code"], reply["dsn"]), (421, "4.3.2"))

    @defer.inlineCallbacks
    def test_checkAcceptance(self) -> Any:
        """
        A new transaction is refused with 451.
        """
        reply = yield self.qmgr.checkAcceptance(100, "S1")
        self.assertEqual((reply["code"], reply["dsn"]), (451, "4.3.0"))

    @defer.inlineCallbacks
    def test_commitTransaction(self) -> Any:
        """
        An envelope cannot be committed: the call fails with
        L{QueueManagerUnavailable}, SMTPS answers 451.
        """
        with self.assertRaises(QueueManagerUnavailable):
            yield self.qmgr.commitTransaction(ENVELOPE)

    @defer.inlineCallbacks
    def test_serverComesBack(self) -> Any:
        """
        A call waiting for QMGR is answered once QMGR listens, within
        C{wait_for_server}.
        """
        self.qmgr.peer.waitForServer = 5
        backend = FakeQueueManager()
        d = self.qmgr.sessionOpen("S1", "192.0.2.1")
        yield deferLater(reactor, 0.2, lambda: None)
        self.assertFalse(d.called)
        serve(self, queueManagerFactory(backend), self.path)
        reply = yield d
        self.assertIsNone(reply)
        self.assertEqual(backend.sessions, {"S1": "192.0.2.1"})

    @defer.inlineCallbacks
    def test_serverRestarts(self) -> Any:
        """
        After the connection to QMGR ends, the proxy connects to the new
        QMGR by itself.
        """
        self.qmgr.peer.waitForServer = 5
        first = FakeQueueManager()
        port = serve(self, queueManagerFactory(first), self.path)
        self.assertIsNone((yield self.qmgr.sessionOpen("S1", "192.0.2.1")))
        yield port.stopListening()
        self.qmgr.peer.protocol.transport.loseConnection()
        yield deferLater(reactor, 0.05, lambda: None)
        os.unlink(self.path) if os.path.exists(self.path) else None
        second = FakeQueueManager()
        serve(self, queueManagerFactory(second), self.path)
        self.assertIsNone((yield self.qmgr.sessionOpen("S2", "192.0.2.1")))
        self.assertEqual(second.sessions, {"S2": "192.0.2.1"})


MB = 1024 * 1024


class PushedStateTests(QueueManagerTestMixin, unittest.TestCase):
    """
    QMGR pushes its acceptance state to each SMTPS process
    (L{smx.split.commands.Acceptance}); the proxy answers
    C{checkAcceptance} itself within its budget and asks QMGR otherwise.
    A real L{smx.queue.qmgr.QueueManager} (its clock a L{Clock}, its
    disk's free space set by the test) behind a real Unix socket.
    """

    def setUp(self) -> None:
        self.free = [100 * MB]
        test = self

        class Stat:
            f_frsize = 1

            @property
            def f_bavail(self) -> int:
                return test.free[0]

        self.setUpQueue(
            minDiskSpace=10 * MB, okDiskSpace=20 * MB, statvfs=lambda p: Stat()
        )
        self.path = socketPath(self)
        self.factory = queueManagerFactory(self.qmgr)
        self.port = serve(self, self.factory, self.path)
        self.asked = []  # type: List[tuple]
        check = self.qmgr.checkAcceptance

        def counted(size: int, sessionId: Any = None) -> Any:
            self.asked.append((size, sessionId))
            return check(size, sessionId)

        self.qmgr.checkAcceptance = counted  # type: ignore[method-assign]
        self.proxy = QueueManagerProxy(reactor, self.path, waitForServer=5)
        running(self, self.proxy)

    @defer.inlineCallbacks
    def test_answeredLocally(self) -> Any:
        """
        After the connection, SMTPS knows its budget (a quarter of the
        free bytes above C{min_disk_space}, shared by the SMTPS
        processes) and answers a C{SIZE=} within it at once, without
        asking QMGR; a size beyond what is left of it is asked for, and
        QMGR reserves it for the session.
        """
        yield self.proxy.sessionOpen("s1", "127.0.0.1")
        self.assertEqual(self.proxy.budget, 90 * MB // 4)
        d = self.proxy.checkAcceptance(20 * MB, "s1")
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(self.asked, [])
        # s1's next transaction replaces its reservation
        self.assertIsNone(self.successResultOf(self.proxy.checkAcceptance(1, "s1")))
        self.assertIsNone(
            self.successResultOf(self.proxy.checkAcceptance(20 * MB, "s2"))
        )
        self.assertEqual(self.asked, [])
        reply = yield self.proxy.checkAcceptance(5 * MB, "s3")
        self.assertIsNone(reply)
        self.assertEqual(self.asked, [(5 * MB, "s3")])
        self.assertEqual(self.qmgr.disk.reserved, 5 * MB)
        # a session that ends gives its part back
        self.proxy.sessionClose("s2", "127.0.0.1")
        self.assertIsNone(
            self.successResultOf(self.proxy.checkAcceptance(20 * MB, "s4"))
        )

    @defer.inlineCallbacks
    def test_diskShort(self) -> Any:
        """
        Once the disk is short, QMGR pushes a budget of 0 at the next
        session (its state is measured at most every 0.1 s) and every
        MAIL is asked for: 452 4.3.1, as in one process.
        """
        yield self.proxy.sessionOpen("s1", "127.0.0.1")
        self.assertTrue(self.proxy.budget)
        self.free[0] = 5 * MB
        self.clock.advance(1)
        yield self.proxy.sessionOpen("s2", "127.0.0.1")
        self.assertEqual(self.proxy.budget, 0)
        reply = yield self.proxy.checkAcceptance(0, "s2")
        self.assertEqual((reply["code"], reply["dsn"]), (452, "4.3.1"))
        self.assertEqual(self.asked, [(0, "s2")])
        # room again: the next session's MAIL is answered locally again
        self.free[0] = 100 * MB
        self.clock.advance(1)
        yield self.proxy.sessionOpen("s3", "127.0.0.1")
        self.assertIsNone(self.successResultOf(self.proxy.checkAcceptance(0, "s3")))
        self.assertEqual(len(self.asked), 1)

    @defer.inlineCallbacks
    def test_iqdbFull(self) -> Any:
        """
        While IQDB is half full, every MAIL is asked for, so that a full
        IQDB is refused with 452 4.3.2 as in one process.
        """
        self.stop()
        self.changes.update(iqdbMaxEntries=2, aqMaxEntries=1)
        self.qmgr = self.makeQueueManager()
        self.qmgr.startService()
        self.factory.qmgr = self.qmgr
        self.factory._state = self.qmgr.acceptanceState
        self.agent.pending = []
        self.clock.advance(1)
        yield self.proxy.sessionOpen("s1", "127.0.0.1")
        self.assertTrue(self.proxy.budget)
        self.submit(recipients=("1@y.test", "2@y.test", "3@y.test"))
        self.clock.advance(1)
        yield self.proxy.sessionOpen("s2", "127.0.0.1")
        self.assertEqual(self.proxy.budget, 0)
        reply = yield self.proxy.checkAcceptance(0, "s2")
        self.assertEqual((reply["code"], reply["dsn"]), (452, "4.3.2"))

    @defer.inlineCallbacks
    def test_connectionLost(self) -> Any:
        """
        Without the connection its state came over, the proxy answers
        nothing itself: without QMGR, MAIL gets 451 after
        C{wait_for_server}.
        """
        yield self.proxy.sessionOpen("s1", "127.0.0.1")
        self.assertTrue(self.proxy.budget)
        yield self.port.stopListening()
        for server in list(self.factory.servers):
            server.transport.loseConnection()
        yield until(lambda: self.proxy.peer.protocol is None, 5, 0.01)
        self.assertEqual(self.proxy.budget, 0)
        self.proxy.peer.waitForServer = 0.1
        reply = yield self.proxy.checkAcceptance(0, "s1")
        self.assertEqual((reply["code"], reply["dsn"]), (451, "4.3.0"))
        self.assertEqual(self.asked, [])


class FullDiskTests(QueueManagerTestMixin, unittest.TestCase):
    """
    The pushed budget with QMGR's queue on a real 20 MB tmpfs (root
    only) that fills: SMTPS asks QMGR again and gets its 452 4.3.1, and
    answers by itself again once there is room.
    """

    def setUp(self) -> None:
        mount = mountTmpfs(self, "20m")
        self.mktemp = lambda: os.path.join(mount, "queue")  # type: ignore[method-assign]
        self.mount = mount
        self.setUpQueue(minDiskSpace=2 * MB, okDiskSpace=4 * MB)
        path = socketPath(self)
        serve(self, queueManagerFactory(self.qmgr), path)
        self.proxy = QueueManagerProxy(reactor, path, waitForServer=5)
        running(self, self.proxy)

    @defer.inlineCallbacks
    def test_fills(self) -> Any:
        """
        A budget while there is room; 0 and QMGR's 452 4.3.1 once the
        file system is full (at the next session); a budget again once
        the file is removed.
        """
        yield self.proxy.sessionOpen("s1", "127.0.0.1")
        self.assertGreater(self.proxy.budget, MB)
        self.assertIsNone(self.successResultOf(self.proxy.checkAcceptance(1000, "s1")))
        filler = fill(self.mount)
        self.clock.advance(1)
        yield self.proxy.sessionOpen("s2", "127.0.0.1")
        self.assertEqual(self.proxy.budget, 0)
        reply = yield self.proxy.checkAcceptance(1000, "s2")
        self.assertEqual((reply["code"], reply["dsn"]), (452, "4.3.1"))
        os.unlink(filler)
        self.clock.advance(1)
        yield self.proxy.sessionOpen("s3", "127.0.0.1")
        self.assertGreater(self.proxy.budget, MB)
        self.assertIsNone(self.successResultOf(self.proxy.checkAcceptance(1000, "s3")))

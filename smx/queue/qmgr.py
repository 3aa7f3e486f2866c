# -*- test-case-name: smx.queue.test.test_qmgr -*-
"""
NAME
    smx.queue.qmgr - QMGR, the queue manager of smx

SYNOPSIS
    settings = QueueSettings.fromConfiguration(cfg)
    qmgr = QueueManager(reactor, settings, contentStore, resolver,
                        deliveryAgent, logger=Logger("qmgr"))
    qmgr.setServiceParent(application)
    qmgr = QueueManager.fromConfiguration(cfg, contentStore, resolver,
                                          deliveryAgent, reactor)

DESCRIPTION
    QMGR takes responsibility for every transaction SMTPS accepts (seed
    §5.7, §10): it writes the envelope to IBDB and answers only once it is
    on stable storage; it moves the recipients to AQ at once and lets the
    scheduler (L{smx.queue.scheduler}) deliver them through the delivery
    agent; temporary failures go to DEFEDB with a next-time-to-try;
    permanent ones and expired ones are bounced (RFC 3464,
    L{smx.queue.dsn}).  It applies the incoming connection limits for
    SMTPS and the disk space limits (seed §5.7.1, §6.10.1).

    On start it rebuilds the queue from IBDB, DEFEDB and CDB
    (L{smx.queue.recovery}), writes the still-needed envelopes into a new
    IBDB file and removes the old files.

    The directory layout under the queue directory: C{ibdb/} (IBDB),
    C{defedb/} (DEFEDB, unless C{DEFEDB { base_directory }} says
    otherwise), the sixteen CDB directories under C{CDB_base_directory},
    and C{qmgr.pid}, locked while QMGR runs (L{smx.queue.lockfile}).

    A full disk does not stop QMGR: new mail is refused with C{452 4.3.1}
    (L{smx.queue.diskspace}, measured per transaction), what DEFEDB cannot
    take stays in memory and in IBDB, and DEFEDB is reopened and caught up
    once there is room again (L{smx.queue.defedbwatch}).

CONFIGURATION PARAMETERS
    qmgr: AQ_max_entries, SMAR_timeout, control_socket, DEFEDB { ... },
    delivery_timeout, DSN_max_delay, flags (header_only_in_bounce), IBDB {
    max_commit_delay, size, max_open_TAs }, IQDB { max_cache_entries },
    log_level, max_errors_per_bounce, min_disk_space, ok_disk_space,
    OCC_max_entries, queuereturn_timeout, queuedelay_timeout,
    retry_max_delay, retry_min_delay, smtpc_initial_connections,
    smtpc_max_connections, smtps_max_connection_rate,
    smtps_max_open_connections, wait_for_server, conf.
    global: hostname, CDB_base_directory.

SECURITY
    The queue directories are created mode 0700 (IBDB, DEFEDB) and 0771
    (CDB), seed §4.1.  The control socket is created mode 0660.

DIAGNOSTICS
    Problems found while recovering (damaged records, missing or orphaned
    content) are logged once each with C{sev=ERR} or C{sev=WARN} and the
    file.  An envelope that cannot be written makes C{commitTransaction}
    errback (SMTPS answers 451); QMGR keeps running.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

from twisted.application import service
from twisted.internet import defer, task
from twisted.python.failure import Failure
from zope.interface import implementer

from smx.ids import ClientIdGenerator, ServerIdGenerator
from smx.interfaces import (
    IAddressResolver,
    IContentStore,
    IDeliveryAgent,
    IQueueManager,
)
from smx.log import Logger
from smx.queue import ibdb as ibdbmod
from smx.queue.active import localFailure
from smx.queue.bounce import Bouncer
from smx.queue.cdb import ContentSync, FileContentStore
from smx.queue.confmap import ConfigurationMap
from smx.queue.connections import IncomingControl, SlowStart
from smx.queue import debug as dbg
from smx.queue.defedb import DefedbError, DeferredEnvelopeDB
from smx.queue.defedbwatch import DefedbWatcher
from smx.queue.diskspace import DiskSpaceMonitor
from smx.queue.envelope import Recipient, Transaction
from smx.queue.lockfile import QueueLock
from smx.queue.recovery import RecoveryResult, recoverQueue
from smx.queue.scheduler import Scheduler
from smx.queue.settings import QueueSettings
from smx.queue.store import QueueStore
from smx.values import (
    Envelope,
    EnvelopeData,
    ReplyData,
    StatusData,
)

if TYPE_CHECKING:
    from twisted.python.threadpool import ThreadPool

    from smx.config.model import Configuration

QUEUE_FULL = {"code": 452, "dsn": "4.3.2", "text": "too many queued transactions"}
#: seconds QMGR waits at its stop for the results of deliveries under way
#: (the MCP's SIGKILL follows a SIGTERM after 10)
STOP_WAIT = 5.0


@implementer(IQueueManager)
class QueueManager(service.Service):
    """
    The queue manager: an L{IQueueManager} and a Twisted service.

    @ivar store: the L{QueueStore} (queued transactions, IBDB, DEFEDB).
    @ivar scheduler: the L{Scheduler} (AQ, deliveries).
    @ivar recovered: the L{smx.queue.recovery.RecoveryResult} of the start.
    """

    name = "qmgr"  # type: ignore[assignment]

    def __init__(
        self,
        reactor: Any,
        settings: QueueSettings,
        contentStore: IContentStore,
        resolver: IAddressResolver,
        deliveryAgent: IDeliveryAgent,
        logger: Optional[Logger] = None,
        processId: int = 0xFE,
        statvfs: Callable[[str], os.statvfs_result] = os.statvfs,
        threadPool: Optional[ThreadPool] = None,
    ) -> None:
        """
        @param settings: the L{QueueSettings} (every option QMGR uses).
        @param processId: the process id in transaction ids (App. C.1).
        @param statvfs: measures free disk space (tests).
        @param threadPool: where content is unlinked and DEFEDB's
            groups are committed (C{None}: in the reactor thread).
        """
        s = settings
        self.settings = settings
        self.reactor = reactor
        self.queueDirectory = os.path.abspath(s.queueDirectory)
        self.contentStore: IContentStore = contentStore
        self.resolver: IAddressResolver = resolver
        self.deliveryAgent: IDeliveryAgent = deliveryAgent
        #: called by the C{reload} control command besides the maps (the
        #: certificates of SMTPS, L{smx.components}); a C{dict} one
        #: returns is added to the command's result
        self.reloadHooks = []  # type: List[Callable[[], Optional[Dict[str, Any]]]]
        self.logger = logger or Logger("qmgr")
        if s.debugLevels:
            # qmgr -x, debug_level: the debug categories (App. E)
            self.logger = dbg.DebugLogger(self.logger, s.debugLevels)
        self.hostname = s.hostname
        self.ibdbDirectory = os.path.join(self.queueDirectory, "ibdb")
        self.iqdbMaxEntries = s.iqdbMaxEntries
        self.checkpointDelay = s.checkpointDelay
        self.controlSocket = s.controlSocket
        # IBDB commits in the reactor thread, at the end of a turn: a
        # thread hand-off per commit (futexes, GIL hand-overs, the waker)
        # cost more CPU than the sync holds the reactor up, in a QMGR of
        # its own and embedded (relay at 10 sessions, split: QMGR 0.57 ->
        # 0.46 ms per message; embedded: 1.44 -> 1.14 ms in all)
        self.log = ibdbmod.IncomingBackupLog.fromSettings(
            s, reactor, self.ibdbDirectory
        )
        if isinstance(contentStore, FileContentStore):
            # the contents SMTPS writes unsynced (syncContent)
            self.log.contentSync = ContentSync(contentStore, s.contentSync)
        self.defedb = DeferredEnvelopeDB.fromSettings(
            s, report=self._reportProblem, statvfs=statvfs
        )
        # deferrals are committed to DEFEDB in groups (smx.queue.store):
        # in a running QMGR (one with a thread pool) those of
        # max_commit_delay, as IBDB's deferral records; else (tests on a
        # Clock) those of one reactor turn
        self.store = QueueStore(
            self.log,
            self.defedb,
            contentStore,
            self.logger,
            clock=reactor,
            groupDelay=s.maxCommitDelay if threadPool is not None else 0.0,
        )
        self.lock = QueueLock(self.queueDirectory)
        self.conf = ConfigurationMap(s.confMapPath, self._reportProblem)
        self.incoming = IncomingControl(
            reactor, s.smtpsMaxConnectionRate, s.smtpsMaxOpenConnections, self.conf
        )
        self.slowStart = SlowStart(
            reactor,
            s.smtpcInitialConnections,
            s.smtpcMaxConnections,
            self.conf,
            cacheSize=s.occMaxEntries,
            deadTime=s.retryMinDelay,
        )
        paths = [self.queueDirectory]
        base = getattr(contentStore, "baseDirectory", None)
        if base:
            paths.append(base)
        self.disk = DiskSpaceMonitor(
            paths, s.minDiskSpace, s.okDiskSpace, statvfs=statvfs
        )
        self._taIds = ServerIdGenerator(processId, clock=reactor.seconds)
        self._daIds = ClientIdGenerator(processId, clock=reactor.seconds)
        self.bouncer = Bouncer(
            contentStore,
            self._submitInternal,
            self._taIds.next,
            s.hostname,
            reactor,
            self.logger,
            maxErrors=s.maxErrorsPerBounce,
            headersOnly=s.headerOnlyInBounce,
            queuereturnTimeout=s.queuereturnTimeout,
        )
        self.scheduler = Scheduler(
            reactor,
            self.store,
            resolver,
            deliveryAgent,
            self.bouncer,
            self.slowStart,
            self.logger,
            self._daIds.next,
            s,
        )
        self.recovered = None  # type: Optional[RecoveryResult]
        self.defedbWatch = DefedbWatcher(
            reactor,
            self.defedb,
            self.store,
            self.scheduler,
            contentStore,
            self.logger,
            finished=lambda: self.recovered.finished if self.recovered else set(),
            report=self._reportProblem,
        )
        self._checkpointer = None  # type: Any
        self._controlPort = None  # type: Any
        self._accepted = 0
        #: transactions stored with contentPending, waiting for contentCommitted
        self._awaitingContent = {}  # type: Dict[str, Transaction]
        self._started = reactor.seconds()
        self._wasShort = False

    # -- configuration ------------------------------------------------------

    @classmethod
    def fromConfiguration(
        cls,
        cfg: Configuration,
        contentStore: IContentStore,
        resolver: IAddressResolver,
        deliveryAgent: IDeliveryAgent,
        reactor: Any,
        logger: Optional[Logger] = None,
        threadPool: Optional[ThreadPool] = None,
    ) -> "QueueManager":
        """
        Build a queue manager from an L{smx.config} configuration (the
        C{qmgr} section and the global options).
        """
        if logger is None:
            from smx.log import loggerFromConfiguration

            logger = loggerFromConfiguration("qmgr", cfg.section("qmgr"))
        return cls(
            reactor,
            QueueSettings.fromConfiguration(cfg),
            contentStore,
            resolver,
            deliveryAgent,
            logger=logger,
            threadPool=threadPool,
        )

    # -- service ------------------------------------------------------------

    def _reportProblem(self, text: str) -> None:
        self.logger.error("QueueManager.recover", problem=text)

    def startService(self) -> None:
        """
        Recover the queue, open the databases, start delivering.
        """
        os.makedirs(self.queueDirectory, exist_ok=True)
        self.lock.acquire()
        service.Service.startService(self)
        defedb = self.defedb  # type: Any
        try:
            self.defedb.open()
        except DefedbError as e:
            # QMGR runs on IBDB alone; DEFEDB is opened and merged when it
            # can be (smx.queue.defedbwatch)
            self.logger.critical("QueueManager.startService", error=str(e))
            self.defedbWatch.mergeNeeded = True
            self.store.defedbUnknown = True
            defedb = None
        self.conf.open()
        self.recovered = recoverQueue(
            self.ibdbDirectory, defedb, self.contentStore, self._reportProblem
        )
        self.log.start()
        for taId, indices in self.recovered.staleDefedb:
            self.store.removeFromDefedb(taId, indices)
        for taId in self.recovered.finished:
            self.contentStore.remove(taId)
        ds = []
        for ta in self.recovered.transactions.values():
            self.store.transactions[ta.id] = ta
            if ta.needsLog():
                ds.append(self.store.logNew(ta))
        self.log.commit()
        failed = [d for d in ds if isinstance(d.result, defer.Failure)] if ds else []
        for d in ds:
            d.addErrback(lambda f: None)
        if not failed:
            self.log.removeOlderFiles()
        else:
            self.logger.critical(
                "QueueManager.startService",
                error="cannot rewrite IBDB; old files kept",
            )
        self.logger.notice(
            stat="started",
            recovered=len(self.recovered.transactions),
            orphans=len(self.recovered.orphans),
            missing=len(self.recovered.missing),
        )
        now = self.reactor.seconds()
        local = 0
        for ta in list(self.store.transactions.values()):
            queued = [r for r in ta.recipients.values() if r.state == "queued"]
            for r in ta.recipients.values():
                if r.state == "deferred":
                    if r.nextTry > now and localFailure(r.reply):
                        # a failure inside smx (SMAR, SMTPC, a slot): this
                        # QMGR, and perhaps they, started anew
                        r.nextTry = now
                        local += 1
                    self.scheduler.retryAt(ta, r)
            if queued and ta.quarantine:
                self._quarantine(ta)
            elif queued:
                self.scheduler.enqueue(ta, queued)
            if ta.isDone():
                self.store.checkDone(ta)
        if local:
            self.logger.notice(stat="retry", reason="local failures", rcpts=local)
        self.defedbWatch.start()
        if self.checkpointDelay:
            self._checkpointer = task.LoopingCall(self._checkpoint)
            self._checkpointer.clock = self.reactor
            self._checkpointer.start(self.checkpointDelay, now=False)
        if self.controlSocket:
            from smx.queue.control import listenControl

            try:
                self._controlPort = listenControl(
                    self.reactor, self.controlSocket, self
                )
            except Exception as e:
                self.logger.error(
                    "QueueManager.startService", file=self.controlSocket, error=str(e)
                )

    def _checkpoint(self) -> None:
        try:
            self.defedb.checkpoint()
        except DefedbError as e:
            self.logger.error("QueueManager.checkpoint", error=str(e))

    def stopService(self) -> Any:
        """
        Wait (at most L{STOP_WAIT} seconds) for the results of the
        deliveries under way, so that a message delivered while smx stops
        is not delivered again at the next start; then commit what waits
        for IBDB and close the databases.
        """
        service.Service.stopService(self)
        self.scheduler.stop()
        if self._checkpointer is not None and self._checkpointer.running:
            self._checkpointer.stop()
        self.defedbWatch.stop()
        active = self.scheduler.activeQueue
        if active.inFlight:
            self.logger.notice(stat="waiting for deliveries", n=len(active.inFlight))
            d = active.settle(STOP_WAIT)
            d.addCallback(lambda _: self._close())
            return d
        return self._close()

    def _close(self) -> Any:
        self.incoming.stop()
        self.store.writePending()
        self.log.stop()
        if self.log.contentSync is not None:
            self.log.contentSync.close()
        if self.defedb.isOpen:
            self._checkpoint()
        self.defedb.close()
        self.lock.release()
        if self._controlPort is not None:
            d = defer.maybeDeferred(self._controlPort.stopListening)
            self._controlPort = None
            return d
        return None

    # -- IQueueManager ------------------------------------------------------

    def sessionOpen(
        self, sessionId: str, clientAddress: str
    ) -> defer.Deferred[Optional[ReplyData]]:
        # over the open limit: a while for a close from another SMTPS
        d = self.incoming.admit(sessionId, clientAddress)
        if self.logger.debugLevels is None:
            return d

        def answered(reply: Optional[ReplyData]) -> Optional[ReplyData]:
            dbg.debug(
                self.logger,
                dbg.SMTPS,
                2,
                ss_sess=sessionId,
                client=clientAddress,
                open="refused" if reply else "ok",
            )
            return reply

        return d.addCallback(answered)

    def sessionClose(self, sessionId: str, clientAddress: str) -> None:
        if self.logger.debugLevels is not None:
            dbg.debug(self.logger, dbg.SMTPS, 2, ss_sess=sessionId, close="ok")
        self.disk.release(sessionId)
        self.incoming.sessionClose(sessionId, clientAddress)

    def checkAcceptance(
        self, size: int, sessionId: Optional[str] = None
    ) -> defer.Deferred[Optional[ReplyData]]:
        inFlight = getattr(self.contentStore, "bytesInFlight", 0)
        reply = self.disk.check(size, inFlight, sessionId)
        self._diskMeasured()
        if reply is not None:
            if not self.disk.short:
                # this one does not fit beside those in flight
                self.logger.info(
                    ss_sess=sessionId,
                    stat="disk space short for this size",
                    size=size,
                    free=self.disk.free,
                    reserved=self.disk.reserved,
                    inflight=inFlight,
                )
            return defer.succeed(reply)
        if self.scheduler.iqdbFull(self.iqdbMaxEntries):
            if sessionId is not None:
                self.disk.release(sessionId)
            return defer.succeed(dict(QUEUE_FULL))
        return defer.succeed(None)

    def _diskMeasured(self) -> None:
        """Log the change into or out of the short state."""
        if self.disk.short != self._wasShort:
            self._wasShort = self.disk.short
            if self.disk.short:
                self.logger.error(
                    "QueueManager.checkAcceptance",
                    stat="disk space short",
                    free=self.disk.free,
                )
            else:
                self.logger.notice(stat="disk space ok", free=self.disk.free)

    def acceptanceState(self) -> Tuple[Optional[ReplyData], int]:
        """
        What SMTPS processes answer C{checkAcceptance} from without asking
        (split mode, L{smx.split.queue}), the disk measured now.

        @return: the reply a new transaction gets now (C{None}: accepted)
            and the bytes of C{SIZE=} that may be admitted without asking:
            the free bytes above C{min_disk_space} less those reserved and
            in flight, 0 while refusing or while IQDB is half full.
        """
        inFlight = getattr(self.contentStore, "bytesInFlight", 0)
        reply = self.disk.check(0, inFlight)
        self._diskMeasured()
        if reply is not None:
            return reply, 0
        limit = self.iqdbMaxEntries
        if self.scheduler.iqdbFull(limit):
            return dict(QUEUE_FULL), 0
        if len(self.scheduler.ready) * 2 >= limit:
            return None, 0
        free = self.disk.free or 0
        return None, max(0, free - self.disk.reserved - inFlight - self.disk.minimum)

    def commitTransaction(self, envelope: EnvelopeData) -> defer.Deferred[None]:
        try:
            # the shape first (smx.values: one named error for any of it)
            Envelope.fromData(envelope)
        except (KeyError, TypeError, ValueError) as e:
            return defer.fail(ValueError("bad envelope: %s" % (e,)))
        return self.commitChecked(envelope)

    def commitChecked(self, envelope: EnvelopeData) -> defer.Deferred[None]:
        """
        L{commitTransaction} of an envelope whose shape was checked
        already (by QMGR's AMP server, L{smx.split.queue}).
        """
        try:
            ta = Transaction.fromEnvelope(envelope)
        except (KeyError, TypeError, ValueError) as e:
            return defer.fail(ValueError("bad envelope: %s" % (e,)))
        if not ta.recipients:
            return defer.fail(ValueError("envelope without recipients"))
        if ta.id in self.store.transactions:
            return defer.fail(ValueError("transaction %s already queued" % ta.id))
        content = None  # type: Optional[str]
        syncContent = bool(envelope.get("syncContent"))
        if syncContent:
            if self.log.contentSync is None:
                return defer.fail(ValueError("this QMGR does not sync contents"))
            content = self.contentStore.path(ta.id)  # type: ignore[attr-defined]
            # in IBDB as pending: recovery checks that the content is whole
            ta.contentPending = True
        if ta.session:
            # its content is written: the SIZE= reserved at MAIL goes
            self.disk.release(ta.session)
        for r in ta.recipients.values():
            r.state = "queued"
        if self.logger.debugLevels is not None:
            dbg.debug(
                self.logger,
                dbg.SMTPS,
                1,
                ss_ta=ta.id,
                commit="envelope",
                nrcpts=len(ta.recipients),
                size=ta.size,
            )
        d = self.store.logNew(ta, content)
        d.addCallback(self._cbCommitted, ta, syncContent)
        d.addErrback(self._ebCommit, ta)
        return d

    def _cbCommitted(
        self, _: object, ta: Transaction, contentSynced: bool = False
    ) -> None:
        if self.logger.debugLevels is not None:
            dbg.debug(self.logger, dbg.IBDB, 1, ss_ta=ta.id, ibdb="synced")
        self.store.transactions[ta.id] = ta
        if contentSynced:
            # synced with the envelope: on stable storage like it
            ta.contentPending = False
        elif ta.contentPending:
            self._awaitingContent[ta.id] = ta
            return None
        self._queued(ta)
        return None

    def _queued(self, ta: Transaction) -> None:
        # accepted: stored, content included, and handed to the scheduler
        self._accepted += 1
        self.logger.info(
            ss_ta=ta.id,
            mail="<%s>" % (ta.sender,),
            nrcpts=len(ta.recipients),
            size=ta.size,
            stat="queued",
        )
        if ta.quarantine:
            self._quarantine(ta)
            return
        self.scheduler.enqueue(ta, list(ta.recipients.values()))

    def _quarantine(self, ta: Transaction) -> None:
        """A milter quarantined the message: hold it (qmgrctl release)."""
        n = self._control_hold(ta, ta.live())
        self.logger.notice(ss_ta=ta.id, quarantine=ta.quarantine, held=n)

    def contentCommitted(
        self, transactionId: str, stored: bool
    ) -> defer.Deferred[None]:
        ta = self._awaitingContent.pop(transactionId, None)
        if self.logger.debugLevels is not None:
            dbg.debug(
                self.logger, dbg.SMTPS, 1, ss_ta=transactionId, content=int(stored)
            )
        if ta is None:
            return defer.fail(KeyError(transactionId))
        if stored:
            ta.contentPending = False
            self._queued(ta)
            return defer.succeed(None)
        # never acknowledged: forget it (a D record; there is no content)
        for r in ta.recipients.values():
            r.state = "deleted"
        self.store.checkDone(ta)
        return defer.succeed(None)

    def _ebCommit(self, failure: Failure, ta: Transaction) -> Failure:
        self.logger.error(
            "QueueManager.commitTransaction", ss_ta=ta.id, error=str(failure.value)
        )
        return failure

    def _submitInternal(self, envelope: EnvelopeData) -> defer.Deferred:
        d = self.commitTransaction(envelope)

        def _eb(failure: Failure) -> Failure:
            self.contentStore.remove(envelope["id"])
            return failure

        return d.addErrback(_eb)

    def status(self) -> defer.Deferred[StatusData]:
        counts = {}  # type: Dict[str, int]
        for ta in self.store.transactions.values():
            for r in ta.recipients.values():
                counts[r.state] = counts.get(r.state, 0) + 1
        now = self.reactor.seconds()
        uptime = max(now - self._started, 1e-9)
        return defer.succeed(
            {
                "transactions": len(self.store.transactions),
                "recipients": counts,
                "iqdb": self.scheduler.queuedCount(),
                "iqdbMax": self.iqdbMaxEntries,
                "aq": self.scheduler.active,
                "aqMax": self.scheduler.aqMaxEntries,
                "accepted": self._accepted,
                "deliveries": self.scheduler.deliveries,
                "delivered": self.scheduler.delivered,
                "bounced": self.scheduler.failed,
                "deferred": self.scheduler.deferred,
                "dsnsQueued": self.bouncer.sent,
                "doubleBounces": self.bouncer.dropped,
                "acceptRate": self._accepted / uptime,
                "ibdbFiles": self.log.fileCount(),
                "ibdbCommits": self.log.commits,
                "defedb": self.defedb.isOpen,
                "defedbPending": self.store.pendingCount(),
                "sessions": self.incoming.openSessions(),
                "sessionsRefused": self.incoming.refused,
                "limits": {
                    "smtps_max_connection_rate": self.incoming.maxRate,
                    "smtps_max_open_connections": self.incoming.maxOpen,
                    "smtpc_initial_connections": self.slowStart.initial,
                    "smtpc_max_connections": self.slowStart.maximum,
                    "conf": dict(self.conf.entries),
                },
                "destinations": self.slowStart.state(),
                "diskShort": self.disk.short,
                "uptime": uptime,
            }
        )

    def listQueue(self) -> defer.Deferred[List[StatusData]]:
        return defer.succeed(
            [
                ta.describe()
                for _, ta in sorted(self.store.transactions.items())
                if not ta.finished
            ]
        )

    def reopenMaps(self) -> None:
        """
        Reopen the conf map (SIGUSR1, seed §6.7).
        """
        self.conf.reopen()
        self.logger.notice(stat="conf map reopened", entries=len(self.conf.entries))

    def control(
        self,
        command: str,
        transactionId: Optional[str] = None,
        recipient: Optional[str] = None,
    ) -> defer.Deferred[StatusData]:
        if command == "reload":
            self.reopenMaps()
            result = {"command": command, "reloaded": True}
            for hook in self.reloadHooks:
                result.update(hook() or {})
            reload = getattr(self.resolver, "reload", None)
            d = defer.maybeDeferred(reload) if reload else defer.succeed(None)
            return d.addCallback(lambda _: result)
        if command not in ("flush", "hold", "release", "delete"):
            return defer.fail(ValueError("unknown command %r" % (command,)))
        if transactionId is None:
            if command == "flush":
                self.slowStart.resume()  # as postqueue -f: dead ones too
                n = self.scheduler.flush()
                return defer.succeed({"command": command, "recipients": n})
            return defer.fail(ValueError("%s needs a transaction id" % (command,)))
        ta = self.store.transactions.get(transactionId)
        if ta is None:
            return defer.fail(KeyError(transactionId))
        rcpts = self._select(ta, recipient)
        if rcpts is None:
            return defer.fail(KeyError(recipient))
        handler = getattr(self, "_control_" + command)
        n = handler(ta, rcpts)
        self.logger.notice(ss_ta=ta.id, control=command, rcpts=n)
        return defer.succeed({"command": command, "id": ta.id, "recipients": n})

    def _select(
        self, ta: Transaction, recipient: Optional[str]
    ) -> Optional[List[Recipient]]:
        live = ta.live()
        if recipient is None:
            return live
        out = [
            r
            for r in live
            if str(r.index) == str(recipient)
            or r.address.lower() == str(recipient).lower()
        ]
        return out or None

    def retryReply(self, reply: str) -> int:
        """
        Try again now the deferred recipients whose last reply is
        C{reply} (in split mode, those deferred because no SMTPC process
        was connected, when one connects again).

        @return: how many.
        """
        if not self.running:
            return 0
        now = self.reactor.seconds()
        n = 0
        for ta in list(self.store.transactions.values()):
            for r in ta.recipients.values():
                if r.state == "deferred" and r.reply == reply and r.nextTry > now:
                    r.nextTry = now
                    self.scheduler.retryAt(ta, r)
                    n += 1
        if n:
            self.logger.notice(stat="retry", reply=reply, rcpts=n)
        return n

    def _control_flush(self, ta: Transaction, rcpts: List[Recipient]) -> int:
        n = 0
        for r in rcpts:
            if r.state == "deferred":
                r.nextTry = self.reactor.seconds()
                self.scheduler.retryAt(ta, r)
                n += 1
        return n

    def _control_hold(self, ta: Transaction, rcpts: List[Recipient]) -> int:
        held = [r for r in rcpts if r.state in ("queued", "deferred")]
        for r in held:
            r.state = "held"
        # in DEFEDB, so that the hold outlives a restart
        self.store.defer(ta, held)
        return len(held)

    def _control_release(self, ta: Transaction, rcpts: List[Recipient]) -> int:
        held = [r for r in rcpts if r.state == "held"]
        now = self.reactor.seconds()
        for r in held:
            r.state = "deferred"
            r.nextTry = now
        self.store.defer(ta, held)
        for r in held:
            self.scheduler.retryAt(ta, r)
        return len(held)

    def _control_delete(self, ta: Transaction, rcpts: List[Recipient]) -> int:
        gone = []
        for r in rcpts:
            if r.state == "active":
                r.deleteRequested = True
            else:
                r.state = "deleted"
                gone.append(r)
        self.store.finish(ta, gone)
        return len(rcpts)


def contentStoreFromConfiguration(
    cfg: Configuration, threadPool: Optional[ThreadPool] = None, create: bool = True
) -> FileContentStore:
    """
    The CDB of a configuration: C{CDB_base_directory} (global), or the
    queue directory.
    """
    return FileContentStore(
        QueueSettings.fromConfiguration(cfg).cdbDirectory,
        threadPool=threadPool,
        create=create,
    )

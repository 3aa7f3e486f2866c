# -*- test-case-name: smx.queue.test.test_bounce,smx.queue.test.test_qmgr -*-
"""
NAME
    smx.queue.bounce - queue bounces and delay warnings as new transactions

SYNOPSIS
    bouncer = Bouncer(contentStore, submit, idGenerator, hostname, clock,
                      maxErrors=10, headersOnly=False)
    d = bouncer.report("failed", transaction, failureDicts)

DESCRIPTION
    A report (L{smx.queue.dsn}) goes to the envelope sender of the
    original transaction as a new transaction of QMGR's own: its content is
    written to CDB, its envelope (sender C{<>}) committed to IBDB through
    C{submit} like any accepted transaction.  At most C{maxErrors}
    recipients go into one report; more make more reports.  The first
    bounce of a transaction returns the whole message, later ones (and all
    with C{header_only_in_bounce} or C{RET=HDRS}) only its header.

    No report is sent for a transaction whose sender is C{<>}: a failing
    bounce is a double bounce, logged and dropped, never looped.

    With C{milters} (qmgr's C{milters} list, L{smx.mail.milterinternal.
    InternalMilters}) each report goes through the milters before it is
    written, as Postfix's C{non_smtpd_milters} see its bounces with
    C{internal_mail_filter_classes = bounce}.

CONFIGURATION PARAMETERS
    max_errors_per_bounce, flags header_only_in_bounce, hostname

SECURITY
    Reports go only to the envelope sender.

DIAGNOSTICS
    A dropped double bounce is logged with C{sev=WARN}.  A report that
    cannot be stored errbacks; the caller retries later.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Tuple

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime

from smx.interfaces import IContentStore
from smx.log import Logger
from smx.queue import dsn
from smx.queue.envelope import FailureData, Transaction
from smx.values import EnvelopeData

#: the milters of QMGR's own mail (L{smx.mail.milterinternal.InternalMilters}):
#: C{(content, envelope)} to a Deferred of C{(content, envelope)}, or of
#: C{None} to drop the message
InternalFilter = Callable[
    [bytes, EnvelopeData], "defer.Deferred[Optional[Tuple[bytes, EnvelopeData]]]"
]


class Bouncer:
    """
    @ivar sent: number of reports queued.
    @ivar dropped: number of double bounces dropped.
    """

    def __init__(
        self,
        contentStore: IContentStore,
        submit: Callable[[EnvelopeData], defer.Deferred],
        nextId: Callable[[], str],
        hostname: str,
        clock: IReactorTime,
        logger: Logger,
        maxErrors: int,
        headersOnly: bool,
        queuereturnTimeout: float,
    ) -> None:
        self.contentStore = contentStore
        self.submit = submit
        self.nextId = nextId
        self.hostname = hostname
        self.clock = clock
        self.logger = logger
        self.maxErrors = max(1, maxErrors)
        self.headersOnly = headersOnly
        self.queuereturnTimeout = queuereturnTimeout
        self.sent = 0
        self.dropped = 0
        #: the milters of QMGR's own mail: C{(content, envelope)} to a
        #: Deferred of C{(content, envelope)}, or of C{None} to drop it
        self.milters = None  # type: Optional[InternalFilter]

    def report(
        self, kind: str, ta: Transaction, failures: List[FailureData]
    ) -> defer.Deferred:
        """
        Queue the reports of C{kind} (C{"failed"}, C{"delayed"} or
        C{"success"}) for C{failures} of C{ta}.  A success notice returns
        only the header of the message unless the sender asked for it all
        (C{RET=FULL}).

        @return: a L{Deferred} firing when every report is committed (or
            was not needed).
        """
        if not failures:
            return defer.succeed(None)
        if not ta.sender:
            if kind == "failed":
                self.dropped += 1
                self.logger.warn(
                    "Bouncer.report",
                    ss_ta=ta.id,
                    stat="double bounce dropped" if ta.dsnFor else "no bounce to <>",
                    rcpts=len(failures),
                )
            return defer.succeed(None)
        try:
            with self.contentStore.open(ta.id) as f:
                original = f.read()
        except (KeyError, OSError) as e:
            self.logger.error("Bouncer.report", ss_ta=ta.id, error="content: %s" % e)
            original = b""
        ds = []
        for start in range(0, len(failures), self.maxErrors):
            chunk = failures[start : start + self.maxErrors]
            headersOnly = (
                self.headersOnly
                or (ta.ret or "").upper() == "HDRS"
                or (kind == "failed" and ta.bounces > 0)
            )
            if kind == "success":
                headersOnly = (ta.ret or "").upper() != "FULL"
            if kind == "failed":
                ta.bounces += 1
            ds.append(self._queueOne(kind, ta, chunk, original, headersOnly))
        return defer.gatherResults(ds, consumeErrors=True).addCallback(lambda _: None)

    def _queueOne(
        self,
        kind: str,
        ta: Transaction,
        failures: List[FailureData],
        original: bytes,
        headersOnly: bool,
    ) -> defer.Deferred:
        now = self.clock.seconds()
        data = dsn.buildReport(
            kind,
            self.hostname,
            ta.envelope(),
            failures,
            original,
            headersOnly=headersOnly,
            now=now,
            willRetryUntil=ta.received + self.queuereturnTimeout,
        )
        newId = self.nextId()
        envelope = {
            "id": newId,
            "session": "",
            "sender": "",
            "recipients": [{"address": ta.sender, "index": 0}],
            "size": len(data),
            "client": "",
            "received": now,
            "bodyType": "8BITMIME" if dsn.is8bit(data) else "7BIT",
            "smtputf8": ta.smtputf8,
            # RFC 8689 §5: the report of a REQUIRETLS message is itself
            # sent only over TLS
            "requiretls": ta.requiretls,
            "dsnFor": ta.id,
        }

        def _cbStored(_: object, envelope: EnvelopeData) -> defer.Deferred:
            return self.submit(envelope)

        def _cbQueued(_: object) -> None:
            self.sent += 1
            self.logger.info(ss_ta=newId, dsn_for=ta.id, kind=kind, rcpts=len(failures))

        def _store(data: bytes, envelope: EnvelopeData) -> defer.Deferred:
            writer = self.contentStore.createWriter(newId)
            writer.write(data)
            envelope["size"] = len(data)
            d = writer.commit()
            d.addCallback(_cbStored, envelope)
            d.addCallback(_cbQueued)
            return d

        if self.milters is None:
            return _store(data, envelope)

        def _cbFiltered(
            result: Optional[Tuple[bytes, EnvelopeData]],
        ) -> Optional[defer.Deferred]:
            if result is None:
                return None
            return _store(*result)

        return self.milters(data, envelope).addCallback(_cbFiltered)

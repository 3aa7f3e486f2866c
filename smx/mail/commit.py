# -*- test-case-name: smx.mail.test.test_smtps -*-
"""
NAME
    smx.mail.commit - the DATA phase and the commit of an SMTPS transaction

SYNOPSIS
    class SMTPServerProtocol(CommitMixin, protocol.Protocol): ...

DESCRIPTION
    The half of L{smx.mail.smtps.SMTPServerProtocol} that receives a
    message and makes it durable: the content goes to the content store
    (CDB) behind a C{Received:} header (seed App. C.3), the envelope to
    L{IQueueManager.commitTransaction}; both are synced at the same time
    and the 250 for the final dot is sent only when both are on stable
    storage, then QMGR is told (L{IQueueManager.contentCommitted}).  If
    either fails the reply is 451 4.3.0 and nothing is scheduled.

    With a store whose contents QMGR syncs (C{syncedByQueueManager}, the
    L{smx.queue.cdb.FileContentStore} of the running components) the
    content is written out unsynced first, and the envelope then goes to
    QMGR with C{syncContent}: QMGR's IBDB commit syncs the contents of
    all the envelopes it carries at once (L{smx.queue.cdb.ContentSync})
    before the envelopes are on stable storage; the 250 waits for that
    commit alone.

DIAGNOSTICS
    C{ss_sess=..., ss_ta=..., msgid=<...>, size=N, stat=0} for an accepted
    message, C{stat=CODE, reply=...} for a rejected one; a failed sync is
    logged with the failure (C{sev=ERR}).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Set

from twisted.internet import defer
from twisted.python import failure

from smx.fastdefer import inlineCallbacks, settled
from smx.interfaces import QueueManagerUnavailable
from smx.mail import server as sm
from smx.mail.address import addressKey
from smx.mail.received import protocolName, receivedHeader
from smx.values import RecipientData


class _Transaction:
    """One mail transaction of a session: its envelope and content writer."""

    def __init__(self, transactionId: str, sender: str, body: str, size: int):
        self.id = transactionId
        self.sender = sender
        self.body = body
        self.declaredSize = size
        #: MAIL carried SMTPUTF8 (RFC 6531)
        self.smtputf8 = False
        #: the DSN RET= and ENVID= of MAIL (RFC 3461), or None
        self.ret = None  # type: Optional[str]
        self.envid = None  # type: Optional[str]
        #: MAIL carried REQUIRETLS (RFC 8689)
        self.requiretls = False
        self.recipients = []  # type: List[RecipientData]
        self.writer = None  # type: Any
        #: the content held for the milters (L{smx.mail.milterhooks})
        self.milterContent = None  # type: Optional[List[bytes]]
        #: a milter's quarantine reason: QMGR holds the message
        self.quarantine = None  # type: Optional[str]
        self.stored = 0
        self._seen = set()  # type: Set[str]

    def addRecipient(
        self, address: str, notify: Optional[str] = None, orcpt: Optional[str] = None
    ) -> Optional[int]:
        """
        Add an accepted recipient, unless the transaction has it already
        (the local part compared exactly, the domain without regard to
        case): a client that names one address twice gets one copy, as
        with Postfix's cleanup.

        @return: the recipient's index, or C{None} for a duplicate.
        """
        key = addressKey(address)
        if key in self._seen:
            return None
        self._seen.add(key)
        index = len(self.recipients)
        recipient = {"address": address, "index": index}  # type: RecipientData
        if notify is not None:
            recipient["notify"] = notify
        if orcpt is not None:
            recipient["orcpt"] = orcpt
        self.recipients.append(recipient)
        return index

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()
            self.writer = None


_TEMPFAIL = (451, "4.3.0", "Temporary failure, please try again later")


class CommitMixin:
    """
    The DATA, final dot and commit events of L{smx.mail.smtps.
    SMTPServerProtocol}; it uses the protocol's C{factory}, C{connection},
    C{policy}, C{transaction} and C{_flush}.
    """

    factory = None  # type: Any
    connection = None  # type: Any
    transaction = None  # type: Any
    policy = None  # type: Any
    sessionId = ""
    clientAddress = ""
    tlsInfo = None  # type: Any
    authUser = None  # type: Any
    _lost = False
    #: the session was ended (421: smx stops, L{smx.mail.drain})
    _closing = False
    #: the transaction whose final dot was last checked and committed
    _checked = None  # type: Optional[_Transaction]

    def _flush(self) -> None:  # pragma: no cover - the protocol's
        raise NotImplementedError()

    def do_DataCommand(self, event: sm.DataCommand):
        ta = self.transaction
        if ta is None:  # pragma: no cover
            self.connection.reject(*_TEMPFAIL)
            return
        if ta.recipients and not self.policy.discardTransaction:
            try:
                if ta.writer is None:
                    ta.writer = self.factory.contentStore.createWriter(ta.id)
                # PREPEND headers of policy servers after Received:
                header = self._receivedHeader(ta) + self._policyHeaders(ta)
                ta.writer.write(header)
                ta.stored = len(header)
            except Exception:
                self.factory.log.failure(
                    "do_DataCommand", failure.Failure(), ss_sess=self.sessionId
                )
                ta.abort()
                self.connection.reject(*_TEMPFAIL)
                return
        else:
            # nothing will be stored (discarded): no content file
            ta.abort()
        self.connection.accept()

    def _receivedHeader(self, ta: _Transaction) -> bytes:
        c = self.connection
        return receivedHeader(
            c.heloName or "unknown",
            self.clientAddress,
            self.factory.settings.hostname,
            protocolName(
                c.extended, c.tls, self.authUser is not None, utf8=ta.smtputf8
            ),
            ta.id,
            clientName=self.policy.clientName,
            tlsInfo=self.tlsInfo,
            now=self.factory.reactor.seconds(),
        )

    def do_DataChunk(self, event: sm.DataChunk):
        ta = self.transaction
        if ta is not None and ta.writer is not None:
            if ta.milterContent is not None:
                ta.milterContent.append(event.data)
            else:
                ta.writer.write(event.data)
            ta.stored += len(event.data)

    def do_EndOfData(self, event: sm.EndOfData):
        ta = self.transaction
        self.transaction = None
        self._checked = ta
        s = self.factory.settings
        # no transaction cannot happen: the state machine prevents it
        reply = _TEMPFAIL if ta is None else event.refusal()
        if reply is None and s.maxHops and event.hops > s.maxHops:
            reply = (554, "5.4.6", "Too many hops (%d)" % (event.hops,))
        if reply is not None:
            if ta is not None:
                ta.abort()
                self._logEnd(
                    ta, event, event.size, stat=reply[0], reply="%d %s %s" % reply
                )
            self._pmAbort()
            self._mlAbort()
            self.connection.reject(*reply)
            return None
        assert ta is not None
        return self._pdEndOfMessage(ta, event)

    def _pmAbort(self) -> None:  # pragma: no cover - the protocol's
        raise NotImplementedError()

    def _mlAbort(self) -> None:  # pragma: no cover - the protocol's
        raise NotImplementedError()

    def _mlEndOfMessage(self, ta: _Transaction, event: sm.EndOfData) -> Any:
        raise NotImplementedError()  # pragma: no cover - the protocol's

    def _policyHeaders(self, ta: _Transaction) -> bytes:
        # without policy servers (the protocol's, L{smx.mail.policyhooks})
        return b""  # pragma: no cover

    def _pdEndOfMessage(self, ta: _Transaction, event: sm.EndOfData) -> Any:
        # without policy servers (the protocol's, L{smx.mail.policyhooks})
        return self._pmEndOfMessage(ta, event)  # pragma: no cover

    def _pmEndOfMessage(self, ta: _Transaction, event: sm.EndOfData) -> Any:
        # without pmilters (the protocol's, L{smx.mail.pmilterhooks})
        return self._store(ta, event)  # pragma: no cover

    def _store(self, ta: _Transaction, event: sm.EndOfData) -> Any:
        """Queue the message, or accept and forget a discarded one."""
        if ta.writer is None:
            # discarded: accept and forget
            self._logEnd(ta, event, event.size, stat=0, discard=1)
            self.connection.accept("%s Message accepted for delivery" % (ta.id,))
            return None
        if ta.milterContent is not None:
            # the milters see it first (L{smx.mail.milterhooks})
            return self._mlEndOfMessage(ta, event)
        return self._commit(ta, event)

    @inlineCallbacks
    def _commit(self, ta: _Transaction, event: sm.EndOfData):
        """
        Sync the content (CDB) and the envelope (QMGR's IBDB) at the same
        time; answer 250 once both are on stable storage, then let QMGR
        schedule the transaction (L{IQueueManager.contentCommitted}).
        """
        writer = ta.writer
        ta.writer = None
        if self._closing:
            # the session got 421 while its message was checked (smx
            # stops, L{smx.mail.drain}, which aborted the writer): the
            # client sends it again
            writer.abort()
            self._logEnd(ta, event, ta.stored, stat=421)
            return
        qmgr = self.factory.queueManager
        envelope = {
            "id": ta.id,
            "session": self.sessionId,
            "sender": ta.sender,
            "recipients": ta.recipients,
            "size": ta.stored,
            "client": self.clientAddress,
            "received": self.factory.reactor.seconds(),
            "bodyType": "8BITMIME" if ta.body == "8BITMIME" else "7BIT",
            "smtputf8": ta.smtputf8,
            "ret": ta.ret,
            "envid": ta.envid,
            "quarantine": ta.quarantine,
            "requiretls": ta.requiretls,
            # RFC 8689 §4.1: the header counts only without REQUIRETLS
            "tlsRequiredNo": event.tlsRequiredNo and not ta.requiretls,
        }
        if getattr(self.factory.contentStore, "syncedByQueueManager", False):
            envelope["syncContent"] = True
            yield self._commitWithEnvelope(ta, event, writer, envelope)
            return
        envelope["contentPending"] = True
        content = defer.maybeDeferred(writer.commit)
        queued = defer.maybeDeferred(qmgr.commitTransaction, envelope)
        (contentOk, contentResult), (queuedOk, queuedResult) = yield (
            settled([content, queued])
        )
        if not contentOk:
            self._commitFailed(ta, event, contentResult, "writer.commit")
            try:
                writer.abort()
            except Exception:
                self.factory.log.failure(
                    "writer.abort",
                    failure.Failure(),
                    ss_sess=self.sessionId,
                    ss_ta=ta.id,
                )
            if queuedOk:
                yield self._contentCommitted(ta, False)
            return
        if not queuedOk:
            self._commitFailed(ta, event, queuedResult, "commitTransaction")
            self._removeContent(ta)
            return
        if self._closing:
            # 421 while it was synced (smx stops and waited no longer,
            # L{smx.mail.drain}): undone, the client sends it again
            self._logEnd(ta, event, ta.stored, stat=421)
            self._removeContent(ta)
            yield self._contentCommitted(ta, False)
            return
        self._logEnd(ta, event, ta.stored, stat=0)
        if not self._lost:
            self.connection.accept("%s Message accepted for delivery" % (ta.id,))
            self._flush()
        yield self._contentCommitted(ta, True)

    @inlineCallbacks
    def _commitWithEnvelope(
        self, ta: _Transaction, event: sm.EndOfData, writer: Any, envelope: Any
    ):
        """
        L{_commit} for a content store whose contents QMGR syncs
        (C{syncedByQueueManager}): the content is written out unsynced,
        then QMGR syncs it in the IBDB commit of its envelope
        (C{syncContent}): one sync for many messages, and nothing to tell
        QMGR afterwards.
        """
        try:
            writer.finish()
        except Exception:
            self._commitFailed(ta, event, failure.Failure(), "writer.finish")
            return
        crc = getattr(writer, "recycledCrc", None)
        if crc is not None:
            # written over a removed content: recovery checks it is this one
            envelope["contentCrc"] = crc
        try:
            yield self.factory.queueManager.commitTransaction(envelope)
        except Exception:
            self._commitFailed(ta, event, failure.Failure(), "commitTransaction")
            self._removeContent(ta)
            return
        # queued: QMGR delivers it, even if the session got 421 meanwhile
        # (smx stops and waited no longer, L{smx.mail.drain}; the client
        # may send it again)
        self._logEnd(ta, event, ta.stored, stat=0)
        if not self._lost and not self._closing:
            self.connection.accept("%s Message accepted for delivery" % (ta.id,))
            self._flush()

    def _removeContent(self, ta: _Transaction) -> None:
        try:
            self.factory.contentStore.remove(ta.id)
        except Exception:
            self.factory.log.failure(
                "contentStore.remove",
                failure.Failure(),
                ss_sess=self.sessionId,
                ss_ta=ta.id,
            )

    def _logEnd(
        self, ta: _Transaction, event: sm.EndOfData, size: int, **fields: Any
    ) -> None:
        """The App. C.2 record of the end of a transaction."""
        self.factory.log.info(
            ss_sess=self.sessionId,
            ss_ta=ta.id,
            msgid=event.messageId,
            size=size,
            **fields,
        )

    def _contentCommitted(self, ta: _Transaction, stored: bool) -> defer.Deferred:
        d = defer.maybeDeferred(
            self.factory.queueManager.contentCommitted, ta.id, stored
        )
        d.addErrback(
            lambda f: self.factory.log.failure(
                "contentCommitted", f, ss_sess=self.sessionId, ss_ta=ta.id
            )
        )
        return d

    def _commitFailed(self, ta, event, reason, func) -> None:
        if reason.check(QueueManagerUnavailable):
            # QMGR restarting (split mode): expected, no traceback
            self.factory.log.error(
                func, ss_sess=self.sessionId, ss_ta=ta.id, error=str(reason.value)
            )
        else:
            self.factory.log.failure(func, reason, ss_sess=self.sessionId, ss_ta=ta.id)
        self._logEnd(ta, event, ta.stored, stat=451)
        if not self._lost:
            self.connection.reject(*_TEMPFAIL)

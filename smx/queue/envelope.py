# -*- test-case-name: smx.queue.test.test_qmgr -*-
"""
NAME
    smx.queue.envelope - the in-memory state of queued transactions

SYNOPSIS
    ta = Transaction.fromEnvelope(envelope)
    ta.recipients[0].state        # "queued", "active", "deferred", ...
    record = ta.toRecord()        # for IBDB

DESCRIPTION
    A L{Transaction} is one accepted SMTPS transaction with its
    L{Recipient}s.  A recipient is in one of these states:

        - C{queued}: waiting for room in AQ (IQDB);
        - C{active}: in AQ, being resolved or delivered;
        - C{deferred}: waiting for its next-time-to-try (DEFEDB);
        - C{held}: not to be delivered until released (qmgrctl);
        - C{bouncing}: failed, its bounce is not yet queued;
        - C{delivered}, C{failed}, C{deleted}: final.

CONFIGURATION PARAMETERS
    None.

SECURITY
    None.

DIAGNOSTICS
    None.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Optional

from smx.values import EnvelopeData, RecipientData, StatusData

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall

#: the last reply of one recipient for a DSN (L{Recipient.failureInfo}):
#: C{address}, C{code}, C{reply}, C{dsn}, C{remoteMTA}, C{where}, ...
FailureData = Dict[str, Any]
#: a transaction as IBDB and DEFEDB store it (L{Transaction.toRecord}):
#: the fields of an L{smx.values.Envelope} and of its recipients plus
#: QMGR's own (C{state}, C{tries}, C{bounces}, ...)
RecordData = Dict[str, Any]

FINAL = frozenset(["delivered", "failed", "deleted"])

#: envelope fields kept with a transaction (besides its recipients)
ENVELOPE_FIELDS = (
    "id",
    "session",
    "sender",
    "size",
    "client",
    "received",
    "bodyType",
    "smtputf8",
    "envid",
    "ret",
    "requiretls",
    "tlsRequiredNo",
    "dsnFor",
    "bounces",
    "contentPending",
    "quarantine",
    "contentCrc",
)

#: recipient fields kept in IBDB and DEFEDB
RECIPIENT_FIELDS = (
    "index",
    "address",
    "state",
    "tries",
    "nextTry",
    "code",
    "reply",
    "dsn",
    "remoteMTA",
    "where",
    "lastAttempt",
    "done",
    "failures",
    "warned",
    "orcpt",
    "notify",
)


def wants(r: "Recipient", event: str) -> bool:
    """
    Does recipient C{r} want a DSN of C{event} (C{"SUCCESS"},
    C{"FAILURE"}, C{"DELAY"}; RFC 3461 §4.1)?  Without C{NOTIFY}: failures
    and delays.
    """
    if r.notify is None:
        return event in ("FAILURE", "DELAY")
    return event in r.notify.upper().split(",")


class Recipient:
    """
    One envelope recipient.

    @ivar done: expanded addresses (aliases) already delivered or failed.
    @ivar failures: failure C{dict}s of expanded addresses, for the bounce.
    @ivar inDefedb: is the recipient stored in DEFEDB?
    """

    def __init__(self, index: int, address: str, state: str = "queued") -> None:
        self.index = index
        self.address = address
        self.state = state
        self.tries = 0
        self.nextTry = 0.0
        self.code = 0
        self.reply = ""
        self.dsn = None  # type: Optional[str]
        self.remoteMTA = None  # type: Optional[str]
        self.where = None  # type: Optional[str]
        self.lastAttempt = None  # type: Optional[float]
        self.done = []  # type: List[str]
        self.failures = []  # type: List[FailureData]
        self.warned = False
        self.orcpt = None  # type: Optional[str]
        self.notify = None  # type: Optional[str]
        self.inDefedb = False
        self.deleteRequested = False

    @property
    def final(self) -> bool:
        return self.state in FINAL

    def toDict(self) -> RecipientData:
        return {name: getattr(self, name) for name in RECIPIENT_FIELDS}

    @classmethod
    def fromDict(cls, data: RecipientData) -> "Recipient":
        r = cls(int(data["index"]), str(data["address"]))
        for name in RECIPIENT_FIELDS:
            if name in data and data[name] is not None:
                setattr(r, name, data[name])
        r.done = list(r.done or [])
        r.failures = list(r.failures or [])
        return r

    def failureInfo(self) -> FailureData:
        """The last reply of this recipient, for a DSN."""
        return {
            "address": self.address,
            "code": self.code,
            "reply": self.reply,
            "dsn": self.dsn,
            "remoteMTA": self.remoteMTA,
            "where": self.where,
            "lastAttempt": self.lastAttempt,
            "orcpt": self.orcpt,
        }


class Transaction:
    """
    An accepted transaction and its recipients (index -> L{Recipient}).
    """

    def __init__(self, envelope: EnvelopeData) -> None:
        self.id = str(envelope["id"])
        self.session = envelope.get("session") or ""
        self.sender = envelope.get("sender") or ""
        self.size = int(envelope.get("size") or 0)
        self.client = envelope.get("client") or ""
        self.received = float(envelope.get("received") or 0.0)
        self.bodyType = envelope.get("bodyType") or "7BIT"
        #: received with SMTPUTF8 (RFC 6531); needed again where an
        #: address or a header is not ASCII
        self.smtputf8 = bool(envelope.get("smtputf8"))
        self.envid = envelope.get("envid")
        self.ret = envelope.get("ret")
        #: MAIL carried REQUIRETLS (RFC 8689): TLS to every next hop
        self.requiretls = bool(envelope.get("requiretls"))
        #: the header said C{TLS-Required: No} (RFC 8689 §3) and MAIL had
        #: no REQUIRETLS: TLS policy failures need not stop delivery
        self.tlsRequiredNo = bool(envelope.get("tlsRequiredNo"))
        self.dsnFor = envelope.get("dsnFor")
        #: a milter's quarantine reason: the recipients are held
        self.quarantine = envelope.get("quarantine")
        self.bounces = int(envelope.get("bounces") or 0)
        #: the content was being synced when the envelope was stored (see
        #: IQueueManager.commitTransaction); true in IBDB for good, false
        #: in memory once the content is on stable storage
        self.contentPending = bool(envelope.get("contentPending"))
        #: the CRC-32 of the content, given when it was written to a
        #: recycled file (recovery checks it, L{smx.queue.cdb})
        crc = envelope.get("contentCrc")
        self.contentCrc = crc if isinstance(crc, int) else None
        self.recipients = {}  # type: Dict[int, Recipient]
        self.pendingFailures = []  # type: List[Recipient]
        #: results of delivered addresses whose recipient asked for a
        #: success notice (NOTIFY=SUCCESS), for the scheduler to send
        self.successNotices = []  # type: List[FailureData]
        self.bounceTimer = None  # type: Optional[IDelayedCall]
        self.finished = False

    @classmethod
    def fromEnvelope(cls, envelope: EnvelopeData) -> "Transaction":
        """
        Build from an SMTPS envelope (L{smx.interfaces.IQueueManager}) or
        an IBDB C{T} record.
        """
        ta = cls(envelope)
        for i, data in enumerate(envelope.get("recipients") or []):
            data = dict(data)
            data.setdefault("index", i)
            r = Recipient.fromDict(data)
            ta.recipients[r.index] = r
        return ta

    def envelope(self) -> RecordData:
        """The envelope without recipients (as stored in DEFEDB)."""
        return {name: getattr(self, name) for name in ENVELOPE_FIELDS}

    def toRecord(self) -> RecordData:
        """The envelope with every recipient (an IBDB C{T} record)."""
        record = self.envelope()
        record["recipients"] = [r.toDict() for _, r in sorted(self.recipients.items())]
        return record

    def live(self) -> List[Recipient]:
        """Recipients that are not final."""
        return [r for r in self.recipients.values() if not r.final]

    def isDone(self) -> bool:
        return all(r.final for r in self.recipients.values())

    def needsLog(self) -> bool:
        """
        Does IBDB still have to keep this transaction's C{T} record?  Not
        once every recipient is final or safely (deferred or held) in
        DEFEDB.
        """
        return any(
            not r.final and not (r.state in ("deferred", "held") and r.inDefedb)
            for r in self.recipients.values()
        )

    def describe(self) -> StatusData:
        """For C{mailq} and C{listQueue}."""
        data = self.envelope()
        data["recipients"] = [
            {
                "index": r.index,
                "address": r.address,
                "state": r.state,
                "tries": r.tries,
                "nextTry": r.nextTry,
                "reply": r.reply,
                "notify": r.notify,
                "orcpt": r.orcpt,
            }
            for _, r in sorted(self.recipients.items())
            if not r.final
        ]
        return data

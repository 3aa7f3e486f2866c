# -*- test-case-name: smx.milter.test.test_protocol -*-
"""
NAME
    smx.milter.protocol - one SMTP session seen by one milter, sans I/O

SYNOPSIS
    machine = MilterMachine(defaultAction="tempfail")
    decision = machine.connect(ConnectInfo(None, "inet", "192.0.2.1", 4711),
                               {"j": "mx.example"})
    transport.write(machine.dataToSend())
    machine.receiveData(received)
    event = machine.nextEvent()          # StageDone(decision), ...

DESCRIPTION
    The MTA side of libmilter's protocol, version 6, for one SMTP session
    (one connection to the milter, as Postfix opens one per SMTP client).
    Stage calls go in (L{MilterMachine.connect}, L{helo<MilterMachine.
    helo>}, L{mail<MilterMachine.mail>}, L{rcpt<MilterMachine.rcpt>},
    L{data<MilterMachine.data>}, L{headers<MilterMachine.headers>},
    L{eoh<MilterMachine.eoh>}, L{body<MilterMachine.body>},
    L{endOfMessage<MilterMachine.endOfMessage>}, L{unknown<MilterMachine.
    unknown>}, L{abort<MilterMachine.abort>}, L{quit<MilterMachine.quit>});
    each returns the L{Decision} at once when no reply is to be waited
    for, else C{None}, and the decision comes later as a L{StageDone}
    event.  Bytes to send come out of L{MilterMachine.dataToSend}, bytes
    received go into L{MilterMachine.receiveData}.  No socket, no reactor,
    no clock: L{smx.milter.client} is the Twisted adapter, which also
    keeps the timeouts.

    Negotiation: C{connect} first sends C{SMFIC_OPTNEG} offering version 6,
    every action (L{codec.SMFIF_ALL}) and every protocol flag
    (L{codec.SMFIP_ALL}).  The milter's answer is honoured: a step it does
    not want (C{SMFIP_NO*}) is not sent, though its macros are; a step it
    will not answer (C{SMFIP_NR_*}) is sent and not waited for; with
    C{SMFIP_HDR_LEADSPC} header values keep the space after the colon; a
    C{SETSYMLIST} replaces the macro list of the stages it names.  A
    milter of an older version is not sent the steps its version lacks
    (C{SMFIC_UNKNOWN} before 3, C{SMFIC_DATA} before 4).  A version above
    6 or an action not offered ends the session (the default action).

    Decisions follow Postfix's milter8.c:

      - at connect and HELO, C{accept} means the milter is done with the
        session, C{reject}, C{tempfail} and a reply code answer every
        later stage the same way; the connection is closed (C{QUIT});
      - at MAIL and later, C{accept} and C{discard} end the milter's
        interest in the message (later stages are not sent and get
        C{continue}; C{discard} says to drop the message); a rejection at
        RCPT rejects that recipient only, at MAIL or after DATA the
        transaction;
      - C{skip} skips the rest of the steps of that kind (body chunks) in
        the message; C{progress} restarts the timeout;
      - a C{shutdown} (C{421}) ends the session;
      - at the end of the message, the modifications sent before the
        final reply are in the decision, in order, every
        C{SMFIR_REPLBODY} chunk joined into one L{ReplaceBody}.

    A transaction is begun by C{mail} and ended by C{endOfMessage} or
    C{abort} (C{SMFIC_ABORT} is sent only if a transaction is open);
    C{mail} or C{helo} during a transaction aborts it first.  Body chunks
    are gathered into packets of L{codec.MAX_COMMAND_DATA} bytes, as
    Postfix sends them.

DIAGNOSTICS
    A malformed or oversized packet, an unknown or misplaced reply, an
    invalid header from the milter: a L{Failed} event with the reason,
    and the waiting stage ends with the default action (L{failureDecision}):
    C{tempfail} C{451 4.7.1}, C{reject} C{550 5.5.0}, or C{accept} (the
    milter is ignored for the rest of the session).  Every later stage
    gets the same decision.  A stage called while another waits, or
    before C{connect}, raises C{RuntimeError}: the caller's bug.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import (
    Any,
    Deque,
    Dict,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from smx.milter import codec
from smx.milter.codec import (
    MilterProtocolError,
    Negotiation,
    ReplyCode,
    Verdict,
)
from smx.milter.macros import DEFAULT_MACROS, MacroLists, select
from smx.milter.modifications import (
    AddHeader,
    AddRecipient,
    AnyModification,
    ChangeFrom,
    ChangeHeader,
    DeleteHeader,
    DeleteRecipient,
    HeaderError,
    InsertHeader,
    Quarantine,
    ReplaceBody,
    asPlain,
    checkHeaderName,
    fromMilterValue,
    fromPlain,
    stripBrackets,
    toMilterValue,
)

#: the default actions a milter can have when it fails
DEFAULT_ACTIONS = ("tempfail", "reject", "accept")


@dataclass(frozen=True)
class Decision:
    """
    What a milter decided at one stage.

    @ivar action: C{"continue"}, C{"accept"}, C{"reject"}, C{"tempfail"},
        C{"discard"} or C{"shutdown"}.  At the end of the message
        C{continue} and C{accept} both accept it.
    @ivar code: the SMTP reply code of C{reject} (5xx), C{tempfail} (4xx)
        and C{shutdown} (421), else 0.
    @ivar lines: the reply text, one entry per line, without the code
        (C{"5.7.1 Command rejected"}).
    @ivar modifications: at the end of the message, the changes asked for
        (L{smx.milter.modifications}).
    @ivar failure: when this is the default action of a milter that
        failed, why; else C{None}.
    """

    action: str
    code: int = 0
    lines: Tuple[str, ...] = ()
    modifications: Tuple[AnyModification, ...] = ()
    failure: Optional[str] = None

    @property
    def status(self) -> str:
        """The enhanced status code of the first line, or C{""}."""
        first = self.lines[0].split(" ", 1)[0] if self.lines else ""
        parts = first.split(".")
        if len(parts) == 3 and all(p.isdigit() for p in parts):
            return first
        return ""

    @property
    def text(self) -> str:
        """The text of every line joined by a space, status codes left out."""
        status = self.status
        out = []
        for line in self.lines:
            if status and line.startswith(status + " "):
                line = line[len(status) + 1 :]
            elif status and line == status:
                line = ""
            out.append(line)
        return " ".join(t for t in out if t)

    def reply(self) -> str:
        """
        The SMTP reply, CRLF between lines and none at the end
        (C{"550-5.7.1 one\\r\\n550 5.7.1 two"}); C{""} for a decision
        without a code.
        """
        if not self.code:
            return ""
        lines = self.lines or ("",)
        return "\r\n".join(
            ("%d%s%s" % (self.code, " " if i == len(lines) - 1 else "-", line)).rstrip()
            for i, line in enumerate(lines)
        )

    def asPlain(self) -> Dict[str, Any]:
        """This decision as a C{dict} of plain values."""
        return {
            "action": self.action,
            "code": self.code,
            "lines": list(self.lines),
            "modifications": [asPlain(m) for m in self.modifications],
            "failure": self.failure,
        }

    @classmethod
    def fromPlain(cls, plain: Dict[str, Any]) -> Decision:
        """The inverse of L{asPlain}."""
        return cls(
            plain["action"],
            plain.get("code", 0),
            tuple(plain.get("lines", ())),
            tuple(fromPlain(m) for m in plain.get("modifications", ())),
            plain.get("failure"),
        )


CONTINUE = Decision("continue")
ACCEPT = Decision("accept")
DISCARD = Decision("discard")
REJECT = Decision("reject", 550, ("5.7.1 Command rejected",))
TEMPFAIL = Decision("tempfail", 451, ("4.7.1 Service unavailable - try again later",))
SHUTDOWN = Decision("shutdown", 421, ("4.7.0 Server closing connection",))


def failureDecision(defaultAction: str, reason: str) -> Decision:
    """
    The decision of a milter that failed, from its default action (the
    replies are Postfix's).

    @raise ValueError: an unknown default action.
    """
    if defaultAction == "tempfail":
        return Decision("tempfail", 451, TEMPFAIL.lines, failure=reason)
    if defaultAction == "reject":
        return Decision("reject", 550, ("5.5.0 Service unavailable",), failure=reason)
    if defaultAction == "accept":
        return Decision("continue", failure=reason)
    raise ValueError(
        "milter default action %r: expected one of %s"
        % (defaultAction, ", ".join(DEFAULT_ACTIONS))
    )


_FAMILIES = {
    "inet": codec.SMFIA_INET,
    "inet6": codec.SMFIA_INET6,
    "unix": codec.SMFIA_UNIX,
    "unknown": codec.SMFIA_UNKNOWN,
}


@dataclass(frozen=True)
class ConnectInfo:
    """
    The SMTP client, as C{SMFIC_CONNECT} describes it.

    @ivar hostname: its verified name, or C{None} (then C{"[address]"} is
        sent, as sendmail and Postfix do).
    @ivar family: C{"inet"}, C{"inet6"}, C{"unix"} or C{"unknown"}.
    @ivar address: its IP address (the socket path for C{"unix"}).
    @ivar port: its TCP port.
    """

    hostname: Optional[str]
    family: str
    address: str
    port: int = 0

    def packet(self) -> bytes:
        """The C{SMFIC_CONNECT} packet."""
        family = _FAMILIES.get(self.family)
        if family is None:
            raise ValueError("unknown address family %r" % (self.family,))
        name = self.hostname or (
            "[%s]" % (self.address,) if self.address else "unknown"
        )
        return codec.connect(name, family, self.port, self.address)


# Events.


@dataclass(frozen=True)
class Negotiated:
    """The milter answered the option negotiation."""

    negotiation: Negotiation


@dataclass(frozen=True)
class StageDone:
    """The stage that was waiting for the milter is decided."""

    decision: Decision


@dataclass(frozen=True)
class Progress:
    """The milter asked for more time (C{SMFIR_PROGRESS})."""


@dataclass(frozen=True)
class Failed:
    """
    The session failed (the first time only): every stage now gets the
    default action.
    """

    reason: str


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


#: L{MilterMachine.nextEvent} has nothing more until more data arrives
NEED_DATA = _NeedData()

Event = Union[Negotiated, StageDone, Progress, Failed, _NeedData]


@dataclass(frozen=True)
class _Item:
    """One packet of a stage: sent, then perhaps waited for."""

    packet: bytes
    stage: str
    expectsReply: bool


#: per stage: command, "do not send" flag, "no reply" flag, first version
_STEPS = {
    "connect": (codec.SMFIC_CONNECT, codec.SMFIP_NOCONNECT, codec.SMFIP_NR_CONN, 2),
    "helo": (codec.SMFIC_HELO, codec.SMFIP_NOHELO, codec.SMFIP_NR_HELO, 2),
    "mail": (codec.SMFIC_MAIL, codec.SMFIP_NOMAIL, codec.SMFIP_NR_MAIL, 2),
    "rcpt": (codec.SMFIC_RCPT, codec.SMFIP_NORCPT, codec.SMFIP_NR_RCPT, 2),
    "data": (codec.SMFIC_DATA, codec.SMFIP_NODATA, codec.SMFIP_NR_DATA, 4),
    "header": (codec.SMFIC_HEADER, codec.SMFIP_NOHDRS, codec.SMFIP_NR_HDR, 2),
    "eoh": (codec.SMFIC_EOH, codec.SMFIP_NOEOH, codec.SMFIP_NR_EOH, 2),
    "body": (codec.SMFIC_BODY, codec.SMFIP_NOBODY, codec.SMFIP_NR_BODY, 2),
    "eom": (codec.SMFIC_BODYEOB, 0, 0, 2),
    "unknown": (codec.SMFIC_UNKNOWN, codec.SMFIP_NOUNKNOWN, codec.SMFIP_NR_UNKN, 3),
}

#: the command byte that tells libmilter which stage macros belong to
_MACRO_COMMANDS = {
    "connect": codec.SMFIC_CONNECT,
    "helo": codec.SMFIC_HELO,
    "mail": codec.SMFIC_MAIL,
    "rcpt": codec.SMFIC_RCPT,
    "data": codec.SMFIC_DATA,
    "eoh": codec.SMFIC_EOH,
    "eom": codec.SMFIC_BODYEOB,
}

#: stages that are about the connection, not a message
_CONNECTION_STAGES = ("connect", "helo")

#: stages after which a rejection ends the transaction
_TRANSACTION_STAGES = ("mail", "data", "header", "eoh", "body", "eom")


class MilterMachine:
    """
    The protocol state of one session with one milter.

    @ivar state: C{"new"}, C{"negotiating"}, C{"open"}, C{"accepted"}
        (the milter accepted the session), C{"rejected"} (it rejected the
        session), C{"failed"} or C{"closed"} (after C{quit}).
    @ivar awaiting: the stage whose reply is awaited (C{"optneg"},
        C{"connect"}, ..., C{"eom"}), or C{None}.
    @ivar negotiation: the milter's answer to the negotiation, once known.
    @ivar macroLists: the macro names sent before each stage.
    @ivar failure: why the session failed, or C{None}.
    @ivar wantsClose: the connection should be closed once
        L{dataToSend} is written.
    @ivar repliesReceived: how many packets the milter sent (the adapter
        restarts its timeout when this changes).
    """

    def __init__(
        self,
        defaultAction: str = "tempfail",
        macros: MacroLists = DEFAULT_MACROS,
        actions: int = codec.SMFIF_ALL,
        protocol: int = codec.SMFIP_ALL,
        version: int = codec.VERSION,
        maxBodySize: int = 0,
    ) -> None:
        """
        @param macros: the macro names to send when the milter does not
            choose with C{SETSYMLIST}.
        @param actions: the C{SMFIF_*} actions offered.
        @param protocol: the C{SMFIP_*} flags offered.
        @param maxBodySize: the longest body a milter may put in place of
            the message's (0: no limit).
        """
        failureDecision(defaultAction, "")  # check it
        self.defaultAction = defaultAction
        self.macroLists = macros
        self.offeredActions = actions
        self.offeredProtocol = protocol
        self.version = version
        self.maxBodySize = maxBodySize
        self.state = "new"
        self.awaiting = None  # type: Optional[str]
        self.negotiation = None  # type: Optional[Negotiation]
        self.failure = None  # type: Optional[str]
        self.wantsClose = False
        self.repliesReceived = 0
        self._out = bytearray()
        self._parser = codec.PacketParser()
        self._events = deque()  # type: Deque[Event]
        self._values = {}  # type: Dict[str, str]
        self._stageValues = {}  # type: Dict[str, str]
        self._job = deque()  # type: Deque[_Item]
        self._jobStage = None  # type: Optional[str]
        self._sessionDecision = CONTINUE
        self._failureDecision = CONTINUE
        self._notSent = 0
        self._noReply = 0
        self._pendingConnect = None  # type: Optional[ConnectInfo]
        self._transaction = False
        self._messageDone = False
        self._skip = None  # type: Optional[str]
        self._eohMacrosSent = False
        self._bodyBuffer = bytearray()
        self._modifications = []  # type: List[AnyModification]
        self._replacement = None  # type: Optional[bytearray]
        self._replacementAt = 0

    # What the milter said it wants.

    @property
    def protocol(self) -> int:
        """The C{SMFIP_*} flags in force (0 before negotiation)."""
        return self.negotiation.protocol if self.negotiation else 0

    @property
    def wantsRejectedRecipients(self) -> bool:
        """Did the milter ask to be told of rejected recipients too?"""
        return bool(self.protocol & codec.SMFIP_RCPT_REJ)

    @property
    def leadingSpace(self) -> bool:
        """Are header values sent and taken with their leading space?"""
        return bool(self.protocol & codec.SMFIP_HDR_LEADSPC)

    def wants(self, stage: str) -> bool:
        """Is C{stage} sent to this milter at all?"""
        command, noSend, noReply, first = _STEPS[stage]
        return not (self._notSent & noSend) if noSend else True

    # Bytes in and out.

    def dataToSend(self) -> bytes:
        """The bytes to write to the milter now."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def receiveData(self, data: bytes) -> None:
        """
        Take bytes from the milter; what they mean comes out of
        L{nextEvent}.
        """
        if self.state in ("failed", "closed") or self.wantsClose:
            return
        try:
            packets = self._parser.feed(data)
        except MilterProtocolError as e:
            self.fail(str(e))
            return
        for command, payload in packets:
            if self.state in ("failed", "closed") or self.wantsClose:
                return
            self.repliesReceived += 1
            try:
                self._packetReceived(command, payload)
            except (MilterProtocolError, HeaderError) as e:
                self.fail(str(e))
                return

    def nextEvent(self) -> Event:
        """The next event, or L{NEED_DATA}."""
        if self._events:
            return self._events.popleft()
        return NEED_DATA

    # Failure.

    def fail(self, reason: str) -> Decision:
        """
        The session with the milter failed (it is down, slow, closed the
        connection, broke the protocol).  A L{Failed} event is queued the
        first time, and a L{StageDone} with the default action if a stage
        was waiting.

        @return: the decision every stage now gets.
        """
        if self.failure is not None or self.state in ("closed",):
            return self._closed() or CONTINUE
        self.failure = reason
        self._failureDecision = failureDecision(self.defaultAction, reason)
        self.state = "failed"
        self.wantsClose = True
        self._job.clear()
        self._events.append(Failed(reason))
        if self.awaiting is not None:
            self.awaiting = None
            self._events.append(StageDone(self._failureDecision))
        return self._failureDecision

    def defaultDecision(self, reason: str) -> Decision:
        """The decision of the default action, without failing."""
        return failureDecision(self.defaultAction, reason)

    # Stages.

    def connect(
        self, info: ConnectInfo, values: Optional[Mapping[str, str]] = None
    ) -> Optional[Decision]:
        """
        Begin: negotiate, then send the connection (C{SMFIC_CONNECT}).
        The decision comes as a L{StageDone} event.
        """
        if self.state != "new":
            raise RuntimeError("MilterMachine.connect: called in state %s" % self.state)
        info.packet()  # check it before anything is sent
        self._remember(values)
        self._out += codec.optionNegotiation(
            self.version, self.offeredActions, self.offeredProtocol
        )
        self.state = "negotiating"
        self.awaiting = "optneg"
        self._pendingConnect = info
        return None

    def helo(
        self, name: str, values: Optional[Mapping[str, str]] = None
    ) -> Optional[Decision]:
        """HELO or EHLO; a transaction in progress is aborted first."""
        closed = self._begin("helo", values)
        if closed is not None:
            return closed
        items = self._abortItems()
        items += self._items("helo", [codec.helo(name)])
        return self._run("helo", items)

    def mail(
        self,
        sender: str,
        parameters: Sequence[str] = (),
        values: Optional[Mapping[str, str]] = None,
    ) -> Optional[Decision]:
        """
        MAIL: begins a transaction (aborting one in progress).

        @param sender: without angle brackets, C{""} for C{<>}.
        @param parameters: the ESMTP parameters, C{"SIZE=1234"}, ...
        """
        merged = {"{mail_addr}": sender}
        merged.update(values or {})
        closed = self._begin("mail", merged)
        items = [] if closed is not None else self._abortItems()
        self._endTransaction()
        self._transaction = True
        if closed is not None:
            return closed
        items += self._items("mail", [codec.mail(["<%s>" % sender] + list(parameters))])
        return self._run("mail", items)

    def rcpt(
        self,
        recipient: str,
        parameters: Sequence[str] = (),
        values: Optional[Mapping[str, str]] = None,
    ) -> Optional[Decision]:
        """
        RCPT.  C{values} hold for this recipient only (for a rejected
        one, see L{smx.milter.macros.rejectedRecipientMacros}).
        """
        merged = {"{rcpt_addr}": recipient}
        merged.update(values or {})
        closed = self._begin("rcpt", None)
        if closed is not None:
            return closed
        if self._messageDone:
            return CONTINUE
        self._stageValues = merged
        items = self._items(
            "rcpt", [codec.rcpt(["<%s>" % recipient] + list(parameters))]
        )
        self._stageValues = {}
        return self._run("rcpt", items)

    def data(self, values: Optional[Mapping[str, str]] = None) -> Optional[Decision]:
        """The DATA command."""
        closed = self._begin("data", values)
        if closed is not None:
            return closed
        if self._messageDone or not self._transaction:
            return CONTINUE
        return self._run("data", self._items("data", [codec.simple(codec.SMFIC_DATA)]))

    def headers(
        self,
        fields: Sequence[Tuple[str, str]],
        values: Optional[Mapping[str, str]] = None,
    ) -> Optional[Decision]:
        """
        Header fields of the message, C{(name, value)} with the value as
        in the message (everything after the colon, CRLF between folded
        lines).  smx's own C{Received:} is not to be included.
        """
        closed = self._begin("header", values)
        if closed is not None:
            return closed
        if self._messageDone or not self._transaction or self._skip == "header":
            return CONTINUE
        items = self._eohMacros()
        leading = self.leadingSpace
        items += self._items(
            "header",
            [
                codec.header(name, toMilterValue(value, leading))
                for name, value in fields
            ],
            macros=False,
        )
        return self._run("header", items)

    def eoh(self, values: Optional[Mapping[str, str]] = None) -> Optional[Decision]:
        """The end of the header."""
        closed = self._begin("eoh", values)
        if closed is not None:
            return closed
        if self._messageDone or not self._transaction:
            return CONTINUE
        items = self._eohMacros()
        items += self._items("eoh", [codec.simple(codec.SMFIC_EOH)], macros=False)
        return self._run("eoh", items)

    def body(self, chunk: bytes) -> Optional[Decision]:
        """
        Some of the body (CRLF line ends, no dot-stuffing), in pieces of
        any size: full packets are sent, the rest waits for more or for
        L{endOfMessage}.
        """
        closed = self._begin("body", None)
        if closed is not None:
            return closed
        if not self._bodyWanted():
            return CONTINUE
        self._bodyBuffer += chunk
        size = codec.MAX_COMMAND_DATA
        packets = []
        while len(self._bodyBuffer) >= size:
            packets.append(codec.body(bytes(self._bodyBuffer[:size])))
            del self._bodyBuffer[:size]
        return self._run("body", self._items("body", packets, macros=False))

    def endOfMessage(
        self, values: Optional[Mapping[str, str]] = None
    ) -> Optional[Decision]:
        """
        The end of the message: the rest of the body, then
        C{SMFIC_BODYEOB}; the decision carries the modifications.
        """
        closed = self._begin("eom", values)
        if closed is not None:
            self._endTransaction()
            return closed
        if self._messageDone or not self._transaction:
            self._endTransaction()
            return CONTINUE
        items = []  # type: List[_Item]
        if self._bodyWanted() and self._bodyBuffer:
            items += self._items(
                "body", [codec.body(bytes(self._bodyBuffer))], macros=False
            )
        self._bodyBuffer.clear()
        self._modifications = []
        self._replacement = None
        items += self._items("eom", [codec.simple(codec.SMFIC_BODYEOB)])
        return self._run("eom", items)

    def unknown(
        self, command: str, values: Optional[Mapping[str, str]] = None
    ) -> Optional[Decision]:
        """An SMTP command smx does not know or implement (the whole line)."""
        closed = self._begin("unknown", values)
        if closed is not None:
            return closed
        if self._messageDone:
            return CONTINUE
        return self._run(
            "unknown", self._items("unknown", [codec.unknown(command)], macros=False)
        )

    def abort(self) -> None:
        """
        The transaction ended without reaching the end of the message
        (RSET, a rejected command, the client left): C{SMFIC_ABORT} if one
        is open.
        """
        if self.awaiting is not None:
            raise RuntimeError(
                "MilterMachine.abort: called while waiting for %s" % (self.awaiting,)
            )
        if self.state == "open":
            for item in self._abortItems():
                self._out += item.packet
        self._endTransaction()

    def quit(self) -> None:
        """
        The SMTP session ended: C{SMFIC_QUIT}, then the connection is to be
        closed.  A stage still waiting is abandoned (its caller decides
        what that means).
        """
        if self.state in ("negotiating", "open") and not self.wantsClose:
            self._out += codec.simple(codec.SMFIC_QUIT)
        self.wantsClose = True
        self.awaiting = None
        self._job.clear()
        if self.state not in ("failed",):
            self.state = "closed"

    # Internals.

    def _remember(self, values: Optional[Mapping[str, str]]) -> None:
        if values:
            self._values.update(values)

    def _closed(self) -> Optional[Decision]:
        """The decision of every stage once the session is over, or C{None}."""
        if self.state == "failed":
            return self._failureDecision
        if self.state == "rejected":
            return self._sessionDecision
        if self.state in ("accepted", "closed"):
            return CONTINUE
        return None

    def _begin(
        self, stage: str, values: Optional[Mapping[str, str]]
    ) -> Optional[Decision]:
        if self.state == "new":
            raise RuntimeError("MilterMachine.%s: called before connect" % (stage,))
        if self.awaiting is not None:
            raise RuntimeError(
                "MilterMachine.%s: called while waiting for %s" % (stage, self.awaiting)
            )
        self._remember(values)
        return self._closed()

    def _bodyWanted(self) -> bool:
        return (
            self._transaction
            and not self._messageDone
            and self._skip != "body"
            and self.wants("body")
        )

    def _abortItems(self) -> List[_Item]:
        if self._transaction and self.state == "open":
            self._endTransaction()
            return [_Item(codec.simple(codec.SMFIC_ABORT), "abort", False)]
        return []

    def _endTransaction(self) -> None:
        self._transaction = False
        self._messageDone = False
        self._skip = None
        self._eohMacrosSent = False
        self._bodyBuffer.clear()

    def _macroItems(self, stage: str) -> List[_Item]:
        names = self.macroLists.forStage(stage)
        if not names:
            return []
        values = dict(self._values)
        values.update(self._stageValues)
        pairs = select(names, values)
        if not pairs:
            return []
        return [_Item(codec.macros(_MACRO_COMMANDS[stage], pairs), "macro", False)]

    def _eohMacros(self) -> List[_Item]:
        if self._eohMacrosSent:
            return []
        self._eohMacrosSent = True
        return self._macroItems("eoh")

    def _items(
        self, stage: str, packets: List[bytes], macros: bool = True
    ) -> List[_Item]:
        """
        The macros of C{stage} (sent even when the step itself is not) and
        its packets, unless the milter does not want them.
        """
        command, noSend, noReply, first = _STEPS[stage]
        items = self._macroItems(stage) if macros and stage in _MACRO_COMMANDS else []
        if (noSend and self._notSent & noSend) or self._skip == stage:
            return items
        expects = not (noReply and self.protocol & noReply)
        items.extend(_Item(p, stage, expects) for p in packets)
        return items

    def _run(self, stage: str, items: List[_Item]) -> Optional[Decision]:
        self._job.extend(items)
        self._jobStage = stage
        return self._advance()

    def _advance(self) -> Optional[Decision]:
        while self._job:
            item = self._job.popleft()
            if item.stage == self._skip:
                continue
            self._out += item.packet
            if item.expectsReply:
                self.awaiting = item.stage
                return None
        self.awaiting = None
        return self._finish(CONTINUE)

    def _finish(self, decision: Decision) -> Decision:
        """The call is decided: the end of the message ends the transaction."""
        stage = self._jobStage
        self._job.clear()
        self.awaiting = None
        self._jobStage = None
        if stage == "eom":
            modifications = list(self._modifications)
            if self._replacement is not None:
                modifications.insert(
                    self._replacementAt, ReplaceBody(bytes(self._replacement))
                )
            self._modifications = []
            self._replacement = None
            self._endTransaction()
            if modifications:
                decision = Decision(
                    decision.action,
                    decision.code,
                    decision.lines,
                    tuple(modifications),
                    decision.failure,
                )
        return decision

    def _done(self, decision: Optional[Decision]) -> None:
        if decision is not None:
            self._events.append(StageDone(decision))

    def _packetReceived(self, command: bytes, data: bytes) -> None:
        if self.awaiting is None:
            raise MilterProtocolError(
                "unexpected reply %r while no reply is awaited" % (command,)
            )
        if self.awaiting == "optneg":
            if command != codec.SMFIC_OPTNEG:
                raise MilterProtocolError("reply %r to option negotiation" % (command,))
            self._negotiated(codec.parseNegotiation(data))
            return
        if command == codec.SMFIC_OPTNEG:
            raise MilterProtocolError("option negotiation reply after negotiation")
        reply = codec.parseReply(command, data)
        stage = self.awaiting
        if isinstance(reply, Verdict):
            if reply.kind == "progress":
                self._events.append(Progress())
                return
            self._verdict(stage, reply.kind, None)
        elif isinstance(reply, ReplyCode):
            kind = "reject" if reply.code >= 500 else "tempfail"
            self._verdict(stage, kind, Decision(kind, reply.code, reply.lines))
        elif stage == "eom":
            self._modification(reply)
        else:
            raise MilterProtocolError(
                "reply %r is not allowed after %s" % (command, stage)
            )

    def _negotiated(self, negotiation: Negotiation) -> None:
        if negotiation.version > self.version or negotiation.version < 2:
            raise MilterProtocolError(
                "protocol version %d, smx speaks %d"
                % (negotiation.version, self.version)
            )
        if negotiation.actions & ~self.offeredActions:
            raise MilterProtocolError(
                "actions 0x%x asked for, 0x%x offered"
                % (negotiation.actions, self.offeredActions)
            )
        protocol = negotiation.protocol & self.offeredProtocol
        self.negotiation = Negotiation(
            negotiation.version, negotiation.actions, protocol, negotiation.macros
        )
        if negotiation.macros:
            self.macroLists = self.macroLists.override(negotiation.macros)
        self._notSent = protocol & (
            codec.SMFIP_NOCONNECT
            | codec.SMFIP_NOHELO
            | codec.SMFIP_NOMAIL
            | codec.SMFIP_NORCPT
            | codec.SMFIP_NOBODY
            | codec.SMFIP_NOHDRS
            | codec.SMFIP_NOEOH
            | codec.SMFIP_NOUNKNOWN
            | codec.SMFIP_NODATA
        )
        if negotiation.version < 3:
            self._notSent |= codec.SMFIP_NOUNKNOWN
        if negotiation.version < 4:
            self._notSent |= codec.SMFIP_NODATA
        self.state = "open"
        self.awaiting = None
        self._events.append(Negotiated(self.negotiation))
        info = self._pendingConnect
        self._pendingConnect = None
        assert info is not None, "MilterMachine._negotiated: no connect pending"
        self._done(self._run("connect", self._items("connect", [info.packet()])))

    def _verdict(self, stage: str, kind: str, decision: Optional[Decision]) -> None:
        if kind == "continue":
            self._done(self._advance())
            return
        if kind == "skip":
            self._skip = stage
            self._done(self._advance())
            return
        self._done(self._finish(self._decide(stage, kind, decision)))

    def _decide(self, stage: str, kind: str, decision: Optional[Decision]) -> Decision:
        """Change state for a final reply at C{stage}; the decision to report."""
        connection = stage in _CONNECTION_STAGES
        if kind == "accept":
            if connection:
                self._endSession("accepted", CONTINUE)
            else:
                self._messageDone = True
            return ACCEPT
        if kind == "discard":
            if connection:
                # Postfix ignores it too: there is no message to discard.
                return CONTINUE
            self._messageDone = True
            return DISCARD
        if kind == "shutdown":
            self._endSession("rejected", SHUTDOWN)
            return SHUTDOWN
        if decision is None:
            decision = REJECT if kind == "reject" else TEMPFAIL
        if connection:
            self._endSession("rejected", decision)
        elif stage in _TRANSACTION_STAGES:
            self._transaction = False
        return decision

    def _endSession(self, state: str, decision: Decision) -> None:
        """The milter is done with this session: QUIT and close."""
        self._out += codec.simple(codec.SMFIC_QUIT)
        self.state = state
        self._sessionDecision = decision
        self.wantsClose = True
        self._job.clear()

    def _modification(self, reply: Any) -> None:
        leading = self.leadingSpace
        if isinstance(reply, ReplaceBody):
            if self._replacement is None:
                self._replacement = bytearray()
                self._replacementAt = len(self._modifications)
            self._replacement += reply.body
            if self.maxBodySize and len(self._replacement) > self.maxBodySize:
                raise MilterProtocolError(
                    "replacement body longer than %d bytes" % (self.maxBodySize,)
                )
            return
        modification = reply  # type: AnyModification
        if isinstance(reply, AddHeader):
            modification = AddHeader(
                checkHeaderName(reply.name), fromMilterValue(reply.value, leading)
            )
        elif isinstance(reply, InsertHeader):
            modification = InsertHeader(
                reply.index,
                checkHeaderName(reply.name),
                fromMilterValue(reply.value, leading),
            )
        elif isinstance(reply, ChangeHeader):
            name = checkHeaderName(reply.name)
            index = max(reply.index, 1)
            if reply.value == "":
                modification = DeleteHeader(index, name)
            else:
                modification = ChangeHeader(
                    index, name, fromMilterValue(reply.value, leading)
                )
        elif isinstance(reply, ChangeFrom):
            modification = ChangeFrom(stripBrackets(reply.sender), reply.parameters)
        elif isinstance(reply, AddRecipient):
            modification = AddRecipient(
                stripBrackets(reply.recipient), reply.parameters
            )
        elif isinstance(reply, DeleteRecipient):
            modification = DeleteRecipient(stripBrackets(reply.recipient))
        elif not isinstance(reply, Quarantine):
            raise MilterProtocolError("unexpected reply %r" % (reply,))
        self._modifications.append(modification)

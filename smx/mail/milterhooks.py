# -*- test-case-name: smx.mail.test.test_milterhooks -*-
"""
NAME
    smx.mail.milterhooks - SMTPS's calls of the sendmail milters

SYNOPSIS
    factory.milters = milterClients(cfg, section["milters"], reactor, log)
    class SMTPServerProtocol(MilterMixin, PolicyMilterMixin, ...): ...

DESCRIPTION
    The half of L{smx.mail.smtps.SMTPServerProtocol} that passes its
    sessions to the sendmail milters named by the C{milters} list of its
    smtps section (doc/milter.md), as Postfix passes them to its
    C{smtpd_milters}.  Each SMTP session opens one L{MilterChain}: one
    L{smx.milter.client.MilterSession} per milter, asked in the configured
    order; the first that rejects decides and the later ones are not asked
    for that stage.

    Stages, after SMTPS's own checks (and the policy milters) passed:
    C{connect} when the client connects, C{helo} at HELO/EHLO, C{mail}
    once SMTPS accepted MAIL, C{rcpt} for each recipient SMTPS accepted
    (and, for a milter that asked with C{SMFIP_RCPT_REJ}, for those it
    rejected), C{data} at DATA (or the first BDAT), C{unknown} for an
    unknown command, C{abort} when a transaction ends before its end,
    C{quit} when the connection ends.  The content is held in memory from
    DATA to the end of the message (what the client sent, smx's
    C{Received:} apart); then, as Postfix's cleanup does, each milter in
    turn gets the header, the end of the header, the body in chunks of at
    most 65,535 bytes and the end of the message, and its modifications
    are made before the next milter sees the message.  What is queued is
    the message with every change, smx's C{Received:} first, and the
    envelope with the milters' sender and recipients; the 250 comes after.

    Decisions: a rejection (C{reject}, C{tempfail}, a reply code, the
    default action of a milter that failed) is the reply to the command
    (at the end of the message: to the final dot), multi-line replies as
    the milter wrote them; at connect it is given to every MAIL of the
    session (Postfix's behaviour: the client may say HELO, QUIT, RSET).
    C{shutdown} (421) closes the session.  C{discard} at MAIL, RCPT, DATA
    or the end of the message accepts the message and drops it.
    C{accept} ends that milter's part (in the message or the session).

    Modifications (L{smx.milter.modifications.applyModifications}): added,
    inserted, changed and deleted headers and a replaced body change the
    queued content; a new sender, added and deleted recipients change the
    envelope (a message left without recipients is dropped, logged with
    C{discard=1}); a quarantine holds the message in the queue
    (C{smx qmgrctl release ID} lets it go), logged with its reason.
    smx's C{Received:} stays the first header: the milter never sees it,
    cannot change or delete it, and an insert at index 0 (opendkim's
    C{DKIM-Signature}) lands just below it.

DIAGNOSTICS
    A rejection is logged as SMTPS's own, with C{milter=NAME}; a milter
    that fails is logged by L{smx.milter.client} (C{sev=WARN,
    func=MilterSession, milter=NAME, ..., default_action=...}); the
    modifications of a message with C{milter=NAME, modified=...}.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple

from twisted.internet import defer

from smx import versionString
from smx.fastdefer import inlineCallbacks
from smx.interfaces import IMilterClient, IMilterSession
from smx.log import Logger
from smx.mail import server as sm
from smx.mail.commit import _TEMPFAIL
from smx.mail.pmilterhooks import parameterList
from smx.milter.client import MilterClient, MilterSettings, parseSocket
from smx.milter.macros import (
    DEFAULT_MACROS,
    MacroLists,
    authMacros,
    connectMacros,
    rejectedRecipientMacros,
    tlsMacros,
)
from smx.milter.modifications import (
    AddHeader,
    AddRecipient,
    ChangeFrom,
    ChangeHeader,
    DeleteHeader,
    DeleteRecipient,
    Envelope,
    InsertHeader,
    Quarantine,
    Recipient,
    ReplaceBody,
    applyModifications,
    joinMessage,
    splitMessage,
)
from smx.milter.protocol import CONTINUE, ConnectInfo, Decision
from smx.values import EnvelopeData, RecipientData, ReplyData

if TYPE_CHECKING:  # pragma: no cover
    from smx.config.model import Configuration, Section
    from smx.mail.commit import _Transaction

#: the most body bytes given to a milter session in one call
BODY_CHUNK = 65535

#: decisions that end a stage for every later milter
_REJECTIONS = ("reject", "tempfail", "shutdown")

#: the stand-in for smx's own Received: while modifications are made
_OWN = ("Received", "")


def macroListsFromSection(section: Section) -> MacroLists:
    """
    The macro names of a C{milter} section's C{macros} subsection, smx's
    defaults for the stages it does not set; a name longer than one
    character gets its braces.
    """
    macros = section.section("macros")
    lists = {}  # type: Dict[str, Tuple[str, ...]]
    for stage in ("connect", "helo", "mail", "rcpt", "data", "eoh", "eom"):
        names = macros[stage]
        if names is None:
            lists[stage] = DEFAULT_MACROS.forStage(stage)
            continue
        lists[stage] = tuple(
            n if len(n) == 1 or n.startswith("{") else "{%s}" % (n,) for n in names
        )
    return MacroLists(**lists)


def milterSettings(section: Section, maxBodySize: int = 0) -> MilterSettings:
    """The L{MilterSettings} of a C{milter NAME} section."""
    return MilterSettings(
        section.name or "",  # a milter section is always named
        parseSocket(section["socket"]),
        connectTimeout=section["connect_timeout"],
        commandTimeout=section["command_timeout"],
        contentTimeout=section["content_timeout"],
        defaultAction=section["default_action"],
        macros=macroListsFromSection(section),
        maxBodySize=maxBodySize,
    )


def milterClients(
    cfg: Configuration,
    names: Sequence[str],
    reactor: Any,
    log: Logger,
    maxBodySize: int = 0,
) -> List[MilterClient]:
    """
    One L{MilterClient} for each name of a C{milters} list, in its order
    (the names are checked by L{smx.config.filteroptions.checkMilters}).
    """
    byName = {s.name.lower(): s for s in cfg.sections("milter") if s.name}
    return [
        MilterClient(milterSettings(byName[n.lower()], maxBodySize), reactor, log)
        for n in names
    ]


def replyOf(decision: Decision) -> Tuple[int, str, str]:
    """
    A rejecting decision as C{(code, dsn, text)} for
    L{sm.ServerConnection.reject}: several lines joined by C{"\\n"}.
    """
    status = decision.status
    if not status:
        status = "4.7.1" if decision.code < 500 else "5.7.1"
    lines = []
    for line in decision.lines or ("",):
        first, _, rest = line.partition(" ")
        parts = first.split(".")
        if len(parts) == 3 and all(p.isdigit() for p in parts):
            line = rest
        lines.append(line)
    text = "\n".join(lines).strip("\n") or (
        "Service unavailable" if decision.code < 500 else "Command rejected"
    )
    return decision.code, status, text


class MilterChain:
    """
    The milters of one SMTP session, asked in the configured order.  Every
    call waits for the previous one (a stage is never sent to a milter
    still waiting for a reply).

    @ivar sessions: C{(name, IMilterSession)} in order.
    """

    def __init__(self, clients: Sequence[IMilterClient], sessionId: str) -> None:
        self.sessions = [(c.name, c.session(sessionId)) for c in clients]
        self._lock = defer.DeferredLock()

    def _serial(self, f: Callable[..., Any], *args: Any) -> defer.Deferred:
        # a fresh Deferred: the lock's one counts as called while it
        # waits, and SMTPS must wait for it
        done = defer.Deferred()  # type: defer.Deferred
        self._lock.run(f, *args).chainDeferred(done)
        return done

    def ask(self, stage: str, *args: Any) -> defer.Deferred:
        """
        Ask every milter about C{stage} in order until one rejects.

        @return: a L{Deferred} firing with C{(name, decision)} of the
            first rejection or discard, else C{(None, CONTINUE)}.
        """
        return self._serial(self._ask, stage, args)

    @inlineCallbacks
    def _ask(self, stage: str, args: Tuple[Any, ...]):
        discard = None  # type: Optional[Tuple[str, Decision]]
        for name, session in self.sessions:
            decision = yield getattr(session, stage)(*args)
            if decision.action in _REJECTIONS:
                return (name, decision)
            if decision.action == "discard" and discard is None:
                discard = (name, decision)
        return discard or (None, CONTINUE)

    def rejectedRecipient(
        self, recipient: str, parameters: Sequence[str], code: int, dsn: str, text: str
    ) -> defer.Deferred:
        """
        A recipient SMTPS rejected, for the milters that want to know.
        """

        @inlineCallbacks
        def _tell():
            macros = rejectedRecipientMacros("%d %s %s" % (code, dsn, text), dsn)
            for _, session in self.sessions:
                if session.wantsRejectedRecipients:
                    yield session.rcpt(recipient, parameters, macros)

        return self._serial(_tell)

    def message(
        self, content: bytes, envelope: Envelope, macros: Dict[str, str]
    ) -> defer.Deferred:
        """
        The message, to each milter in turn, each seeing the changes of
        the ones before.

        @param content: the message as received (smx's C{Received:} not
            included), CRLF line ends, no dot-stuffing.
        @return: a L{Deferred} firing with a L{MessageResult}.
        """
        return self._serial(self._message, content, envelope, macros)

    @inlineCallbacks
    def _message(self, content: bytes, envelope: Envelope, macros: Dict[str, str]):
        split, body = splitMessage(content)
        headers = list(split)  # type: List[Tuple[str, str]]
        result = MessageResult(content, envelope)
        for name, session in self.sessions:
            decision = yield self._send(session, headers, body, macros)
            if decision.action in _REJECTIONS or decision.action == "discard":
                result.rejectedBy = name
                result.decision = decision
                # the milters after it never see the end of this message
                for _, later in self.sessions:
                    if later is not session:
                        later.abort()
                return result
            if not decision.modifications:
                continue
            mods = [
                (
                    InsertHeader(max(m.index, 1), m.name, m.value)
                    if isinstance(m, InsertHeader)
                    else m
                )
                for m in decision.modifications
            ]
            edited = applyModifications(
                (_OWN,) + tuple(headers), body, result.envelope, mods, ownHeaders=1
            )
            assert edited.headers[0] is _OWN, "MilterChain._message: lost Received"
            headers, body = list(edited.headers[1:]), edited.body
            result.envelope = edited.envelope
            if edited.quarantine is not None:
                result.quarantine = edited.quarantine
            if any(not isinstance(m, _ENVELOPE_CHANGES) for m in mods):
                result.contentChanged = True
            result.modified.append((name, decision.modifications))
        if result.contentChanged:
            result.content = joinMessage(headers, body)
        return result

    @inlineCallbacks
    def _send(
        self,
        session: IMilterSession,
        headers: Sequence[Tuple[str, str]],
        body: bytes,
        macros: Dict[str, str],
    ):
        decision = CONTINUE
        if headers:
            decision = yield session.headers(list(headers))
            if decision.action in _REJECTIONS or decision.action == "discard":
                return decision
        decision = yield session.eoh(macros)
        if decision.action in _REJECTIONS or decision.action == "discard":
            return decision
        for start in range(0, len(body), BODY_CHUNK):
            decision = yield session.body(body[start : start + BODY_CHUNK])
            if decision.action in _REJECTIONS or decision.action == "discard":
                return decision
        decision = yield session.endOfMessage(macros)
        return decision

    def abort(self) -> None:
        """The transaction ended before its end of message."""

        def _abort() -> None:
            for _, session in self.sessions:
                session.abort()

        self._serial(_abort)

    def unknown(self, line: str) -> defer.Deferred:
        """An unknown command (answered already)."""
        return self.ask("unknown", line)

    def quit(self) -> None:
        """The SMTP session ended: close every connection."""
        for _, session in self.sessions:
            session.quit()


_ENVELOPE_CHANGES = (ChangeFrom, AddRecipient, DeleteRecipient, Quarantine)
_CONTENT_CHANGES = (AddHeader, InsertHeader, ChangeHeader, DeleteHeader, ReplaceBody)


class MessageResult:
    """
    What the milters made of a message.

    @ivar content: the message to queue (without smx's C{Received:}).
    @ivar contentChanged: whether C{content} differs from what came.
    @ivar envelope: the envelope to queue.
    @ivar quarantine: the reason of a quarantine, or C{None}.
    @ivar decision: a rejecting or discarding decision, or C{None}.
    @ivar rejectedBy: the milter that made it.
    @ivar modified: C{(milter, modifications)} of the milters that asked
        for changes.
    """

    def __init__(self, content: bytes, envelope: Envelope) -> None:
        self.content = content
        self.contentChanged = False
        self.envelope = envelope
        self.quarantine = None  # type: Optional[str]
        self.decision = None  # type: Optional[Decision]
        self.rejectedBy = None  # type: Optional[str]
        self.modified = []  # type: List[Tuple[str, Sequence[Any]]]


class MilterMixin:
    """
    The milter calls of L{smx.mail.smtps.SMTPServerProtocol}; it uses the
    protocol's C{factory}, C{connection}, C{policy}, C{transaction},
    C{transport}, C{tlsInfo} and C{authUser}.

    @ivar mlChain: the session's L{MilterChain}, or C{None}.
    """

    factory = None  # type: Any
    connection = None  # type: Any
    policy = None  # type: Any
    transaction = None  # type: Any
    transport = None  # type: Any
    tlsInfo = None  # type: Any
    authUser = None  # type: Any
    sessionId = ""
    clientAddress = ""
    mlChain = None  # type: Optional[MilterChain]
    #: the reply every MAIL gets after a rejection at connect
    _mlDenied = None  # type: Optional[Tuple[int, str, str]]
    _mlDeniedBy = None  # type: Optional[str]
    _sasl = None  # type: Any
    _lost = False
    _logEnd: Callable[..., None]
    _commit: Callable[[Any, sm.EndOfData], Any]

    def _mlLog(self, fields: Dict[str, Any], name: Optional[str], reply: Any) -> None:
        record = {"ss_sess": self.sessionId}  # type: Dict[str, Any]
        if self.transaction is not None:
            record["ss_ta"] = self.transaction.id
        record.update(fields)
        record["stat"] = reply[0]
        record["reply"] = "%d %s %s" % (reply[0], reply[1], reply[2].replace("\n", " "))
        record["milter"] = name
        self.factory.log.info(**record)

    def _mlOpen(self) -> Optional[defer.Deferred]:
        """
        SMTPS's connection checks passed: connect to the milters.

        @return: a L{Deferred} firing with a reply that refuses the
            session (a milter's shutdown), or C{None}; C{None} at once
            when there is no milter.
        """
        clients = getattr(self.factory, "milters", None)
        if not clients:
            return None
        self.mlChain = MilterChain(clients, self.sessionId)
        peer = self.transport.getPeer()
        host = self.transport.getHost()
        port = getattr(peer, "port", None)
        family = "inet6" if getattr(self, "ipv6", False) else "inet"
        name = self.policy.clientName
        info = ConnectInfo(name or None, family, self.clientAddress, port or 0)
        settings = self.factory.settings
        macros = connectMacros(
            settings.hostname,
            self.clientAddress,
            port,
            clientName=name,
            daemonName=settings.name or "smtps",
            daemonAddress=getattr(host, "host", None),
            daemonPort=getattr(host, "port", None),
            version=versionString,
        )
        d = self.mlChain.ask("connect", info, macros)

        def _cb(result: Tuple[Optional[str], Decision]) -> Optional[ReplyData]:
            name, decision = result
            if decision.action not in _REJECTIONS:
                return None
            reply = replyOf(decision)
            self._mlLog({"where": "connection"}, name, reply)
            if decision.action == "shutdown":
                return {"code": reply[0], "dsn": reply[1], "text": reply[2]}
            self._mlDenied, self._mlDeniedBy = reply, name
            return None

        return d.addCallback(_cb)

    def _mlReject(
        self, fields: Dict[str, Any], name: Optional[str], decision: Decision
    ):
        reply = replyOf(decision)
        self._mlLog(fields, name, reply)
        self.connection.reject(*reply)
        if decision.action == "shutdown":
            self.connection.close()

    def _mlHelo(self, name: str, then: Callable[[], Any]) -> Any:
        if self.mlChain is None or self._mlDenied is not None:
            return then()
        macros = None
        info = self.tlsInfo
        if info is not None:
            macros = tlsMacros(
                str(info.get("version", "")),
                str(info.get("cipher", "")),
                int(info.get("bits", 0) or 0),
            )

        def _cb(result: Tuple[Optional[str], Decision]) -> Any:
            milter, decision = result
            if decision.action in _REJECTIONS:
                self._mlReject({"helo": name}, milter, decision)
                return None
            return then()

        return self.mlChain.ask("helo", name, macros).addCallback(_cb)

    @inlineCallbacks
    def _mlMail(self, event: sm.MailFrom, ta: _Transaction):
        """
        SMTPS accepted MAIL: ask the milters.

        @return: a L{Deferred} firing with C{True} when MAIL is rejected
            (the reply is given).
        """
        sender = "<%s>" % (event.sender,)
        if self._mlDenied is not None:
            self._mlLog({"mail": sender}, self._mlDeniedBy, self._mlDenied)
            self.connection.reject(*self._mlDenied)
            return True
        macros = {"i": ta.id}  # type: Dict[str, str]
        if self.authUser is not None:
            mechanism = getattr(self, "authMechanism", None) or ""
            macros.update(authMacros(mechanism, self.authUser))
        assert self.mlChain is not None, "MilterMixin._mlMail: no milters"
        name, decision = yield self.mlChain.ask(
            "mail", event.sender, parameterList(event.parameters), macros
        )
        if decision.action in _REJECTIONS:
            self._mlReject({"mail": sender}, name, decision)
            return True
        if decision.action == "discard":
            self.factory.log.info(
                ss_sess=self.sessionId, ss_ta=ta.id, milter=name, discard=1
            )
            self.policy.discardTransaction = True
        return False

    @inlineCallbacks
    def _mlRcpt(self, event: sm.RcptTo):
        """
        Ask the milters about a recipient SMTPS accepted.

        @return: a L{Deferred} firing with C{None} (no objection),
            C{"discard"} (the transaction is discarded) or C{"rejected"}
            (the reply is given).
        """
        address = "<%s>" % (event.recipient,)
        assert self.mlChain is not None, "MilterMixin._mlRcpt: no milters"
        name, decision = yield self.mlChain.ask(
            "rcpt", event.recipient, parameterList(event.parameters), None
        )
        if decision.action in _REJECTIONS:
            self._mlReject({"rcpt": address}, name, decision)
            return "rejected"
        if decision.action == "discard":
            ta = self.transaction
            self.factory.log.info(
                ss_sess=self.sessionId,
                ss_ta=ta.id if ta is not None else None,
                milter=name,
                discard=1,
            )
            self.policy.discardTransaction = True
            if ta is not None and ta.writer is not None:
                ta.writer.abort()
                ta.writer = None
            return "discard"
        return None

    def _mlRcptRejected(
        self, event: sm.RcptTo, code: int, dsn: str, text: str
    ) -> Optional[defer.Deferred]:
        """A recipient SMTPS rejected (C{SMFIP_RCPT_REJ})."""
        if self.mlChain is None:
            return None
        return self.mlChain.rejectedRecipient(
            event.recipient, parameterList(event.parameters), code, dsn, text
        )

    def _mlData(self, event: sm.DataCommand, then: Callable[[], Any]) -> Any:
        """
        DATA (or the first BDAT): ask the milters; the content is held for
        them until the end of the message, when they get it as Postfix's
        cleanup gives it.
        """
        ta = self.transaction
        if self.mlChain is None or ta is None:
            return then()

        def _cb(result: Tuple[Optional[str], Decision]) -> Any:
            name, decision = result
            if decision.action in _REJECTIONS:
                self._mlReject({"data": "DATA"}, name, decision)
                if event.chunk is not None:
                    # a rejected BDAT ends the transaction (RFC 3030)
                    self._mlAbort()
                return None
            if decision.action == "discard":
                self.factory.log.info(
                    ss_sess=self.sessionId, ss_ta=ta.id, milter=name, discard=1
                )
                self.policy.discardTransaction = True
            else:
                ta.milterContent = []
            return then()

        return self.mlChain.ask("data", {"i": ta.id}).addCallback(_cb)

    def _mlEndOfMessage(self, ta: _Transaction, event: sm.EndOfData) -> defer.Deferred:
        """
        The content passed SMTPS's checks: the milters see it, their
        changes are made, and it is written after smx's C{Received:}.
        An unexpected failure drops the content and answers 451 4.3.0.
        """

        def _eb(reason: Any) -> None:
            ta.abort()
            self.factory.log.failure(
                "_mlEndOfMessage", reason, ss_sess=self.sessionId, ss_ta=ta.id
            )
            if not self._lost and self.connection.awaitingReply:
                self.connection.reject(*_TEMPFAIL)

        return self._mlMessage(ta, event).addErrback(_eb)

    @inlineCallbacks
    def _mlMessage(self, ta: _Transaction, event: sm.EndOfData):
        # held since DATA: this path runs only with milters
        assert ta.milterContent is not None
        content = b"".join(ta.milterContent)
        ta.milterContent = None
        recipients = tuple(
            Recipient(
                r["address"],
                tuple(
                    p
                    for p in (
                        "NOTIFY=%s" % r["notify"] if r.get("notify") else None,
                        "ORCPT=%s" % r["orcpt"] if r.get("orcpt") else None,
                    )
                    if p
                ),
            )
            for r in ta.recipients
        )
        envelope = Envelope(ta.sender, recipients)
        assert self.mlChain is not None, "MilterMixin._mlEndOfMessage: no milters"
        result = yield self.mlChain.message(content, envelope, {"i": ta.id})
        if self._lost:
            # the client left before the reply: nothing to queue
            ta.abort()
            return None
        if result.decision is not None:
            decision = result.decision
            if decision.action == "discard":
                ta.abort()
                self._logEnd(
                    ta, event, event.size, stat=0, discard=1, milter=result.rejectedBy
                )
                self.connection.accept("%s Message accepted for delivery" % (ta.id,))
                return None
            ta.abort()
            reply = replyOf(decision)
            self._logEnd(
                ta,
                event,
                event.size,
                stat=reply[0],
                reply="%d %s %s" % (reply[0], reply[1], reply[2].replace("\n", " ")),
                milter=result.rejectedBy,
            )
            self.connection.reject(*reply)
            if decision.action == "shutdown":
                self.connection.close()
            return None
        for name, modifications in result.modified:
            self.factory.log.info(
                ss_sess=self.sessionId,
                ss_ta=ta.id,
                milter=name,
                modified="/".join(sorted({type(m).__name__ for m in modifications})),
            )
        self._mlNewEnvelope(ta, result.envelope)
        if result.quarantine is not None:
            ta.quarantine = result.quarantine
            self.factory.log.notice(
                ss_sess=self.sessionId, ss_ta=ta.id, quarantine=result.quarantine
            )
        if ta.writer is not None:
            ta.writer.write(result.content)
            ta.stored += len(result.content) - len(content)
        if not ta.recipients:
            ta.abort()
            self._logEnd(ta, event, event.size, stat=0, discard=1, nrcpts=0)
            self.connection.accept("%s Message accepted for delivery" % (ta.id,))
            return None
        result = yield self._commit(ta, event)
        return result

    def _mlNewEnvelope(self, ta: _Transaction, envelope: Envelope) -> None:
        """The milters' sender and recipients for the transaction."""
        ta.sender = envelope.sender
        old = {r["address"]: r for r in ta.recipients}
        recipients = []  # type: List[RecipientData]
        for index, r in enumerate(envelope.recipients):
            entry = dict(old.get(r.address) or {"address": r.address})
            entry["index"] = index
            for parameter in r.parameters:
                keyword, _, value = parameter.partition("=")
                if keyword.upper() == "NOTIFY" and value:
                    entry["notify"] = value.upper()
            recipients.append(entry)
        ta.recipients = recipients

    def _mlAbort(self) -> None:
        """The transaction ended without a 250 to the final dot."""
        if self.mlChain is not None:
            self.mlChain.abort()
        ta = self.transaction
        if ta is not None:
            ta.milterContent = None

    def _mlUnknown(self, line: bytes) -> None:
        """An unknown command (answered 500 already)."""
        if self.mlChain is not None:
            self.mlChain.unknown(line.decode("utf-8", "replace"))

    def _mlClose(self) -> None:
        """The connection ended."""
        chain, self.mlChain = self.mlChain, None
        if chain is not None:
            chain.quit()

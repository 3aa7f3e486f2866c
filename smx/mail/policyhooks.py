# -*- test-case-name: smx.mail.test.test_policyhooks -*-
"""
NAME
    smx.mail.policyhooks - SMTPS's calls of Postfix policy servers

SYNOPSIS
    class SMTPServerProtocol(PolicyServerMixin, PolicyMilterMixin, ...): ...

    factory.policyServers = {"RCPT": [greylist, spf]}   # IPolicyClients

DESCRIPTION
    The half of L{smx.mail.smtps.SMTPServerProtocol} that asks the Postfix
    SMTP access policy servers (C{policy NAME { }}, doc/policy.md) of its
    smtps section and applies their decisions, as Postfix's
    C{check_policy_service} does.  A stage is asked after smx's own checks
    of it passed and before the policy milters: CONNECT (C{connect_
    policies}), HELO/EHLO (C{helo_policies}), MAIL (C{mail_policies}),
    RCPT (C{policies}), DATA and the first BDAT (C{data_policies}), and
    END-OF-MESSAGE (C{end_of_data_policies}).

    The policies of a stage are asked in order with the same request:
    C{OK} ends the stage accepted; C{DUNNO}, C{WARN}, C{INFO}, C{PREPEND},
    C{REDIRECT}, C{BCC} and C{HOLD} ask the next one; a rejection
    (C{REJECT}, C{DEFER}, C{4NN}, C{5NN}, a failed server's
    C{default_action}) is the reply; C{DEFER_IF_PERMIT} makes a stage that
    ends accepted 450, C{DEFER_IF_REJECT} makes a later 5xx of the stage
    450; C{DISCARD} ends the stage accepted and drops the transaction.
    What a stage's decisions do (headers, recipients, discard, hold) is
    done only when the stage ends accepted:

      PREPEND    the header goes into the queued message, after smx's own
                 C{Received:} header (which stays first); at CONNECT and
                 HELO into every message of the session
      DISCARD    the transaction (at CONNECT, HELO: every one of the
                 session) is answered 250 and dropped, as the access map's
                 C{discard}
      REDIRECT   the queued message goes to that address only
      BCC        the queued message goes to that address too
      HOLD       the message is accepted and held in the queue (the
                 quarantine of the milters: C{smx mailq} shows it held,
                 C{smx qmgrctl release ID} lets it go), as Postfix's hold
                 queue
      FILTER     not supported: DUNNO, logged with C{sev=WARN} (by
                 L{smx.milter.policyclient})

DIAGNOSTICS
    A rejection is logged as SMTPS's own with C{policy=NAME}; a server
    that failed is logged by L{smx.milter.policyclient.PolicyClient} with
    C{sev=ERR, policy=NAME} and its C{default_action} applies.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

from twisted.internet import defer
from twisted.python import failure

from smx.fastdefer import inlineCallbacks
from smx.mail import server as sm
from smx.mail.dsnparams import DSNParameterError, decodeXtext
from smx.milter import policy as pp
from smx.milter.policy import (
    REPLY_CLASSES,
    PolicyDecision,
    PolicySession,
    PolicyTransaction,
    certificateFields,
    policyAttributes,
)

if TYPE_CHECKING:  # pragma: no cover
    from smx.config.model import Configuration, Section
    from smx.interfaces import IPolicyClient
    from smx.mail.commit import _Transaction
    from smx.mail.listener import ServerSettings
    from smx.mail.smtps import SMTPServerFactory

#: the decisions whose effect is kept when their stage ends accepted
_EFFECTS = (pp.PREPEND, pp.REDIRECT, pp.BCC, pp.HOLD, pp.DISCARD)


@dataclasses.dataclass
class _Effects:
    """
    What accepted stages' decisions asked for.

    @ivar headers: C{PREPEND} headers, in the order they were given.
    @ivar redirect: the C{REDIRECT} address (the last one), or C{""}.
    @ivar bcc: the C{BCC} addresses.
    @ivar hold: the C{HOLD} decision (its policy's name), or C{""}.
    @ivar holdText: the text of the C{HOLD} decision.
    """

    headers: List[str] = dataclasses.field(default_factory=list)
    redirect: str = ""
    bcc: List[str] = dataclasses.field(default_factory=list)
    hold: str = ""
    holdText: str = ""


class PolicyServerMixin:
    """
    The policy server calls of L{smx.mail.smtps.SMTPServerProtocol}; it
    uses the protocol's C{factory} (C{policyServers}: C{protocol_state}
    to L{smx.interfaces.IPolicyClient}s), C{connection}, C{policy},
    C{transaction}, C{transport}, C{clientAddress}, C{tlsInfo} and
    C{authUser}.
    """

    factory = None  # type: Any
    connection = None  # type: Any
    policy = None  # type: Any
    transaction = None  # type: Any
    transport = None  # type: Any
    sessionId = ""
    clientAddress = ""
    tlsInfo = None  # type: Any
    authUser = None  # type: Any
    #: the effects of CONNECT and HELO (every transaction of the session)
    _pdSessionEffects = None  # type: Optional[Dict[str, _Effects]]
    #: the effects of the current transaction, and its id
    _pdEffects = None  # type: Optional[_Effects]
    _pdTransactionId = ""
    _pdSaslSender = ""
    _pdSaslMethod = ""
    _pdCertificate = None  # type: Optional[Dict[str, str]]
    # the protocol's (L{smx.mail.commit.CommitMixin}, L{smx.mail.smtps})
    _logEnd: Callable[..., None]
    _pmAbort: Callable[[], None]
    _pmEndOfMessage: Callable[[Any, sm.EndOfData], Any]

    def _pdServers(self, stage: str) -> List[IPolicyClient]:
        servers = getattr(self.factory, "policyServers", None)
        if not servers:
            return []
        return servers.get(stage) or []

    # -- the request ----------------------------------------------------------

    def _pdSession(self, helo: Optional[sm.Helo] = None) -> PolicySession:
        """
        What the requests say about the session now.

        @param helo: the HELO/EHLO being asked about (the connection
            knows it only once it is accepted).
        """
        peer = self.transport.getPeer()
        host = self.transport.getHost()
        conn = self.connection
        name = getattr(self.policy, "clientName", None) or ""
        tls = self.tlsInfo or {}
        fields = {}  # type: Dict[str, Any]
        if tls:
            fields = dict(
                encryptionProtocol=str(tls.get("version") or ""),
                encryptionCipher=str(tls.get("cipher") or ""),
                encryptionKeysize=int(tls.get("bits") or 0),
            )
            fields.update(self._pdCertificateFields(tls))
        return PolicySession(
            clientAddress=self.clientAddress,
            clientPort=getattr(peer, "port", 0) or 0,
            clientName=name,
            reverseClientName=name,
            serverAddress=getattr(host, "host", "") or "",
            serverPort=getattr(host, "port", 0) or 0,
            heloName=(helo.name if helo else conn.heloName) or "",
            protocolName=(
                "ESMTP" if (helo.extended if helo else conn.extended) else "SMTP"
            ),
            saslMethod=self._pdSaslMethod if self.authUser else "",
            saslUsername=self.authUser or "",
            **fields,
        )

    def _pdCertificateFields(self, tls: Dict[str, Any]) -> Dict[str, str]:
        if self._pdCertificate is None:
            self._pdCertificate = {}
            try:
                peer = self.transport.getHandle().get_peer_certificate()
                if peer is not None:
                    self._pdCertificate = certificateFields(
                        peer, tls.get("verify") == "OK"
                    )
            except Exception:
                self.factory.log.failure(
                    "PolicyServerMixin._pdCertificateFields",
                    failure.Failure(),
                    ss_sess=self.sessionId,
                )
        return self._pdCertificate

    def _pdTransaction(
        self, ta: Optional[_Transaction], size: Optional[int] = None
    ) -> PolicyTransaction:
        if ta is None:
            return PolicyTransaction()
        return PolicyTransaction(
            instance=ta.id,
            queueId=ta.id,
            sender=ta.sender,
            recipients=tuple(r["address"] for r in ta.recipients),
            size=ta.declaredSize if size is None else size,
            saslSender=self._pdSaslSender,
        )

    # -- asking -----------------------------------------------------------------

    @inlineCallbacks
    def _pdAsk(
        self,
        stage: str,
        state: str,
        subject: str,
        field: Tuple[str, str],
        ta: Optional[_Transaction] = None,
        recipient: str = "",
        size: Optional[int] = None,
        helo: Optional[sm.Helo] = None,
    ):
        """
        Ask the policies of C{stage} about C{state}.

        @param subject: what a rejection names (C{<subject>: Class
            rejected: ...}).
        @param field: the name and value of the log record of a rejection.
        @return: a L{Deferred} firing with C{(reply, effects)}: a rejecting
            I{reply} C{dict} (logged) or C{None}, and the decisions with
            an effect when the stage is accepted.
        """
        servers = self._pdServers(stage)
        attributes = policyAttributes(
            state,
            self._pdSession(helo),
            self._pdTransaction(ta, size),
            recipient=recipient,
        )
        replyClass = REPLY_CLASSES[state]
        deferIfPermit = None  # type: Optional[Tuple[str, PolicyDecision]]
        deferIfReject = None  # type: Optional[Tuple[str, PolicyDecision]]
        effects = []  # type: List[Tuple[str, PolicyDecision]]
        contexts = getattr(self.factory, "policyContexts", None) or {}
        for server in servers:
            context = contexts.get(server.name)
            asked = attributes
            if context:
                asked = dict(attributes, policy_context=pp.sanitize(context))
            decision = yield server.check(asked)
            action = decision.action
            if decision.rejects:
                name = server.name
                if decision.code >= 500 and deferIfReject is not None:
                    name, decision = deferIfReject
                return self._pdRejected(name, decision, subject, replyClass, field, ta)
            if action == pp.OK:
                break
            if action == pp.DEFER_IF_PERMIT:
                if deferIfPermit is None:
                    deferIfPermit = (server.name, decision)
            elif action == pp.DEFER_IF_REJECT:
                if deferIfReject is None:
                    deferIfReject = (server.name, decision)
            elif action in (pp.WARN, pp.INFO):
                self.factory.log.info(
                    ss_sess=self.sessionId,
                    policy=server.name,
                    protocol_state=state,
                    **{action.lower(): decision.text[:200]},
                )
            elif action in _EFFECTS:
                effects.append((server.name, decision))
                if action == pp.DISCARD:
                    # Postfix: DISCARD is a permit
                    break
        if deferIfPermit is not None:
            name, decision = deferIfPermit
            return self._pdRejected(name, decision, subject, replyClass, field, ta)
        return (None, effects)

    def _pdRejected(
        self,
        name: str,
        decision: PolicyDecision,
        subject: str,
        replyClass: str,
        field: Tuple[str, str],
        ta: Optional[_Transaction],
    ) -> Tuple[Dict[str, Any], list]:
        reply = decision.reply(subject, replyClass)
        assert reply is not None
        record = {"ss_sess": self.sessionId}  # type: Dict[str, Any]
        if ta is not None:
            record["ss_ta"] = ta.id
        record[field[0]] = field[1]
        record["stat"] = reply["code"]
        record["reply"] = "%d %s %s" % (reply["code"], reply["dsn"], reply["text"])
        record["policy"] = name
        if decision.default:
            record["default_action"] = 1
        self.factory.log.info(**record)
        return (reply, [])

    def _pdApply(self, effects: List[Tuple[str, PolicyDecision]], into: _Effects):
        """Keep the effects of an accepted stage."""
        for name, decision in effects:
            action = decision.action
            if action == pp.PREPEND:
                into.headers.append(decision.text)
            elif action == pp.REDIRECT:
                into.redirect = _address(decision.text)
            elif action == pp.BCC:
                into.bcc.append(_address(decision.text))
            elif action == pp.HOLD:
                into.hold = name
                into.holdText = decision.text
            elif action == pp.DISCARD:
                self.policy.discardTransaction = True

    def _pdCurrent(self, ta: Optional[_Transaction] = None) -> _Effects:
        """The effects of transaction C{ta} (default: the current one)."""
        if ta is None:
            ta = self.transaction
        taId = ta.id if ta is not None else ""
        if self._pdEffects is None or self._pdTransactionId != taId:
            self._pdEffects = _Effects()
            self._pdTransactionId = taId
        return self._pdEffects

    def _pdSessionEffect(self, stage: str) -> _Effects:
        if self._pdSessionEffects is None:
            self._pdSessionEffects = {}
        effects = self._pdSessionEffects[stage] = _Effects()
        return effects

    def _pdAll(self, ta: Optional[_Transaction] = None) -> List[_Effects]:
        """The effects that apply to C{ta} (default: the current one)."""
        out = []
        for stage in ("CONNECT", "HELO"):
            if self._pdSessionEffects and stage in self._pdSessionEffects:
                out.append(self._pdSessionEffects[stage])
        out.append(self._pdCurrent(ta))
        return out

    # -- the stages ------------------------------------------------------------

    def _pdConnect(self) -> Optional[defer.Deferred]:
        """
        SMTPS's connection checks passed: ask the CONNECT policies.

        @return: a L{Deferred} firing with a reply to refuse the session,
            or C{None}; C{None} at once when there is no CONNECT policy.
        """
        if not self._pdServers("CONNECT"):
            return None
        return self._pdAskConnect()

    @inlineCallbacks
    def _pdAskConnect(self):
        name = getattr(self.policy, "clientName", None) or "unknown"
        reply, effects = yield self._pdAsk(
            "CONNECT",
            "CONNECT",
            "%s[%s]" % (name, self.clientAddress),
            ("where", "connection"),
        )
        if reply is None:
            self._pdApply(effects, self._pdSessionEffect("CONNECT"))
            if self.policy.discardTransaction:
                self.policy.discardSession = True
        return reply

    def _pdHelo(self, event: sm.Helo, then: Callable[[], Any]) -> Any:
        """HELO/EHLO passed SMTPS's checks: ask, then C{then}."""
        if not self._pdServers("HELO"):
            return then()
        d = self._pdAsk(
            "HELO",
            "EHLO" if event.extended else "HELO",
            event.name,
            ("helo", event.name),
            helo=event,
        )

        def _cb(result: Any) -> Any:
            reply, effects = result
            if reply is not None:
                self.connection.reject(reply["code"], reply["dsn"], reply["text"])
                return None
            self._pdApply(effects, self._pdSessionEffect("HELO"))
            if self.policy.discardTransaction:
                self.policy.discardSession = True
            return then()

        return d.addCallback(_cb)

    def _pdMail(self, event: sm.MailFrom, ta: _Transaction) -> Any:
        """
        SMTPS accepted MAIL (C{ta} is the new transaction): ask the MAIL
        policies.

        @return: C{True} (or a L{Deferred} of it) when one rejected it (the
            reply is given), else C{False}.
        """
        self._pdSaslSender = ""
        for keyword, value in event.parameters or ():
            if keyword == "AUTH" and value:
                self._pdSaslSender = _authSender(value)
        if not self._pdServers("MAIL"):
            return False
        return self._pdCommand(
            "MAIL", event.sender, ("mail", "<%s>" % (event.sender,)), ta
        )

    def _pdRcpt(self, event: sm.RcptTo, address: str) -> Any:
        """
        SMTPS accepted the recipient C{address}: ask the RCPT policies.

        @return: C{True} (or a L{Deferred} of it) when one rejected it (the
            reply is given), else C{False}.
        """
        if not self._pdServers("RCPT"):
            return False
        return self._pdCommand(
            "RCPT",
            event.recipient,
            ("rcpt", "<%s>" % (event.recipient,)),
            self.transaction,
            recipient=address,
        )

    @inlineCallbacks
    def _pdCommand(
        self,
        state: str,
        subject: str,
        field: Tuple[str, str],
        ta: _Transaction,
        recipient: str = "",
    ):
        """
        Ask about MAIL or RCPT: give a rejection as the reply, keep the
        effects of an acceptance.

        @return: a L{Deferred} firing with C{True} when it was rejected.
        """
        reply, effects = yield self._pdAsk(
            state, state, subject, field, ta, recipient=recipient
        )
        if reply is not None:
            self.connection.reject(reply["code"], reply["dsn"], reply["text"])
            return True
        self._pdApply(effects, self._pdCurrent())
        return False

    def _pdData(self, event: sm.DataCommand, then: Callable[[], Any]) -> Any:
        """DATA (or the first BDAT): ask."""
        if not self._pdServers("DATA"):
            return then()
        d = self._pdAsk("DATA", "DATA", "DATA", ("data", "DATA"), self.transaction)

        def _cb(result: Any) -> Any:
            reply, effects = result
            if reply is not None:
                self.connection.reject(reply["code"], reply["dsn"], reply["text"])
                return None
            self._pdApply(effects, self._pdCurrent())
            return then()

        return d.addCallback(_cb)

    def _policyHeaders(self, ta: _Transaction) -> bytes:
        """
        The C{PREPEND} headers of the transaction, to follow smx's own
        C{Received:} header.
        """
        if self._pdSessionEffects is None and self._pdEffects is None:
            return b""
        lines = []
        for effects in self._pdAll(ta):
            for header in effects.headers:
                text = "".join(c if c >= " " or c == "\t" else " " for c in header)
                lines.append(text.encode("utf-8", "replace") + b"\r\n")
        return b"".join(lines)

    def _pdEndOfMessage(self, ta: _Transaction, event: sm.EndOfData) -> Any:
        """
        The content passed SMTPS's checks: ask the END-OF-MESSAGE
        policies, apply C{REDIRECT} and C{BCC}, then the pmilters.
        """
        if not self._pdServers("END-OF-MESSAGE"):
            self._pdRecipients(ta)
            return self._pmEndOfMessage(ta, event)
        d = self._pdAsk(
            "END-OF-MESSAGE",
            "END-OF-MESSAGE",
            "END-OF-MESSAGE",
            ("where", "eom"),
            ta,
            size=event.size,
        )

        def _cb(result: Any) -> Any:
            reply, effects = result
            current = self._pdCurrent(ta)
            if reply is None:
                self._pdApply(effects, current)
            if reply is not None:
                ta.abort()
                self._logEnd(ta, event, event.size, stat=reply["code"])
                self._pmAbort()
                self.connection.reject(reply["code"], reply["dsn"], reply["text"])
                return None
            if self.policy.discardTransaction:
                ta.abort()
            self._pdRecipients(ta)
            return self._pmEndOfMessage(ta, event)

        return d.addCallback(_cb)

    def _pdRecipients(self, ta: _Transaction) -> None:
        """
        Apply C{REDIRECT} and C{BCC} to the recipients to queue, and
        C{HOLD} to the message (held in the queue).
        """
        if self._pdSessionEffects is None and self._pdEffects is None:
            return
        redirect = ""
        bcc = []  # type: List[str]
        hold = None  # type: Optional[_Effects]
        for effects in self._pdAll(ta):
            redirect = effects.redirect or redirect
            bcc.extend(effects.bcc)
            if effects.hold and hold is None:
                hold = effects
        if hold is not None:
            ta.quarantine = ("policy %s: HOLD %s" % (hold.hold, hold.holdText))[:200]
            self.factory.log.notice(
                ss_sess=self.sessionId,
                ss_ta=ta.id,
                policy=hold.hold,
                hold=1,
                quarantine=ta.quarantine,
            )
        if redirect:
            ta.recipients = [{"address": redirect, "index": 0}]
            self.factory.log.info(
                ss_sess=self.sessionId,
                ss_ta=ta.id,
                rcpt="<%s>" % (redirect,),
                idx=0,
                stat=0,
                redirect=1,
            )
        for address in bcc:
            if any(r["address"] == address for r in ta.recipients):
                continue
            index = len(ta.recipients)
            ta.recipients.append({"address": address, "index": index})
            self.factory.log.info(
                ss_sess=self.sessionId,
                ss_ta=ta.id,
                rcpt="<%s>" % (address,),
                idx=index,
                stat=0,
                bcc=1,
            )


def _authSender(value: str) -> str:
    """
    The address of MAIL's C{AUTH=<mailbox>} (RFC 4954 §5: xtext), without
    angle brackets; C{""} for C{<>} or one that is not xtext.
    """
    try:
        text = decodeXtext(value)
    except DSNParameterError:
        return ""
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    return text


def _address(text: str) -> str:
    """The address of C{REDIRECT}/C{BCC}, without angle brackets."""
    text = text.strip().split()[0] if text.strip() else ""
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    return text


def policyStages(section: Section) -> Dict[str, Tuple[str, ...]]:
    """
    The policies an smtps section asks (its options of
    L{smx.config.filteroptions.SMTPS_POLICY_OPTIONS}): C{protocol_state}
    to names, only the stages that have some.
    """
    out = {}  # type: Dict[str, Tuple[str, ...]]
    for state, names in (
        ("CONNECT", section["connect_policies"]),
        ("HELO", section["helo_policies"]),
        ("MAIL", section["mail_policies"]),
        ("RCPT", section["policies"]),
        ("DATA", section["data_policies"]),
        ("END-OF-MESSAGE", section["end_of_data_policies"]),
    ):
        if names:
            out[state] = tuple(names)
    return out


def policyServers(
    cfg: Configuration,
    settings: ServerSettings,
    clients: Dict[str, IPolicyClient],
    factory: SMTPServerFactory,
) -> Dict[str, List[IPolicyClient]]:
    """
    The clients an smtps section asks, by protocol state (the factory's
    C{policyServers}).

    @param cfg: the configuration (its C{policy NAME} sections).
    @param settings: the section's L{smx.mail.listener.ServerSettings}.
    @param clients: the clients made so far, by lower-case name: one
        client (one connection) per policy server, shared by every smtps
        section that asks it; new ones are added.
    @param factory: the section's factory (its reactor and log); its
        C{policyContexts} is set to the C{policy_context} of each policy
        that has one, by name.
    """
    from smx.milter.policyclient import PolicyClient

    out = {}  # type: Dict[str, List[IPolicyClient]]
    contexts = {}  # type: Dict[str, str]
    for state, names in settings.policies.items():
        servers = []
        for name in names:
            client = clients.get(name.lower())
            if client is None:
                section = cfg.section("policy", name)
                client = PolicyClient(
                    section.name or name,  # a named section: never None
                    section["socket"],
                    section["timeout"],
                    section["default_action"],
                    factory.reactor,
                    factory.log,
                )
                clients[name.lower()] = client
            section = cfg.section("policy", name)
            if section["policy_context"]:
                contexts[client.name] = section["policy_context"]
            servers.append(client)
        out[state] = servers
    factory.policyContexts = contexts
    return out


def closePolicyServers(
    servers: Optional[Dict[str, List[IPolicyClient]]],
) -> None:
    """Close the connections of the clients of a factory's C{policyServers}."""
    for clients in (servers or {}).values():
        for client in clients:
            client.close()

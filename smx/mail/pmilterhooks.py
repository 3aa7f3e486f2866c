# -*- test-case-name: smx.mail.test.test_integration_pmilter -*-
"""
NAME
    smx.mail.pmilterhooks - SMTPS's calls of the policy milters

SYNOPSIS
    class SMTPServerProtocol(PolicyMilterMixin, CommitMixin, ...): ...

DESCRIPTION
    The half of L{smx.mail.smtps.SMTPServerProtocol} that asks the policy
    milters of its smtps section (seed §8, App. B; doc/pmilter.md) and
    applies their decisions.  The host (L{smx.pmilter.plugins.
    hostFromConfiguration}) is the factory's C{pmilterHost}; each session
    opens one host session after SMTPS's own connection checks passed and
    calls it in the order of L{smx.pmilter.host}: C{connect}, C{helo} for
    a valid HELO/EHLO, C{mail} once SMTPS accepted MAIL, C{rcpt} with 250
    or SMTPS's own rejection code, C{data}, C{body} with the content as
    received (dot-stuffed again, the final dot added), C{eom} before the
    commit, C{abort} when a transaction ends otherwise, C{unknown} for an
    unknown command and C{close} when the connection ends.

    Decisions: a rejection is the reply (softbounce applies); C{ssd}
    closes the session after it; C{discard} drops the session's
    transactions (connect), the transaction (MAIL, the final dot, or a
    C{quick} discard at RCPT) or the recipient; with C{delay_checks} a
    5xx rejection at connect or MAIL that is not C{quick} is given to each
    RCPT instead (seed §5.8.3); a C{quick} acceptance at connect or HELO
    lets later access map rejections pass, as C{cltaddr: quick:ok}.

DIAGNOSTICS
    A rejection is logged as SMTPS's own, with C{pmilter=NAME}.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Union

from twisted.internet import defer

from smx.fastdefer import inlineCallbacks
from smx.mail import server as sm
from smx.values import ReplyData

if TYPE_CHECKING:  # pragma: no cover
    from smx.mail.commit import _Transaction
    from smx.interfaces import IPolicyMilterSession
    from smx.pmilter.decision import Decision


def parameterList(parameters: Any) -> List[str]:
    """
    The MAIL/RCPT parameters as the pmilters see them: C{["SIZE=100"]}.
    """
    out = []
    for item in parameters or ():
        if isinstance(item, str):
            out.append(item)
            continue
        keyword, value = item[0], item[1]
        out.append(keyword if value is None else "%s=%s" % (keyword, value))
    return out


class PolicyMilterMixin:
    """
    The pmilter calls of L{smx.mail.smtps.SMTPServerProtocol}; it uses
    the protocol's C{factory}, C{connection}, C{policy}, C{transaction}
    and C{transport}.

    @ivar pmSession: the L{smx.interfaces.IPolicyMilterSession}, or
        C{None} (no pmilter, or the session was refused before).
    """

    factory = None  # type: Any
    connection = None  # type: Any
    policy = None  # type: Any
    transaction = None  # type: Any
    transport = None  # type: Any
    sessionId = ""
    pmSession = None  # type: Optional[IPolicyMilterSession]
    #: a 5xx of connect (session) or MAIL (transaction) given at RCPT
    _pmClientDelayed = None  # type: Optional[ReplyData]
    _pmSenderDelayed = None  # type: Optional[ReplyData]
    #: the content passed to body so far ends a line
    _pmLineStart = True
    # the protocol's (L{smx.mail.commit.CommitMixin}, L{smx.mail.smtps})
    _store: Callable[[Any, sm.EndOfData], Any]
    _logEnd: Callable[..., None]
    _pmShutdown: Callable[[], None]

    def _pmOpen(self) -> Optional[defer.Deferred]:
        """
        SMTPS's connection checks passed: open the pmilter session and
        call C{connect}.

        @return: a L{Deferred} firing with a reply to refuse the session,
            or C{None}; C{None} at once when there is no pmilter.
        """
        host = getattr(self.factory, "pmilterHost", None)
        if host is None:
            return None
        self.pmSession = host.openSession(self.sessionId)
        d = self.pmSession.connect(self.policy.clientName, self.transport.getPeer())
        return d.addCallback(self._pmConnected)

    def _pmConnected(self, decision: Decision) -> Optional[ReplyData]:
        policy = self.policy
        if decision.discard:
            policy.discardSession = policy.discardTransaction = True
        if decision.accept and decision.quick:
            policy.skipRejections = True
        if not decision.rejected:
            return None
        reply = decision.reply()
        if self._pmDelays(decision):
            self._pmClientDelayed = reply
            return None
        self._pmLog({"where": "connection"}, decision)
        return reply

    def _pmDelays(self, decision: Decision) -> bool:
        """Is this rejection delayed to RCPT (C{delay_checks})?"""
        return bool(
            self.policy.delayChecks
            and not decision.quick
            and not decision.ssd
            and (decision.code or 0) >= 500  # a rejection: code is set
        )

    def _pmLog(
        self, fields: Dict[str, Any], decision: Union[Decision, _Delayed]
    ) -> None:
        record = {"ss_sess": self.sessionId}  # type: Dict[str, Any]
        if self.transaction is not None:
            record["ss_ta"] = self.transaction.id
        record.update(fields)
        record["stat"] = decision.code
        record["reply"] = "%s %s %s" % (decision.code, decision.enhanced, decision.text)
        record["pmilter"] = decision.pmilter
        self.factory.log.info(**record)

    def _pmReject(self, decision: Decision, fields: Dict[str, Any]) -> None:
        """Give a rejecting decision as the reply; close after an SSD."""
        self._pmLog(fields, decision)
        self.connection.reject(decision.code, decision.enhanced, decision.text)
        if decision.ssd:
            self.connection.close()

    def _pmCommand(
        self, d: defer.Deferred, fields: Dict[str, Any], then: Callable[[], Any]
    ) -> defer.Deferred:
        """
        The decision C{d} about a command: reject it, or call C{then}.
        """

        def _cb(decision: Decision) -> Any:
            if decision.rejected:
                self._pmReject(decision, fields)
                return None
            return then()

        return d.addCallback(_cb)

    def _pmHelo(self, name: str, then: Callable[[], Any]) -> Any:
        if self.pmSession is None:
            return then()
        d = self.pmSession.helo(name)

        def _quick(decision: Decision) -> Any:
            if decision.accept and decision.quick:
                self.policy.skipRejections = True
            return decision

        return self._pmCommand(d.addCallback(_quick), {"helo": name}, then)

    def _pmOpenSession(self) -> IPolicyMilterSession:
        """The session of a stage its caller asks only with one open."""
        assert self.pmSession is not None
        return self.pmSession

    @inlineCallbacks
    def _pmMail(self, event: sm.MailFrom, ta: _Transaction):
        """
        SMTPS accepted MAIL: ask the pmilters.

        @return: a L{Deferred} firing with C{True} when a pmilter rejected
            it (the reply is given).
        """
        self._pmSenderDelayed = None
        decision = yield self._pmOpenSession().mail(
            "<%s>" % (event.sender,), parameterList(event.parameters), ta.id
        )
        if decision.rejected:
            if self._pmDelays(decision):
                self._pmSenderDelayed = decision.reply()
                return False
            self._pmReject(decision, {"mail": "<%s>" % (event.sender,)})
            return True
        if decision.discard:
            self.policy.discardTransaction = True
        return False

    @inlineCallbacks
    def _pmRcpt(self, event: sm.RcptTo, status: int):
        """
        Ask the pmilters about a recipient SMTPS gave C{status}.

        @return: a L{Deferred} firing with C{None} (no objection),
            C{"discard"} (drop the recipient) or C{"rejected"} (the reply
            is given).
        """
        args = parameterList(event.parameters)
        address = "<%s>" % (event.recipient,)
        session = self._pmOpenSession()
        if status >= 400:
            yield session.rcpt(address, args, status)
            return None
        delayed = None
        if not self.policy.skipRejections:
            delayed = self._pmClientDelayed or self._pmSenderDelayed
        if delayed is not None:
            yield session.rcpt(address, args, delayed["code"])
            self._pmLog({"rcpt": address}, _Delayed(delayed))
            self.connection.reject(delayed["code"], delayed["dsn"], delayed["text"])
            return "rejected"
        decision = yield session.rcpt(address, args, 250)
        if decision.rejected:
            self._pmReject(decision, {"rcpt": address})
            return "rejected"
        if decision.discard:
            if decision.quick:
                self.policy.discardTransaction = True
            return "discard"
        return None

    def _pmData(self, event: sm.DataCommand, then: Callable[[], Any]) -> Any:
        session = self.pmSession
        if session is None:
            return then()
        self._pmLineStart = True

        def _cb(decision: Decision) -> Any:
            if decision.rejected:
                self._pmReject(decision, {"data": "DATA"})
                if event.chunk is not None:
                    # a rejected BDAT ends the transaction (RFC 3030)
                    session.abort()
                return None
            return then()

        return session.data().addCallback(_cb)

    def _pmBody(self, data: bytes) -> None:
        """
        A piece of content (dot-unstuffed): pass it on as received.
        """
        if self.pmSession is None or not data:
            return
        stuffed = data.replace(b"\n.", b"\n..")
        if self._pmLineStart and stuffed[:1] == b".":
            stuffed = b"." + stuffed
        self._pmLineStart = stuffed.endswith(b"\n")
        self.pmSession.body(stuffed)

    def _pmAbort(self) -> None:
        """The transaction ended without a 250 to the final dot."""
        if self.pmSession is not None:
            self.pmSession.abort()
        self._pmSenderDelayed = None

    def _pmEndOfMessage(self, ta: _Transaction, event: sm.EndOfData) -> Any:
        """
        The content passed SMTPS's checks: C{eom} before the commit.
        """
        if self.pmSession is None:
            return self._store(ta, event)
        self.pmSession.body(b".\r\n" if self._pmLineStart else b"\r\n.\r\n")
        self._pmLineStart = True

        def _cb(decision: Decision) -> Any:
            if decision.rejected:
                ta.abort()
                self._logEnd(ta, event, event.size, stat=decision.code)
                self._pmReject(decision, {"where": "eom"})
                return None
            if decision.discard:
                ta.abort()
            return self._store(ta, event)

        return self.pmSession.eom(event.messageId).addCallback(_cb)

    def _pmUnknown(self, line: bytes) -> None:
        """An unknown command (answered 500 already)."""
        if self.pmSession is None:
            return
        d = self.pmSession.unknown(line.decode("utf-8", "replace"))

        def _cb(decision: Decision) -> None:
            if decision.ssd and not self.connection.closed:
                self._pmLog({"unknown": line[:40]}, decision)
                self.connection.refuse(421, decision.enhanced, decision.text)
                self._pmShutdown()

        d.addCallback(_cb)

    def _pmClose(self) -> None:
        """The connection ended."""
        pm, self.pmSession = self.pmSession, None
        if pm is not None:
            pm.close()


class _Delayed:
    """A delayed reply, for L{PolicyMilterMixin._pmLog}."""

    def __init__(self, reply: ReplyData) -> None:
        self.code = reply["code"]
        self.enhanced = reply["dsn"]
        self.text = reply["text"]
        self.pmilter = "delayed"

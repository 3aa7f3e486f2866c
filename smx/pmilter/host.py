# -*- test-case-name: smx.pmilter.test.test_host -*-
"""
NAME
    smx.pmilter.host - SMTPS's side of the policy milter API

SYNOPSIS
    host = PolicyMilterHost([greylist, rules], reactor, timeout=5,
                            onFailure="tempfail", hostname="mx.example.org",
                            log=log, options={"greylist": {...}})
    host.startService()                    # negotiation (App. B.3)

    session = host.openSession(sessionId)  # one per SMTP session
    d = session.connect(clientName, IPv4Address("TCP", "192.0.2.1", 4711))
    d = session.helo("client.example.com")
    d = session.mail("<a@example.com>", ["SIZE=100"], transactionId)
    d = session.rcpt("<b@example.org>", [], status=250)
    d = session.data()
    d = session.body(chunk)                # as received, ... ".\\r\\n"
    d = session.eom()
    d = session.abort()                    # RSET, a failed transaction
    d = session.unknown("XFOO bar")
    d = session.close()                    # the session ended

DESCRIPTION
    L{PolicyMilterHost} runs the enabled pmilters (providers of
    L{smx.interfaces.IPolicyMilter}) in order for every SMTP session of
    one SMTP server.  Each stage method of a L{HostSession} returns a
    L{Deferred} that fires with a L{smx.pmilter.decision.Decision} (C{body},
    C{abort} and C{close} fire with C{None}); it fires at once when every
    pmilter answered at once.

    Negotiation (App. B.3, B.6, B.7): at start every pmilter gets a
    L{ServerContext} and returns a L{Negotiation}; only the stages it asked
    for are sent to it (and of those only the callbacks it defines), the
    macros it asked for are filled in from their stage on, and C{rcpt} is
    called for a recipient SMTPS rejected only when it asked for
    C{CAP_RCPT_ST}.  A pmilter whose negotiation fails is down: it is
    negotiated again when a session opens, at most once per C{timeout}.

    Order and combination: the pmilters are asked in the order given; the
    first rejection, discard, 421 or quick acceptance decides and the
    pmilters after it are not asked for that command.  Otherwise the first
    acceptance (C{OK}) decides, else the decision is
    L{smx.pmilter.decision.CONTINUE} (SMTPS goes on with its own checks).

    Transactions: C{mail} begins one; it ends with C{eom} (the final dot),
    C{abort} (RSET, a MAIL rejected after the pmilters saw it, a failed
    commit), a new C{mail}, C{helo} or C{close}.  Every pmilter that was in
    the transaction gets either C{eom} or C{abort}, never both (App. B.4).
    A decision made in C{body} (a rejection of a chunk) is returned by
    C{eom}; the body keeps being read by SMTPS meanwhile.

    The calls of one session are made one after the other, in the order
    SMTPS makes them, whether or not it waits for each result.

    Failures: a pmilter that raises, does not answer within C{timeout}
    (L{IReactorTime.callLater}), answers something that is not a value of
    App. B.9, or sets a reply that does not match its value or lacks an
    enhanced status code (App. B.8) has failed: the decision is that of
    the failure policy, C{tempfail} (451 4.3.0) or C{accept} (as if it
    had answered CONT), flagged C{failed}.  Each failure is logged once,
    with C{sev=ERR}, the pmilter's name and the callback; a pmilter that
    is down (raises L{PolicyMilterUnavailable} or could not be
    negotiated) is logged when it goes down and when it is back.

INTEGRATION (for SMTPS, smx/mail/smtps.py)
    One host per smtps section (L{smx.pmilter.plugins.hostFromConfiguration}
    builds it, or C{None} when the section enables no pmilter); it is a
    service to start and stop with SMTPS.  Per SMTP session:

      - C{connect} after SMTPS's own connection checks passed: a rejection
        is given with C{ServerConnection.refuse} (a 4xx closes with 421, a
        5xx greets 554); C{discard} means every transaction of the
        session is accepted and dropped.
      - C{helo} after HELO/EHLO is syntactically valid.
      - C{mail} after SMTPS's checks of MAIL accepted it, with the new
        transaction id; a rejection is the reply; C{discard}: the
        transaction is accepted and dropped.  If SMTPS rejects MAIL after
        that, or a transaction ends without a 250 to the final dot, it
        calls C{abort}.
      - C{rcpt} for every recipient that SMTPS accepted (status 250), and
        for those it rejected because of the address, the access map or
        relaying, with their 4xx/5xx status (App. B.7; the host calls only
        the pmilters that asked for it, and the decision is then
        L{CONTINUE}: the rejection stands).  Not for syntax errors or
        limits.  C{discard}: drop this recipient, with C{quick} the
        transaction.
      - C{data} when DATA would get 354; C{body} with the content as
        received (CRLF, dot-stuffed, the last chunk ending with
        C{".\\r\\n"}; for BDAT the chunks dot-stuffed with C{".\\r\\n"}
        added at LAST); C{eom} before the content is committed: a
        rejection is the reply to the final dot and nothing is queued;
        C{discard}: answer 250 and queue nothing.
      - C{unknown} for an unknown command, C{abort} for RSET, C{close}
        when the connection ends (always, also after QUIT or a timeout).
      - C{Decision.accept} lets SMTPS skip its own policy checks of the
        command (not syntax and limits); C{quick} as for access map
        entries (seed §5.8.3); C{ssd}: send the reply and close.
      - C{Decision.reply()} is C{{"code", "dsn", "text"}} as
        L{smx.mail.policy} gives its replies; C{softbounce} applies to it.

    SIGUSR1 calls L{PolicyMilterHost.reload}.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, FrozenSet, List, Mapping, Optional, Sequence

from twisted.application import service
from twisted.internet import defer
from twisted.python.failure import Failure
from zope.interface import implementer

from smx.interfaces import IPolicyMilter, IPolicyMilterHost, IPolicyMilterSession
from smx.log import Logger
from smx.values import StatusData

from smx.pmilter.api import (
    CALLBACK_NAMES,
    CALLBACKS,
    CAP_RCPT_ST,
    CAPABILITIES,
    PMM_DOT_MSGID,
    PMM_MAIL_TAID,
    PMM_SEID,
    PMM_SRVHOSTNAME,
    SMST_DATA,
    SMST_DOT,
    SMST_MAIL,
    SMST_RCPT,
    STAGES,
    Negotiation,
    NegotiationError,
    PolicyMilterUnavailable,
)
from smx.pmilter.content import MessageIdScanner
from smx.pmilter.context import ServerContext, SessionContext
from smx.pmilter.decision import (
    CONTINUE,
    FAILURE_POLICIES,
    TEMPFAIL,
    Combination,
    Decision,
    Nonsense,
    decide,
    failureDecision,
)

#: the stage of each callback that has one
STAGE_OF = {cb: stage for stage, cbs in CALLBACKS.items() for cb in cbs}
#: the stages that belong to a transaction
TRANSACTION_STAGES = frozenset((SMST_MAIL, SMST_RCPT, SMST_DATA, SMST_DOT))
#: what getstatus() returns for each callback when SMTPS gives no status
DEFAULT_STATUS = {
    "connect": 220,
    "helo": 250,
    "mail": 250,
    "rcpt": 250,
    "data": 354,
    "unknown": 500,
    "body": 250,
    "eom": 250,
}


class CallTimeout(Exception):
    """
    A pmilter did not answer within the timeout.
    """


def definedCallbacks(pmilter: Any) -> FrozenSet[str]:
    """
    The callbacks of App. B.4 that C{pmilter} implements.
    """
    return frozenset(n for n in CALLBACK_NAMES if callable(getattr(pmilter, n, None)))


def pmilterName(pmilter: Any) -> str:
    """
    The name of a pmilter for logs and decisions.
    """
    name = getattr(pmilter, "name", None)
    return name if isinstance(name, str) and name else type(pmilter).__name__


class _Attachment:
    """
    One pmilter as the host has negotiated with it.

    @ivar state: C{"new"}, C{"negotiating"}, C{"up"} or C{"down"}.
    """

    def __init__(
        self, pmilter: IPolicyMilter, options: Optional[Mapping[str, Any]]
    ) -> None:
        self.pmilter = pmilter
        self.name = pmilterName(pmilter)
        self.options = options
        self.callbacks = definedCallbacks(pmilter)
        self.server = None  # type: Optional[ServerContext]
        self.state = "new"
        #: why it is down
        self.error = None  # type: Optional[str]
        self.lastAttempt = None  # type: Optional[float]
        self.pending = None  # type: Optional[defer.Deferred]
        self.wanted = frozenset()  # type: FrozenSet[str]
        self.rcptStatus = False
        self.wantsMessageId = False

    def setUp(self, server: ServerContext, negotiation: Negotiation) -> None:
        self.server = server
        assert negotiation.stages is not None
        self.wanted = frozenset(
            cb
            for stage in negotiation.stages
            for cb in CALLBACKS[stage]
            if cb in self.callbacks
        ) | (self.callbacks & {"abort", "close"})
        self.rcptStatus = CAP_RCPT_ST in negotiation.capabilities
        self.wantsMessageId = PMM_DOT_MSGID in negotiation.requested()
        self.state = "up"

    def wants(self, callback: str) -> bool:
        return callback in self.wanted


class _Member:
    """
    One pmilter in one session.

    @ivar session: its L{SessionContext}.
    @ivar inTransaction: it is owed C{eom} or C{abort}.
    @ivar bodyDecision: what it decided in C{body}, returned by C{eom}.
    """

    def __init__(self, attachment: _Attachment) -> None:
        self.attachment = attachment
        self.session = None  # type: Optional[SessionContext]
        self.inTransaction = False
        self.bodyDecision = None  # type: Optional[Decision]
        self.bodyDone = False

    @property
    def up(self) -> bool:
        """
        Can it be called: it was up when the session began, and has not
        gone down (or been negotiated again) since?
        """
        att = self.attachment
        return (
            self.session is not None
            and att.state == "up"
            and self.session.server is att.server
        )


@implementer(IPolicyMilterHost)
class PolicyMilterHost(service.Service):
    """
    The pmilters of one SMTP server (see the module docstring).

    @ivar timeout: seconds a pmilter has for each call.
    @ivar onFailure: C{"tempfail"} or C{"accept"}.
    """

    name = "pmilter"

    def __init__(
        self,
        pmilters: Sequence[IPolicyMilter],
        reactor: Any,
        timeout: float,
        onFailure: str = TEMPFAIL,
        hostname: str = "localhost",
        log: Optional[Logger] = None,
        options: Optional[Mapping[str, Mapping[str, Any]]] = None,
        stages: Sequence[str] = STAGES,
        capabilities: Sequence[str] = CAPABILITIES,
    ) -> None:
        """
        @param pmilters: the pmilters, in the order they are asked.
        @param reactor: an C{IReactorTime} for the timeouts.
        @param timeout: seconds each call may take.
        @param onFailure: the failure policy, C{"tempfail"} or C{"accept"}.
        @param hostname: the SMTP server's name (C{PMM_SRVHOSTNAME}).
        @param log: an L{smx.log.Logger}; the default logs as C{smtps}.
        @param options: C{{pmilter name: settings}} given to each pmilter
            as C{server.options}.
        @param stages: the stages this SMTP server offers (App. B.3).
        @param capabilities: the capabilities it offers (App. B.7).
        """
        if onFailure not in FAILURE_POLICIES:
            raise ValueError("on_failure must be one of %s" % (FAILURE_POLICIES,))
        if log is None:
            log = Logger("smtps")
        self.reactor = reactor
        self.timeout = timeout
        self.onFailure = onFailure
        self.hostname = hostname
        self.log = log
        self.stages = frozenset(stages)
        self.capabilities = frozenset(capabilities)
        options = options or {}
        self.attachments = [
            _Attachment(p, options.get(pmilterName(p))) for p in pmilters
        ]

    # -- the service ------------------------------------------------------

    def startService(self) -> None:
        service.Service.startService(self)
        self.negotiate()

    def negotiate(self) -> defer.Deferred:
        """
        Negotiate with every pmilter that is not up (App. B.3).

        @return: a L{Deferred} that fires when every negotiation ended.
        """
        return defer.gatherResults(
            [self._negotiate(a) for a in self.attachments if a.state != "up"]
        ).addCallback(lambda _: None)

    def _negotiate(self, att: _Attachment) -> defer.Deferred:
        if att.pending is not None:
            return follow(att.pending)
        att.lastAttempt = self.reactor.seconds()
        wasDown = att.state == "down"
        if att.state == "new":
            att.state = "negotiating"
        server = ServerContext(
            att.pmilter,
            self.hostname,
            self.reactor,
            self.log,
            att.options,
            self.stages,
            self.capabilities,
        )
        d = self._timed(att.pmilter.negotiate, server)

        def _cbNegotiated(result: Any) -> None:
            if not isinstance(result, Negotiation):
                raise NegotiationError(
                    "negotiate returned %r, not a Negotiation" % (result,)
                )
            server.negotiation = result.check(self.stages, self.capabilities)
            att.setUp(server, server.negotiation)
            att.error = None
            if wasDown:
                self.log.notice(pmilter=att.name, status="up")

        def _ebNegotiation(reason: Failure) -> None:
            att.error = _describe(reason, self.timeout)
            if not wasDown:
                self.log.error(
                    "PolicyMilterHost.negotiate",
                    pmilter=att.name,
                    error=att.error,
                    action=self.onFailure,
                )
                if not reason.check(
                    NegotiationError, CallTimeout, PolicyMilterUnavailable
                ):
                    self._traceback(reason)
            att.state = "down"

        def _cbDone(_: Any) -> None:
            att.pending = None

        d.addCallback(_cbNegotiated)
        d.addErrback(_ebNegotiation)
        d.addBoth(_cbDone)
        if not hasResult(d):
            att.pending = d
        return follow(d)

    def reload(self) -> None:
        """
        SIGUSR1: call C{reload()} of every pmilter that has one (e.g. the
        rules pmilter reads its file again).  A failure is logged.
        """
        reloadPolicyMilters([a.pmilter for a in self.attachments], self.log)

    def wanted(self) -> FrozenSet[str]:
        """
        The callbacks some pmilter wants, plus C{"rcpt_st"} when one asked
        for C{CAP_RCPT_ST} and C{"dot_msgid"} when one asked for the
        Message-Id.  While a pmilter is not up, every callback: its
        failure decisions are due at every stage.
        """
        if any(a.state != "up" for a in self.attachments):
            return frozenset(CALLBACK_NAMES) | {CAP_RCPT_ST, PMM_DOT_MSGID}
        out = set()  # type: set
        for a in self.attachments:
            out |= a.wanted
            if a.rcptStatus:
                out.add(CAP_RCPT_ST)
            if a.wantsMessageId:
                out.add(PMM_DOT_MSGID)
        return frozenset(out)

    def describe(self) -> List[StatusData]:
        """
        @return: for each pmilter, C{{"name", "state", "stages"}}.
        """
        out = []
        for att in self.attachments:
            n = att.server.negotiation if att.server is not None else None
            out.append(
                {
                    "name": att.name,
                    "state": att.state,
                    "stages": sorted(n.stages or ()) if n is not None else [],
                    "error": att.error,
                }
            )
        return out

    # -- sessions -----------------------------------------------------------

    def openSession(self, sessionId: str) -> "HostSession":
        """
        A new SMTP session.

        @param sessionId: its id (App. C.1, C{PMM_SEID}).
        """
        now = self.reactor.seconds()
        for att in self.attachments:
            if att.state == "new" or (
                att.state == "down"
                and (att.lastAttempt is None or now - att.lastAttempt >= self.timeout)
            ):
                self._negotiate(att)
        return HostSession(self, sessionId)

    # -- calls ----------------------------------------------------------

    def _timed(self, f: Callable[..., Any], *args: Any) -> defer.Deferred:
        return callWithTimeout(self.reactor, self.timeout, f, *args)

    def _traceback(self, reason: Failure) -> None:
        from twisted.logger import Logger

        Logger(namespace="smx.pmilter").failure(
            "unexpected failure of a pmilter", failure=reason
        )


def reloadPolicyMilters(pmilters: Sequence[IPolicyMilter], log: Logger) -> None:
    """
    Call C{reload()} of every pmilter that has one; a failure is logged
    with the pmilter's name and the others are reloaded all the same.
    """
    for pmilter in pmilters:
        reload = getattr(pmilter, "reload", None)
        if callable(reload):
            try:
                reload()
            except Exception:
                log.failure(
                    "reloadPolicyMilters", Failure(), pmilter=pmilterName(pmilter)
                )


def hasResult(d: defer.Deferred) -> bool:
    """
    Has C{d} a result now?  (C{d.called} is true also while it waits for
    a Deferred one of its callbacks returned.)
    """
    done = []  # type: List[bool]

    def _cb(result: Any) -> Any:
        done.append(True)
        return result

    d.addBoth(_cb)
    return bool(done)


def callWithTimeout(
    reactor: Any, timeout: float, f: Callable[..., Any], *args: Any, **kwargs: Any
) -> defer.Deferred:
    """
    Call C{f}; its result (or the result of the L{Deferred} it returns)
    within C{timeout} seconds.

    @return: a L{Deferred} that fails with L{CallTimeout} when C{f} has
        not answered in time; its late answer is then dropped (a late
        failure too: it was already reported as the timeout).
    """
    d = defer.maybeDeferred(f, *args, **kwargs)
    if hasResult(d):
        return d
    result = defer.Deferred()  # type: defer.Deferred

    def _expired() -> None:
        result.errback(Failure(CallTimeout()))

    timer = reactor.callLater(timeout, _expired)

    def _cbAnswered(value: Any) -> None:
        if timer.active():
            timer.cancel()
            result.callback(value)

    d.addBoth(_cbAnswered)
    return result


class SerialCalls:
    """
    Runs the calls of one session one after the other, in the order they
    are made, whether or not the caller waits for each.

    @ivar closed: once set, calls are not run but answered with their
        C{closed} value.
    """

    def __init__(self) -> None:
        self.closed = False
        self._tail = defer.succeed(None)  # type: defer.Deferred

    def run(
        self, f: Callable[..., Any], *args: Any, closed: Any = None
    ) -> defer.Deferred:
        """
        Run C{f(*args)} after the calls before it.

        @param closed: the result once L{closed} is set.
        @return: a L{Deferred} of the result of C{f}.
        """
        result = defer.Deferred()  # type: defer.Deferred

        def _go(_: Any) -> defer.Deferred:
            if self.closed:
                result.callback(closed)
                return defer.succeed(None)
            inner = defer.maybeDeferred(f, *args)
            inner.addBoth(result.callback)
            return inner

        self._tail.addCallback(_go)
        return result


def follow(d: defer.Deferred) -> defer.Deferred:
    """
    A new L{Deferred} that fires (with C{None}) when C{d} has.
    """
    out = defer.Deferred()  # type: defer.Deferred

    def _cb(result: Any) -> Any:
        out.callback(None)
        return result

    d.addBoth(_cb)
    return out


def _describe(reason: Failure, timeout: float) -> str:
    if reason.check(CallTimeout):
        return "no answer within %gs" % (timeout,)
    if reason.check(Nonsense, NegotiationError, PolicyMilterUnavailable):
        return str(reason.value)
    return "%s: %s" % (getattr(reason.type, "__name__", reason.type), reason.value)


@implementer(IPolicyMilterSession)
class HostSession:
    """
    The pmilters of one SMTP session (App. B.4).  Made by
    L{PolicyMilterHost.openSession}; see the module docstring.
    """

    def __init__(self, host: PolicyMilterHost, sessionId: str) -> None:
        self.host = host
        self.sessionId = sessionId
        self._members = None  # type: Optional[List[_Member]]
        self._macros = {
            PMM_SRVHOSTNAME: host.hostname,
            PMM_SEID: sessionId,
        }  # type: Dict[str, Optional[str]]
        self._inTransaction = False
        self._messageId = None  # type: Optional[MessageIdScanner]
        self._calls = SerialCalls()

    # -- the stages (one after the other) -----------------------------------

    def connect(self, hostname: Optional[str], address: Any) -> defer.Deferred:
        """
        The session began (C{pmfi_connect}).

        @param hostname: the client's name from the reverse lookup, or
            C{None}.
        @param address: its address, e.g. an
            L{twisted.internet.address.IPv4Address}.
        """
        return self._serial(self._connect, hostname, address)

    def helo(self, helohost: str) -> defer.Deferred:
        """HELO or EHLO (C{pmfi_helo}); ends an open transaction."""
        return self._serial(self._helo, helohost)

    def mail(
        self, address: str, args: Sequence[str], transactionId: Optional[str] = None
    ) -> defer.Deferred:
        """
        MAIL (C{pmfi_mail}): begins a transaction.

        @param address: the reverse path as written, C{"<a@example.com>"}.
        @param args: the MAIL parameters, C{["SIZE=100"]}.
        @param transactionId: its id (App. C.1, C{PMM_MAIL_TAID}).
        """
        return self._serial(self._mail, address, list(args), transactionId)

    def rcpt(
        self, address: str, args: Sequence[str], status: int = 250
    ) -> defer.Deferred:
        """
        RCPT (C{pmfi_rcpt}).

        @param status: the reply code SMTPS gives it so far: 250, or the
            4xx/5xx of a rejection (App. B.7).
        """
        return self._serial(self._rcpt, address, list(args), status)

    def data(self) -> defer.Deferred:
        """DATA (C{pmfi_data})."""
        return self._serial(self._stage, "data", ())

    def unknown(self, command: str) -> defer.Deferred:
        """An unknown or unimplemented command (C{pmfi_unknown})."""
        return self._serial(self._stage, "unknown", (command,))

    def body(self, chunk: bytes) -> defer.Deferred:
        """
        A chunk of the content as received (C{pmfi_body}).

        @return: a L{Deferred} firing with C{None}; a decision made here
            comes with L{eom}.
        """
        return self._serial(self._body, chunk, closed=None)

    def eom(self, messageId: Optional[str] = None) -> defer.Deferred:
        """
        The final dot (C{pmfi_eom}): ends the transaction.

        @param messageId: the Message-Id (C{PMM_DOT_MSGID}); by default
            the one found in the content given to L{body}.
        """
        return self._serial(self._eom, messageId)

    def abort(self) -> defer.Deferred:
        """
        The transaction ended without a 250 to the final dot
        (C{pmfi_abort}); nothing happens outside a transaction.
        """
        return self._serial(self._abort, closed=None)

    def close(self) -> defer.Deferred:
        """
        The session ended (C{pmfi_close}); an open transaction is aborted
        first.  Later calls are answered with L{CONTINUE}.
        """
        return self._serial(self._close, closed=None)

    # -- machinery --------------------------------------------------------

    def _serial(
        self, f: Callable[..., Any], *args: Any, closed: Any = CONTINUE
    ) -> defer.Deferred:
        return self._calls.run(f, *args, closed=closed)

    def _bind(self) -> defer.Deferred:
        """
        Make the members of the session, once the negotiations in progress
        ended.
        """
        if self._members is not None:
            return defer.succeed(None)
        pending = [
            follow(a.pending) for a in self.host.attachments if a.pending is not None
        ]
        d = defer.gatherResults(pending) if pending else defer.succeed(None)

        def _cbBind(_: Any) -> None:
            if self._members is not None:
                return
            members = []
            for att in self.host.attachments:
                m = _Member(att)
                if att.state == "up":
                    assert att.server is not None
                    m.session = SessionContext(att.server)
                members.append(m)
            self._members = members

        return d.addCallback(_cbBind)

    @defer.inlineCallbacks
    def _run(
        self,
        callback: str,
        args: Sequence[Any],
        status: Optional[int] = None,
        members: Optional[List[_Member]] = None,
    ) -> Any:
        """
        Ask the members that want C{callback}, in order, until one decides.
        """
        yield self._bind()
        assert self._members is not None
        stage = STAGE_OF[callback]
        combination = Combination()
        for m in self._members if members is None else members:
            if not m.up:
                if combination.add(self._down(m)):
                    break
                continue
            att = m.attachment
            if not att.wants(callback):
                continue
            if callback == "rcpt" and status is not None and status >= 400:
                if not att.rcptStatus:
                    continue
            decision = yield self._call(m, callback, args, stage, status)
            if combination.add(decision):
                break
        return combination.result

    def _down(self, m: _Member) -> Decision:
        """
        The decision for a member that is down (logged when it went down).
        """
        return failureDecision(m.attachment.name, self.host.onFailure)

    @defer.inlineCallbacks
    def _call(
        self,
        m: _Member,
        callback: str,
        args: Sequence[Any],
        stage: Optional[str],
        status: Optional[int],
    ) -> Any:
        """
        Call one callback of one member.

        @return: a L{Deferred} of its L{Decision} (C{None} for C{abort}
            and C{close}); a failure is logged and becomes the failure
            policy's decision.
        """
        session = m.session
        assert session is not None
        att = m.attachment
        if stage is not None:
            session.deliverMacros(stage, self._macros)
        session.setStatus(
            status if status is not None else DEFAULT_STATUS.get(callback)
        )
        session.takeReply()
        try:
            value = yield self.host._timed(
                getattr(att.pmilter, callback), session, *args
            )
            reply = session.takeReply()
            if callback in ("abort", "close"):
                return None
            decision = decide(value, reply, att.name)
        except Exception:
            reason = Failure()
            session.takeReply()
            self._failed(m, callback, reason)
            if callback in ("abort", "close"):
                return None
            return failureDecision(att.name, self.host.onFailure)
        if decision is not CONTINUE:
            self.host.log.debug(
                level=11,
                ss_sess=self.sessionId,
                pmilter=att.name,
                callback=callback,
                stat=decision.code,
                accept=int(decision.accept) or None,
                discard=int(decision.discard) or None,
                quick=int(decision.quick) or None,
            )
        return decision

    def _failed(self, m: _Member, callback: str, reason: Failure) -> None:
        """
        Log a failed call once; a pmilter that is unavailable is down.
        """
        att = m.attachment
        host = self.host
        if reason.check(PolicyMilterUnavailable):
            if att.state != "up":
                return
            att.state = "down"
        elif not reason.check(CallTimeout, Nonsense):
            host._traceback(reason)
        host.log.error(
            "PolicyMilterHost.call",
            pmilter=att.name,
            callback=callback,
            ss_sess=self.sessionId,
            error=_describe(reason, host.timeout),
            action=host.onFailure,
        )

    # -- the stages ---------------------------------------------------------

    def _connect(self, hostname: Optional[str], address: Any) -> defer.Deferred:
        return self._run("connect", (hostname, address))

    @defer.inlineCallbacks
    def _helo(self, helohost: str) -> Any:
        if self._inTransaction:
            yield self._abort()
        result = yield self._run("helo", (helohost,))
        return result

    @defer.inlineCallbacks
    def _mail(self, address: str, args: List[str], transactionId: Optional[str]) -> Any:
        if self._inTransaction:
            yield self._abort()
        yield self._bind()
        assert self._members is not None
        self._macros[PMM_MAIL_TAID] = transactionId
        self._inTransaction = True
        self._messageId = None
        wantsId = False
        for m in self._members:
            if m.up and m.attachment.wanted & TRANSACTION_CALLBACKS:
                m.inTransaction = True
                wantsId = wantsId or m.attachment.wantsMessageId
        if wantsId:
            self._messageId = MessageIdScanner()
        decision = yield self._run("mail", (address, args))
        if decision.rejected:
            yield self._abort()
        return decision

    @defer.inlineCallbacks
    def _rcpt(self, address: str, args: List[str], status: int) -> Any:
        decision = yield self._run("rcpt", (address, args), status)
        if status >= 400:
            return CONTINUE
        return decision

    def _stage(self, callback: str, args: Sequence[Any]) -> defer.Deferred:
        return self._run(callback, args)

    @defer.inlineCallbacks
    def _body(self, chunk: bytes) -> Any:
        if not self._inTransaction:
            return None
        if self._messageId is not None:
            self._messageId.feed(chunk)
        yield self._bind()
        assert self._members is not None
        for m in self._members:
            if not (m.up and m.inTransaction and m.attachment.wants("body")):
                continue
            if m.bodyDone:
                continue
            decision = yield self._call(m, "body", (chunk,), SMST_DOT, None)
            if decision.accept:
                # it has seen enough; eom is still called
                m.bodyDone = True
            elif decision is not CONTINUE:
                m.bodyDecision = decision
                m.bodyDone = True
        return None

    @defer.inlineCallbacks
    def _eom(self, messageId: Optional[str]) -> Any:
        if not self._inTransaction:
            return CONTINUE
        if messageId is None and self._messageId is not None:
            messageId = self._messageId.messageId
        self._macros[PMM_DOT_MSGID] = messageId
        assert self._members is not None
        combination = Combination()
        for m in self._members:
            if combination.done and not combination.result.accept:
                # rejected or discarded: the others get abort; after a
                # quick acceptance they still get eom
                break
            if not m.up:
                combination.add(self._down(m))
                continue
            if not m.inTransaction:
                continue
            if m.bodyDecision is not None:
                # it decided in body: it gets abort, not eom
                combination.add(m.bodyDecision)
                continue
            if not m.attachment.wants("eom"):
                continue
            m.inTransaction = False
            decision = yield self._call(m, "eom", (), SMST_DOT, None)
            combination.add(decision)
        result = combination.result
        if not (result.rejected or result.discard):
            # the transaction ended well for those not asked at eom
            for m in self._members:
                if m.bodyDecision is None:
                    m.inTransaction = False
        yield self._abort()
        return result

    @defer.inlineCallbacks
    def _abort(self) -> Any:
        """
        End the transaction: C{abort} to every member still in it.
        """
        if not self._inTransaction:
            return None
        self._inTransaction = False
        for m in self._members or ():
            if m.inTransaction:
                m.inTransaction = False
                if m.up and m.attachment.wants("abort"):
                    yield self._call(m, "abort", (), None, None)
        for m in self._members or ():
            m.bodyDecision = None
            m.bodyDone = False
            if m.session is not None:
                m.session.forgetMacros(PMM_MAIL_TAID, PMM_DOT_MSGID)
        self._macros.pop(PMM_MAIL_TAID, None)
        self._macros.pop(PMM_DOT_MSGID, None)
        self._messageId = None
        return None

    @defer.inlineCallbacks
    def _close(self) -> Any:
        yield self._abort()
        self._calls.closed = True
        for m in self._members or ():
            if m.up and m.attachment.wants("close"):
                yield self._call(m, "close", (), None, None)
        return None


@implementer(IPolicyMilterHost)
class HostChain(service.Service):
    """
    Several hosts in a row, as one: the pmilters of the process, then
    those behind the C{socket} of the pmilter section.  Each stage asks
    them in order with the rule of a single host (the first final
    decision wins, else the first acceptance).
    """

    name = "pmilter"

    def __init__(self, hosts: Sequence[Any]) -> None:
        self.hosts = list(hosts)

    def startService(self) -> None:
        service.Service.startService(self)
        for h in self.hosts:
            h.startService()

    def stopService(self) -> Any:
        service.Service.stopService(self)
        return defer.gatherResults(
            [defer.maybeDeferred(h.stopService) for h in self.hosts]
        )

    def openSession(self, sessionId: str) -> "ChainSession":
        return ChainSession([h.openSession(sessionId) for h in self.hosts])

    def reload(self) -> None:
        for h in self.hosts:
            h.reload()


@implementer(IPolicyMilterSession)
class ChainSession:
    """
    The sessions of the hosts of a L{HostChain}.
    """

    def __init__(self, sessions: Sequence[IPolicyMilterSession]) -> None:
        self.sessions = list(sessions)

    @defer.inlineCallbacks
    def _ask(self, method: str, *args: Any) -> Any:
        combination = Combination()
        for s in self.sessions:
            decision = yield getattr(s, method)(*args)
            if combination.add(decision):
                break
        if method == "mail" and combination.result.rejected:
            # those asked before the rejection saw a MAIL that failed
            yield self.abort()
        return combination.result

    @defer.inlineCallbacks
    def _tell(self, method: str, *args: Any) -> Any:
        for s in self.sessions:
            yield getattr(s, method)(*args)
        return None

    def connect(self, hostname: Optional[str], address: Any) -> defer.Deferred:
        return self._ask("connect", hostname, address)

    def helo(self, helohost: str) -> defer.Deferred:
        return self._ask("helo", helohost)

    def mail(
        self, address: str, args: Sequence[str], transactionId: Optional[str] = None
    ) -> defer.Deferred:
        return self._ask("mail", address, args, transactionId)

    def rcpt(
        self, address: str, args: Sequence[str], status: int = 250
    ) -> defer.Deferred:
        return self._ask("rcpt", address, args, status)

    def data(self) -> defer.Deferred:
        return self._ask("data")

    def unknown(self, command: str) -> defer.Deferred:
        return self._ask("unknown", command)

    def body(self, chunk: bytes) -> defer.Deferred:
        return self._tell("body", chunk)

    @defer.inlineCallbacks
    def eom(self, messageId: Optional[str] = None) -> Any:
        combination = Combination()
        for s in self.sessions:
            if combination.done and not combination.result.accept:
                yield s.abort()
                continue
            decision = yield s.eom(messageId)
            combination.add(decision)
        return combination.result

    def abort(self) -> defer.Deferred:
        return self._tell("abort")

    def close(self) -> defer.Deferred:
        return self._tell("close")


#: the callbacks that make a pmilter part of a transaction
TRANSACTION_CALLBACKS = frozenset(
    cb for stage in TRANSACTION_STAGES for cb in CALLBACKS[stage]
) | {"abort"}

__all__ = [
    "PolicyMilterHost",
    "HostSession",
    "HostChain",
    "ChainSession",
    "CallTimeout",
    "SerialCalls",
    "callWithTimeout",
    "definedCallbacks",
    "hasResult",
    "pmilterName",
    "reloadPolicyMilters",
]

# -*- test-case-name: smx.mail.test.test_smtps -*-
"""
NAME
    smx.mail.smtps - SMTPS, the ESMTP server of smx

SYNOPSIS
    services = smtpsServices(cfg, queueManager, contentStore, resolver)
    for s in services: s.setServiceParent(parent)

DESCRIPTION
    Accepts mail over ESMTP (RFC 5321 with PIPELINING, SIZE, 8BITMIME,
    ENHANCEDSTATUSCODES, STARTTLS, AUTH) and hands it to the queue manager:
    the content to the content store (with a C{Received:} header, seed
    App. C.3), the envelope to L{IQueueManager.commitTransaction}.  The
    250 after the final dot is sent only when both are on stable storage;
    if either fails the reply is 451 4.3.0.

    The protocol work is done by the sans-I/O L{ServerConnection}; this
    module is the Twisted adapter: it feeds received bytes in, calls QMGR,
    CDB and SMAR through their interfaces for the events that come out,
    and writes the replies in one batch per received chunk (RFC 2920).
    The DATA phase and the commit are in L{smx.mail.commit}, the timers
    in L{smx.mail.deadlines}, who may hold the sessions of a listener in
    L{smx.mail.sessions}; the settings, listeners and C{smtpsServices} in
    L{smx.mail.listener} (still importable from here).

    At connect QMGR is asked whether the session may open (C{icr:},
    C{ios:}); at MAIL whether a transaction fits (disk, queue).  Access
    checks are made by L{SessionPolicy}, then the policy milters of the
    section are asked (L{smx.mail.pmilterhooks}, doc/pmilter.md).

CONFIGURATION PARAMETERS
    Section C{smtps} (or several named ones, C{smtps MTA { ... }}, seed
    §5.9.1, each with its own listeners and options):

    daemon_address      up to 16 C{host:port}, C{:port}, C{host} (port
                        8000), C{[IPv6]:port}
    flags               8bitmime, delay_checks, lmtp_does_not_imply_relaying
                        (also spelt lmtpl_...), softbounce, access,
                        serialize_accept, background
    id                  the process id byte of session/transaction ids
    io_timeout          the time to send a complete line, and to end the
                        TLS handshake after STARTTLS; part of a line does
                        not extend it (default 5m; 421 4.4.2, or the
                        connection is dropped in the handshake)
    max_message_time    354 to the final dot (default 1h; 421 4.4.2)
    max_session_time    a whole session, ended at the next command
                        (default 1h; 421 4.4.2)
    max_bad_commands_per_session, max_recipients_per_session
                        (max_recipients is its old name),
    max_recipients_per_transaction, max_transactions, max_hops,
    max_message_size    limits (0: none)
    processes, max_threads
                        smx serves every session of a listener in one
                        process; C{processes} x C{max_threads} (when both
                        are set) is the most concurrent sessions a listener
                        accepts: beyond, the session that keeps it waiting
                        longest is closed for a client from an address
                        holding fewer sessions, else 421 4.3.2; addresses
                        with slow sessions get at most 1/8 of them
                        (L{smx.mail.sessions}).  C{min_wait_threads},
                        C{max_wait_threads} and C{serialize_accept} have no
                        work to do in an event loop and are accepted.
    tls { cert_file; key_file; CAcert_file; CAcert_path;
          flags = { allow_relaying_if_verified,
                    check_access_map_for_relaying };
          min_protocol; certificate NAME { cert_file; key_file;
          server_names } }
                        STARTTLS; more certificates chosen by the
                        client's server name (SNI), all read again on
                        SIGUSR1 (L{smx.mail.tls}, doc/tls.md)
    auth { flags; trusted_mechs; type; password_file; path; address;
           service; realm; timeout }
                        type (an smx extension) is the back end: file
                        (password_file), dovecot or saslauthd (path or
                        address of their socket; L{smx.mail.auth},
                        doc/auth.md).  With type file, password_file
                        holds C{user:password} lines; AUTH (PLAIN, LOGIN,
                        CRAM-MD5) is offered only when it is set, and only
                        after STARTTLS unless the auth flag
                        C{allow_plaintext_without_tls} is set;
                        C{noplaintext} leaves only CRAM-MD5.  A successful
                        AUTH allows relaying if its mechanism is in
                        C{trusted_mechs}, or with any mechanism when
                        C{trusted_mechs} is not set.
    CDB_gid, pass_fd_socket
                        used by the content store and the MCP, not here.
    The global C{hostname} (default: the FQDN) names the server in the
    greeting, EHLO and Received: header.

SECURITY
    Only <CRLF>.<CRLF> ends a message; bare CR or LF in the data rejects
    it (554 5.6.11), so does a NUL byte (554 5.6.0: C{<CRLF><NUL>.<CRLF>}
    is an end of data to a next hop that drops NULs) and a line longer
    than 1000 octets with its CRLF (500 5.5.2, RFC 5321 §4.5.3.1.6); such
    content is read to the final dot but neither stored nor relayed.
    Input pipelined after STARTTLS is discarded.  Command lines must end
    in CRLF, hold no NUL or bare CR and are at most 512 bytes with the
    CRLF (500 5.5.2; a longer one is skipped to its end, not held).
    Relaying needs an explicit rule (see L{smx.mail.policy}).

DIAGNOSTICS
    Records as seed App. C.2: C{ss_sess=..., client_ipv4=...,
    client_name=..., relay=0|1} (whether the client may relay),
    C{where=connection, starttls=successful},
    C{ss_ta=..., mail=<...>, stat=0} (with C{requiretls=1} for
    C{MAIL ... REQUIRETLS}), C{rcpt=<...>, idx=N, stat=0},
    C{msgid=<...>, size=N, stat=0}; rejections with C{stat=CODE,
    reply=...}.  An unexpected failure is logged with C{sev=ERR} and
    answered 451 4.3.0.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence

from twisted.internet import defer, interfaces, protocol
from twisted.internet.address import IPv6Address
from twisted.python import failure
from zope.interface import implementer

from smx import versionString
from smx.fastdefer import inlineCallbacks, onFailure
from smx.ids import ServerIdGenerator
from smx.log import Logger
from smx.mail import server as sm
from smx.mail.commit import _TEMPFAIL, CommitMixin, _Transaction
from smx.mail.authcommands import AuthCommandsMixin
from smx.mail.deadlines import RECORD_SIZE
from smx.mail.drain import StopMixin, stopSessions, whenStopped
from smx.mail.milterhooks import MilterMixin
from smx.mail.pmilterhooks import PolicyMilterMixin
from smx.mail.policy import SessionPolicy
from smx.mail.policyhooks import PolicyServerMixin, closePolicyServers
from smx.mail.sessions import SessionTable
from smx.mail.tls import tlsInfo

if TYPE_CHECKING:  # pragma: no cover
    from smx.interfaces import (
        IAddressResolver,
        IContentStore,
        IMilterClient,
        IPolicyClient,
        IPolicyMilterHost,
        IQueueManager,
        ISASLExchange,
    )
    from smx.mail.listener import ServerSettings
    from smx.values import ReplyData


#: bytes a client may send while its session waits for an answer (QMGR,
#: SMAR) before smx stops reading from it
HOLD_LIMIT = 64 * 1024


@implementer(interfaces.IHandshakeListener)
class SMTPServerProtocol(  # the milters' hooks in L{MilterMixin}
    AuthCommandsMixin,
    MilterMixin,
    PolicyServerMixin,
    PolicyMilterMixin,
    CommitMixin,
    StopMixin,  # the timers too (L{smx.mail.deadlines})
    protocol.Protocol,
):
    """
    One SMTP session: the Twisted side of a L{sm.ServerConnection}.
    """

    factory = None  # type: Any
    connection = None  # type: Any
    transport = None  # type: Any
    sessionId = ""

    def connectionMade(self) -> None:
        f = self.factory
        s = f.settings
        peer = self.transport.getPeer()
        self.clientAddress = getattr(peer, "host", "127.0.0.1")
        self.ipv6 = isinstance(peer, IPv6Address)
        if self.ipv6 and self.clientAddress.lower().startswith("::ffff:"):
            if "." in self.clientAddress:
                # an IPv4 client of a dual-stack listener
                self.clientAddress = self.clientAddress[7:]
                self.ipv6 = False
        self.sessionId = f.ids.next()
        # a back end such as Dovecot may change its list at any time
        mechanisms = s.authMechanisms
        self.connection = sm.ServerConnection(
            s.hostname,
            maxMessageSize=s.maxMessageSize,
            maxRecipientsPerTransaction=s.maxRecipientsPerTransaction,
            maxRecipientsPerSession=s.maxRecipientsPerSession,
            maxTransactions=s.maxTransactions,
            maxBadCommands=s.maxBadCommands,
            eightBitMime=s.eightBitMime,
            tlsAvailable=s.tlsContextFactory is not None,
            authMechanisms=mechanisms,
            authRequiresTLS=s.authRequiresTLS,
            softbounce=s.softbounce,
            greeting="ESMTP " + versionString,
        )
        self.policy = SessionPolicy(
            f.resolver,
            self.clientAddress,
            s.hostname,
            access=s.access,
            delayChecks=s.delayChecks,
            lmtpImpliesRelaying=s.lmtpImpliesRelaying,
            allowRelayingIfVerified=s.allowRelayingIfVerified,
            checkAccessMapForRelaying=s.checkAccessMapForRelaying,
            trustedMechanisms=(
                mechanisms if s.trustedMechanisms is None else s.trustedMechanisms
            ),
            relayClients=s.relayClients,
        )
        self.transaction = None  # type: Optional[_Transaction]
        self.tlsInfo = None  # type: Optional[Dict[str, Any]]
        self.authUser = None  # type: Optional[str]
        self.authMechanism = None  # type: Optional[str]
        self._sasl = None  # type: Optional[ISASLExchange]
        self._running = False
        self._waiting = False
        # input that arrived while waiting, and whether reading is paused
        self._heldBytes = 0
        self._paused = False
        self._tlsPending = False
        self._opened = False
        self._lost = False
        self._closing = False
        # when the server began to wait for the client's next line, and
        # the bytes of the line (record) received so far
        self._readySince = f.reactor.seconds()
        self._partial = 0
        self._expired = False
        self._startTimers()
        f.sessions.add(self)
        refusal = f.table.admit(self)
        if refusal is not None:
            self._logConnection(*refusal)
            self.connection.refuse(*refusal)
            self._advance()
            return
        self._wait(self._startSession())

    def _logConnection(self, code: int, dsn: str, text: str) -> None:
        """Log the client's address and why the session is refused or ends."""
        self.factory.log.info(
            ss_sess=self.sessionId,
            **{
                ("client_ipv6" if self.ipv6 else "client_ipv4"): self.clientAddress,
                "where": "connection",
                "stat": code,
                "reply": "%d %s %s" % (code, dsn, text),
            },
        )

    @inlineCallbacks
    def _startSession(self):
        f = self.factory
        reply = yield f.queueManager.sessionOpen(self.sessionId, self.clientAddress)
        if reply is None:
            self._opened = True
            if self._lost:
                self._sessionOver()
            reply = yield self.policy.checkConnection()
            if reply is None and not self._lost:
                # Postfix policy servers (doc/policy.md)
                reply = yield self._pdConnect()
            if reply is None and not self._lost:
                # the pmilters after SMTPS's own checks (doc/pmilter.md)
                reply = yield self._pmOpen()
            if reply is None and not self._lost:
                # then the sendmail milters (doc/milter.md)
                reply = yield self._mlOpen()
        f.log.info(
            ss_sess=self.sessionId,
            **{
                ("client_ipv6" if self.ipv6 else "client_ipv4"): self.clientAddress,
                "client_name": self.policy.clientName,
                # whether the client may relay (App. C.2)
                "relay": 1 if self.policy.relayClient else 0,
            },
        )
        if self._lost:
            return
        if reply is None:
            self.connection.greet()
        else:
            f.log.info(
                ss_sess=self.sessionId,
                where="connection",
                stat=reply["code"],
                reply="%s %s %s" % (reply["code"], reply["dsn"], reply["text"]),
            )
            self.connection.refuse(reply["code"], reply["dsn"], reply["text"])

    # -- the event loop ---------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._tlsPending:
            # decrypted data arrives only after the handshake
            self.handshakeCompleted()
        # io_timeout is a deadline per line (record), not per byte: a
        # part of a line does not extend it
        end = data.rfind(b"\n")
        if end >= 0:
            self._record(len(data) - end - 1)
        elif self._partial + len(data) >= RECORD_SIZE:
            self._record(0)
        else:
            if not self._partial:
                self.factory.table.setIncomplete(self, True)
            self._partial += len(data)
        self.connection.receiveData(data)
        if self._waiting:
            # held until the pending answer; a client that keeps sending
            # is no longer read from (pausing costs two epoll calls, so it
            # is not done for the usual small pipelined input)
            self._heldBytes += len(data)
            if self._heldBytes > HOLD_LIMIT and not self._paused:
                self._paused = True
                self.transport.pauseProducing()
            return
        self._advance()

    def _wait(self, d: defer.Deferred) -> None:
        """Stop reading events until C{d} has fired."""
        if d.called:
            onFailure(d, self._ebUnexpected)
            self._advance()
            return
        self._suspend(d)

    def _suspend(self, d: defer.Deferred) -> None:
        """Process no more events until C{d} has fired."""
        # io_timeout goes on running: it starts again when the answer
        # comes, and if it ends first it starts again then
        # (L{DeadlineMixin._timeUp})
        self._waiting = True
        d.addErrback(self._ebUnexpected)
        d.addBoth(self._cbResume)

    def _cbResume(self, _: Any) -> None:
        self._waiting = False
        self._heldBytes = 0
        self._readySince = self.factory.reactor.seconds()
        if not self._lost:
            if self._paused:
                self._paused = False
                self.transport.resumeProducing()
            self._advance()

    def _ebUnexpected(self, reason: failure.Failure) -> None:
        self.factory.log.failure("SMTPServerProtocol", reason, ss_sess=self.sessionId)
        if self.connection.awaitingReply:
            self.connection.reject(*_TEMPFAIL)
        elif self.connection.state is sm.State.CONNECTED:
            self.connection.refuse(421, "4.3.0", "Temporary failure")

    def _advance(self) -> None:
        if self._running or self._lost or self._waiting:
            return
        self._running = True
        try:
            conn = self.connection
            while True:
                event = conn.nextEvent()
                if event is sm.NEED_DATA:
                    self._flush()
                    if self._expired:
                        self._endExpired()
                    return
                if event is sm.PAUSED:
                    # a pipelining client waits for the whole group
                    return
                if event is sm.CLOSE:
                    self._flush()
                    self._close()
                    return
                handler = self._handlers[type(event)]
                try:
                    d = handler(self, event)
                except Exception:
                    self._ebUnexpected(failure.Failure())
                    continue
                if d is not None:
                    if not d.called:
                        self._suspend(d)
                        return
                    onFailure(d, self._ebUnexpected)
        finally:
            self._running = False

    def _flush(self) -> None:
        problems = self.connection.problems
        if problems:
            for code, dsn, text, line in problems:
                if dsn == "5.5.1" and code == 500:
                    self._pmUnknown(line)
                    self._mlUnknown(line)
                self.factory.log.info(
                    ss_sess=self.sessionId,
                    input=line,
                    stat=code,
                    reply="%d %s %s" % (code, dsn, text),
                )
            del problems[:]
        out = self.connection.dataToSend()
        if out:
            self.transport.write(out)

    def connectionLost(self, reason: failure.Failure = protocol.connectionDone) -> None:
        self._lost = True
        self._stopTimers()
        self._closeTransaction()
        self._pmClose()
        self._mlClose()
        self.factory.table.remove(self)
        self.factory.sessions.discard(self)
        self._sessionOver()

    def _sessionOver(self) -> None:
        """Tell the queue manager the session is over (once)."""
        if self._opened:
            self._opened = False
            self.factory.queueManager.sessionClose(self.sessionId, self.clientAddress)

    def _closeTransaction(self) -> None:
        # a BDAT transfer may end with RSET, HELO or QUIT
        self._stopMessageTimer()
        if self.transaction is not None:
            self.transaction.abort()
            self.transaction = None
        self._pmAbort()
        self._mlAbort()

    # -- events -----------------------------------------------------------

    def _logReject(self, field: str, value: str, code: int, dsn: str, text: str):
        record = {"ss_sess": self.sessionId}  # type: Dict[str, Any]
        if self.transaction is not None:
            record["ss_ta"] = self.transaction.id
        record[field] = value
        record["stat"] = code
        record["reply"] = "%d %s %s" % (code, dsn, text)
        self.factory.log.info(**record)

    def _reject(self, reply: ReplyData) -> None:
        self.connection.reject(reply["code"], reply["dsn"], reply["text"])

    def do_Helo(self, event: sm.Helo):
        self._closeTransaction()
        self.policy.resetTransaction()
        text = "%s Hello %s [%s]" % (
            self.factory.settings.hostname,
            event.name,
            self.clientAddress,
        )
        if self._noHooks("HELO"):
            self.connection.accept(text)
            return None
        return self._pdHelo(
            event,
            lambda: self._pmHelo(
                event.name,
                lambda: self._mlHelo(event.name, lambda: self.connection.accept(text)),
            ),
        )

    @inlineCallbacks
    def do_MailFrom(self, event: sm.MailFrom):
        self._closeTransaction()
        reply = yield self.factory.queueManager.checkAcceptance(
            event.size, self.sessionId
        )
        if reply is None:
            reply = yield self.policy.checkSender(event.sender)
        if reply is not None:
            self._logReject(
                "mail",
                "<%s>" % event.sender,
                reply["code"],
                reply["dsn"],
                reply["text"],
            )
            self._reject(reply)
            return
        ta = _Transaction(self.factory.ids.next(), event.sender, event.body, event.size)
        ta.smtputf8 = event.smtputf8
        ta.ret, ta.envid = event.ret, event.envid
        ta.requiretls = event.requiretls
        self.transaction = ta
        rejected = yield self._pdMail(event, ta)
        if rejected:
            self.transaction = None
            return
        if self.pmSession is not None:
            rejected = yield self._pmMail(event, ta)
            if rejected:
                self.transaction = None
                return
        if self.mlChain is not None:
            rejected = yield self._mlMail(event, ta)
            if rejected:
                self.transaction = None
                return
        self.factory.log.info(
            ss_sess=self.sessionId,
            ss_ta=ta.id,
            mail="<%s>" % event.sender,
            requiretls=1 if ta.requiretls else None,
            stat=0,
        )
        self.connection.accept()

    @inlineCallbacks
    def do_RcptTo(self, event: sm.RcptTo):
        ta = self.transaction
        reply, address, discard = yield self.policy.checkRecipient(event.recipient)
        if reply is not None:
            code, dsn, text = reply["code"], reply["dsn"], reply["text"]
            if code == 550 and dsn == "5.7.1" and text == "Relaying denied":
                text = "<%s>... Relaying denied" % (event.recipient,)
            if self.pmSession is not None:
                # CAP_RCPT_ST: the pmilters may see it; the rejection stands
                yield self._pmRcpt(event, code)
            yield self._mlRcptRejected(event, code, dsn, text)
            self._logReject("rcpt", "<%s>" % event.recipient, code, dsn, text)
            self.connection.reject(code, dsn, text)
            return
        if ta is None:  # pragma: no cover - the state machine prevents it
            self.connection.reject(*_TEMPFAIL)
            return
        rejected = yield self._pdRcpt(event, address)
        if rejected:
            return
        if self.pmSession is not None:
            verdict = yield self._pmRcpt(event, 250)
            if verdict == "rejected":
                return
            discard = discard or verdict == "discard"
        if self.mlChain is not None and not discard:
            verdict = yield self._mlRcpt(event)
            if verdict == "rejected":
                return
            discard = verdict == "discard"
        index = None if discard else ta.addRecipient(address, event.notify, event.orcpt)
        if index is not None:
            if ta.writer is None and not self.policy.discardTransaction:
                # the content store may prepare the content file while
                # the client goes on (see ContentWriter); a failure here
                # shows again at DATA
                try:
                    ta.writer = self.factory.contentStore.createWriter(ta.id)
                except Exception:
                    ta.writer = None
            self.factory.log.info(
                ss_sess=self.sessionId,
                ss_ta=ta.id,
                rcpt="<%s>" % address,
                idx=index,
                stat=0,
            )
        elif discard:
            self.factory.log.info(
                ss_sess=self.sessionId, ss_ta=ta.id, rcpt="<%s>" % address, discard=1
            )
        else:
            self.factory.log.info(
                ss_sess=self.sessionId, ss_ta=ta.id, rcpt="<%s>" % address, duplicate=1
            )
        self.connection.accept()

    def do_Rset(self, event: sm.Rset):
        self._closeTransaction()
        self.policy.resetTransaction()
        self.connection.accept()

    def do_Quit(self, event: sm.Quit):
        self._closeTransaction()
        self.connection.accept()

    # -- STARTTLS ---------------------------------------------------------

    def do_StartTLS(self, event: sm.StartTLS):
        self._closeTransaction()
        self.connection.accept()
        self._flush()
        self._tlsPending = True
        # the handshake must end within io_timeout: it counts as a line
        # being received (slow while it lasts)
        self._record(0)
        self.factory.table.setIncomplete(self, True)
        self.transport.startTLS(self.factory.settings.tlsContextFactory)

    def handshakeCompleted(self) -> None:
        if not self._tlsPending:
            return
        self._tlsPending = False
        self.factory.table.setIncomplete(self, False)
        requested = getattr(
            self.factory.settings.tlsContextFactory, "requestsCertificate", False
        )
        try:
            self.tlsInfo = tlsInfo(self.transport.getHandle(), requested)
        except Exception:
            self.tlsInfo = {"version": "?", "cipher": "?", "bits": 0, "verify": "NO"}
        info = self.tlsInfo
        self.factory.log.info(
            ss_sess=self.sessionId,
            where="connection",
            starttls="successful",
            sni=info.get("servername"),
            version=info["version"],
            cipher=info["cipher"],
            bits=info["bits"],
            verify=info["verify"],
        )
        self.connection.tlsStarted()
        self.authUser = None
        self._wait(self.policy.tlsEstablished(info))

    def _noHooks(self, stage: str) -> bool:
        """
        Is there no policy server for C{stage}, no pmilter session and no
        milter chain?  Then the hooks of a command would each just go on
        to the next, and the command is answered without them.
        """
        return (
            self.pmSession is None
            and self.mlChain is None
            and not self._pdServers(stage)
        )

    def _dataCommand(self, event: sm.DataCommand):
        if self._noHooks("DATA"):
            return self._dataAccepted(event)
        return self._pdData(
            event,
            lambda: self._pmData(
                event, lambda: self._mlData(event, lambda: self._dataAccepted(event))
            ),
        )

    def _dataAccepted(self, event: sm.DataCommand) -> None:
        CommitMixin.do_DataCommand(self, event)
        if self.connection.receivingData:
            # the 354 went out: the message must end within max_message_time
            self._startMessageTimer()

    def _dataChunk(self, event: sm.DataChunk):
        self._pmBody(event.data)
        return CommitMixin.do_DataChunk(self, event)

    def _pmShutdown(self) -> None:
        self._flush()
        self._close()

    def _endOfData(self, event: sm.EndOfData):
        self._stopMessageTimer()
        return CommitMixin.do_EndOfData(self, event)

    _handlers = {
        sm.Helo: do_Helo,
        sm.MailFrom: do_MailFrom,
        sm.RcptTo: do_RcptTo,
        sm.DataCommand: _dataCommand,
        sm.DataChunk: _dataChunk,
        sm.EndOfData: _endOfData,
        sm.Rset: do_Rset,
        sm.Quit: do_Quit,
        sm.StartTLS: do_StartTLS,
        sm.Auth: AuthCommandsMixin.do_Auth,
        sm.AuthResponse: AuthCommandsMixin.do_AuthResponse,
    }  # type: Dict[type, Any]


class SMTPServerFactory(protocol.ServerFactory):
    """
    Makes L{SMTPServerProtocol}s for one listener.

    @ivar sessions: the open sessions.
    """

    protocol = SMTPServerProtocol  # type: ignore[assignment]
    #: the pmilters of the section (L{smx.mail.pmilterhooks}), or C{None}
    pmilterHost = None  # type: Optional[IPolicyMilterHost]
    #: the sendmail milters of the section (L{smx.mail.milterhooks})
    milters = ()  # type: Sequence[IMilterClient]
    #: protocol state -> Postfix policy servers (L{smx.mail.policyhooks})
    policyServers = None  # type: Optional[Dict[str, List[IPolicyClient]]]
    #: policy name -> its C{policy_context} (L{smx.mail.policyhooks})
    policyContexts = None  # type: Optional[Dict[str, str]]
    #: the stop under way or done (L{shutdown}), or C{None}
    stopping = None  # type: Optional[defer.Deferred]

    def __init__(
        self,
        settings: ServerSettings,
        queueManager: IQueueManager,
        contentStore: IContentStore,
        resolver: IAddressResolver,
        reactor: Any = None,
        log: Optional[Logger] = None,
        ids: Optional[ServerIdGenerator] = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self.settings = settings
        self.queueManager = queueManager
        self.contentStore = contentStore
        self.resolver = resolver
        self.reactor = reactor
        self.log = log if log is not None else Logger("smtps")
        self.ids = (
            ids
            if ids is not None
            else ServerIdGenerator(settings.processId, clock=reactor.seconds)
        )
        self.sessions = set()  # type: set
        self.table = SessionTable(settings.maxSessions, reactor)

    def startFactory(self) -> None:
        """The first listener starts: connect to the AUTH server, if any."""
        self.stopping = None
        self.table.closing = None
        if self.settings.authenticator is not None:
            self.settings.authenticator.start(self.log)

    def stopFactory(self) -> None:
        """
        The last listener stopped: close the AUTH server's connection and
        the policy servers', once the sessions are over (L{shutdown}).
        """
        whenStopped(self).addCallback(lambda _: self._closeClients())

    def _closeClients(self) -> None:
        if self.settings.authenticator is not None:
            self.settings.authenticator.stop()
        closePolicyServers(self.policyServers)

    def shutdown(self) -> defer.Deferred:
        """
        smx stops: say 421 to every open session and close it, except
        those whose final dot was received, which get their reply first
        (within a bound; L{smx.mail.drain}).

        @return: a L{Deferred} that fires when the sessions are over.
        """
        if self.stopping is None:
            self.stopping = stopSessions(self)
        return whenStopped(self)


#: names that moved to L{smx.mail.listener}, still importable from here
_MOVED = frozenset(
    [
        "LISTEN_BACKLOG",
        "ServerSettings",
        "SMTPSConfigurationError",
        "SMTPSListener",
        "listenAddresses",
        "settingsFromSection",
        "smtpsServices",
    ]
)


def __getattr__(name: str) -> Any:
    # smx.mail.listener imports this module: its names are looked up late
    if name in _MOVED:
        from smx.mail import listener

        return getattr(listener, name)
    raise AttributeError("module %r has no attribute %r" % (__name__, name))

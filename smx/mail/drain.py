# -*- test-case-name: smx.mail.test.test_drain -*-
"""
NAME
    smx.mail.drain - how SMTPS stops: the commits under way finish first

SYNOPSIS
    class SMTPServerProtocol(..., StopMixin, protocol.Protocol): ...

    d = stopListening(factory, port)    # SMTPSListener.stopService

DESCRIPTION
    When smx stops (SIGTERM to C{twistd -n smx}, or the MCP stopping an
    SMTPS process of split mode), each SMTPS listener closes its socket at
    once (a new connection is refused), and a connection that still
    reaches a factory that stops (another address of the same section)
    gets C{421 4.3.2 Service shutting down}.

    Every open session gets C{421 4.3.2} and is closed, except one whose
    final dot (or BDAT LAST) has been received: its message is being
    checked (policy servers, pmilters, milters) and committed (content
    in CDB, envelope in QMGR's IBDB).  That session gets its real reply
    (250, or the 4xx/5xx of a check or a failed commit), then C{421
    4.3.2}, and is closed; the listener's C{stopService} fires only then,
    so that the services it depends on (the pmilters, QMGR; L{smx.tap}
    stops them after SMTPS) are still running meanwhile.  This is what
    Postfix and sendmail do on a graceful stop: the client never gets
    421 for a message that was queued (and sends it again: a duplicate),
    and smx never stops between the commit and the reply.

    The wait is bounded by L{COMMIT_GRACE} seconds, or the section's
    C{io_timeout} when that is shorter.  A session still waiting after
    that gets C{421 4.3.2} and is closed; its message is then not
    queued: a commit that had not started is not made, and one that
    ends after the 421 is undone where SMTPS syncs the content itself
    (its content removed, QMGR told the content is not stored;
    L{smx.mail.commit}).  The client, told 421, sends the message again.
    Where QMGR syncs the content with the envelope (the components' store,
    L{smx.queue.cdb.ContentSync}), a commit that ends after the 421 stays
    queued: the message the client sends again is a duplicate, never a
    loss.

CONFIGURATION PARAMETERS
    smtps: io_timeout (bounds the wait, see above).

SECURITY
    None.

DIAGNOSTICS
    C{ss_sess=..., where=shutdown, stat=421} for each session ended by
    the stop, with C{commit=unfinished} for one whose commit did not end
    within the grace time; C{stat=waiting for commits, n=N} when the
    listener waits for N sessions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, List, Optional

from twisted.internet import defer, task

from smx.mail.deadlines import DeadlineMixin

#: the longest a stopping SMTPS waits for the commits of the messages
#: whose final dot it has received (seconds; io_timeout if shorter); the
#: MCP sends SIGKILL 10 s after SIGTERM
COMMIT_GRACE = 5.0

#: how often the stopping factory looks whether its sessions are done
POLL_INTERVAL = 0.02

#: the reply to every session the stop ends, and to a new connection
STOP_REPLY = (421, "4.3.2", "Service shutting down")


class StopMixin(DeadlineMixin):
    """
    The end of an L{smx.mail.smtps.SMTPServerProtocol} session when smx
    stops (see the module docstring).
    """

    #: smx stops: the session ends when it next waits for a command
    _stopping = False

    if TYPE_CHECKING:  # pragma: no cover - provided by the protocol
        _expired: bool
        _paused: bool
        _checked: Any

    def committing(self) -> bool:
        """
        Has the final dot of a message been received, and is its reply
        still due (the message is being checked or committed)?
        """
        return (
            not self._closing and not self._lost and self.connection.awaitingEndOfData
        )

    def stopped(self) -> bool:
        """
        Is the session over for a stop: closed (its last replies are
        written), or lost with no answer it still waits for (a commit
        under way)?
        """
        return self._closing or (self._lost and not self._waiting)

    def stopAfterReply(self) -> None:
        """
        smx stops: end the session with 421 once the final dot has its
        reply, when the server next waits for a command (as
        C{max_session_time} does).  What the client sent after the final
        dot is not answered (but with that 421): it is forgotten, and the
        client no longer read from.
        """
        self._stopping = True
        self._expired = True
        self.connection.discardInput()
        self._paused = False
        self.transport.pauseProducing()

    def stopNow(self, unfinished: bool = False) -> None:
        """
        smx stops: 421 4.3.2 and close (drop the connection during a TLS
        handshake).

        @param unfinished: the session's final dot did not get its reply
            in time: its content is removed unless its commit is under
            way (L{smx.mail.commit} undoes that one when it ends).
        """
        if self._closing or self._lost:
            return
        ta = self._checked
        if unfinished and ta is not None and ta.writer is not None:
            ta.writer.abort()
        self._stopping = True
        record = dict(ss_sess=self.sessionId, where="shutdown", stat=STOP_REPLY[0])
        if unfinished:
            record["commit"] = "unfinished"
        self.factory.log.info(**record)
        if not self._tlsPending:
            self.connection.shutdown()
            self._flush()
        self._close()

    def _endExpired(self) -> None:
        if self._stopping:
            self.stopNow()
            return
        DeadlineMixin._endExpired(self)


class _Stop:
    """
    One stop of a factory: the sessions it waits for, and when.
    """

    def __init__(self, factory: Any, sessions: List[Any], grace: float) -> None:
        self.factory = factory
        self.waiting = sessions
        self.done = defer.Deferred()  # type: defer.Deferred[None]
        self.deadline = factory.reactor.seconds() + grace
        self.poll = task.LoopingCall(self.check)
        self.poll.clock = factory.reactor

    def start(self) -> None:
        self.factory.log.info(stat="waiting for commits", n=len(self.waiting))
        self.poll.start(POLL_INTERVAL, now=False)

    def check(self) -> None:
        self.waiting = [p for p in self.waiting if not p.stopped()]
        if self.waiting and self.factory.reactor.seconds() < self.deadline:
            return
        for p in self.waiting:
            p.stopNow(unfinished=True)
        self.poll.stop()
        self.done.callback(None)


def grace(settings: Any) -> float:
    """
    The longest a stopping listener of C{settings} waits for its
    commits: L{COMMIT_GRACE}, or C{io_timeout} if shorter.
    """
    timeout = settings.ioTimeout
    return min(timeout, COMMIT_GRACE) if timeout else COMMIT_GRACE


def stopSessions(factory: Any) -> "defer.Deferred[None]":
    """
    Refuse new sessions of C{factory} (an L{smx.mail.smtps.
    SMTPServerFactory}) with 421, end the idle ones with 421, and let
    those whose final dot was received have their reply first.

    @return: a L{Deferred} that fires when every session is over, or
        after L{grace} seconds (those left then got 421).
    """
    factory.table.closing = STOP_REPLY
    waiting = []
    for p in list(factory.sessions):
        if p.committing():
            p.stopAfterReply()
            waiting.append(p)
        else:
            p.stopNow()
    if not waiting:
        return defer.succeed(None)
    stop = _Stop(factory, waiting, grace(factory.settings))
    stop.start()
    return stop.done


def whenStopped(factory: Any) -> "defer.Deferred[None]":
    """
    @return: a L{Deferred} that fires when the stop of C{factory} under
        way (L{stopSessions}) is over, at once if none is.
    """
    stopping = getattr(factory, "stopping", None)  # type: Optional[defer.Deferred]
    d = defer.Deferred()  # type: defer.Deferred[None]
    if stopping is None or stopping.called:
        d.callback(None)
    else:

        def _cbStopped(result: Any) -> Any:
            d.callback(None)
            return result

        stopping.addBoth(_cbStopped)
    return d


def stopListening(factory: Any, port: Any) -> "defer.Deferred[Any]":
    """
    Stop a listener of C{factory}: close C{port} (if any) and stop the
    sessions (L{smx.mail.smtps.SMTPServerFactory.shutdown}).

    @return: a L{Deferred} that fires when the port is closed and the
        sessions are over.
    """
    stopped = factory.shutdown()
    if port is None:
        return stopped
    waits = [stopped, defer.maybeDeferred(port.stopListening)]  # type: List[Any]
    return defer.gatherResults(waits, consumeErrors=True)

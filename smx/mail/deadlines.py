# -*- test-case-name: smx.mail.test.test_smtps_timers -*-
"""
NAME
    smx.mail.deadlines - the timers of an SMTPS session and how it ends

SYNOPSIS
    class SMTPServerProtocol(CommitMixin, DeadlineMixin, protocol.Protocol):
        ...

DESCRIPTION
    The half of L{smx.mail.smtps.SMTPServerProtocol} that bounds how long
    a client may keep a session, like Postfix's C{smtpd_timeout} with
    C{smtpd_per_record_deadline}:

      - C{io_timeout} is the time the client has to send a complete
        line (or L{RECORD_SIZE} bytes of a longer one), counted from when
        smx starts waiting for it; part of a line does not extend it.
        After STARTTLS the TLS handshake must end within it too; a
        session whose handshake did not end is dropped (no reply can
        reach the client).  The time smx itself works on a command
        (QMGR, SMAR) does not count.
      - C{max_message_time} is the time from the 354 reply to the final
        dot.
      - C{max_session_time} is the time a session may last; it ends when
        smx next waits for a command, so that a message being received
        can finish.

    Each ends the session with 421 4.4.2.  A session that ends, and one
    closed to make room for another (L{DeadlineMixin.evict}, decided by
    L{smx.mail.sessions}), is dropped if the client has not let the
    connection close within L{CLOSE_GRACE} seconds.

DIAGNOSTICS
    C{ss_sess=..., where=timeout, stat=421}, with C{tls=handshake} for an
    unfinished handshake and C{limit=max_message_time} or
    C{limit=max_session_time} for those limits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

#: bytes without a line end that count as a complete record for the
#: io_timeout deadline (a long DATA line; Postfix's line_length_limit)
RECORD_SIZE = 2048

#: seconds a closing session may take to send its last reply before its
#: TCP connection is dropped
CLOSE_GRACE = 10.0

#: a deadline this close (seconds) counts as reached: a timer set for it
#: may fire that much early through rounding
_EPSILON = 1e-6


class DeadlineMixin:
    """
    The timers of L{smx.mail.smtps.SMTPServerProtocol}, its lag (see
    L{smx.mail.sessions}) and the end of the session.

    The four deadlines of a session (io_timeout from C{_readySince}, the
    end of max_message_time, of max_session_time, and of the grace of a
    closing session) share one timer of the reactor, set for the
    earliest of them.  A deadline that moves later (io_timeout at every
    line) does not touch the timer: when the timer fires it finds what
    is due, and is set again for what is not (one timer per session
    instead of four, and no change of it per command line).
    """

    #: the one timer, and the time it is set for
    _timer = None  # type: Any
    _timerAt = 0.0
    #: when max_message_time, max_session_time and the grace of a closing
    #: session end (None: not running)
    _messageAt = None  # type: Optional[float]
    _sessionAt = None  # type: Optional[float]
    _abortAt = None  # type: Optional[float]

    if TYPE_CHECKING:  # pragma: no cover - provided by the protocol
        factory: Any
        connection: Any
        transport: Any
        sessionId: str
        _tlsPending: bool
        _closing: bool
        _lost: bool
        _waiting: bool
        _running: bool
        _expired: bool
        _readySince: float
        _partial: int

        def _flush(self) -> None: ...

        def _closeTransaction(self) -> None: ...

        def _sessionOver(self) -> None: ...

        def _logConnection(self, code: int, dsn: str, text: str) -> None: ...

    # -- the one timer ------------------------------------------------------

    def _startTimers(self) -> None:
        """
        The session starts (C{_readySince} is now): io_timeout and
        max_session_time run.
        """
        seconds = self.factory.settings.maxSessionTime
        if seconds:
            self._sessionAt = self._readySince + seconds
        self._setTimer()

    def _ioDeadline(self) -> Optional[float]:
        """When io_timeout ends (C{None}: it does not run)."""
        if self._closing or self._lost:
            return None
        seconds = self.factory.settings.ioTimeout
        return self._readySince + seconds if seconds else None

    def _earliest(self) -> Optional[float]:
        earliest = self._ioDeadline()
        for at in (self._messageAt, self._sessionAt, self._abortAt):
            if at is not None and (earliest is None or at < earliest):
                earliest = at
        return earliest

    def _setTimer(self) -> None:
        """
        Set the timer for the earliest deadline, unless it is set for an
        earlier time already (it then sets itself again when it fires).
        """
        at = self._earliest()
        timer = self._timer
        if at is None:
            if timer is not None:
                self._timer = None
                if timer.active():
                    timer.cancel()
            return
        if timer is not None and timer.active():
            if self._timerAt <= at:
                return
            timer.reset(max(0.0, at - self.factory.reactor.seconds()))
        else:
            self._timer = self.factory.reactor.callLater(
                max(0.0, at - self.factory.reactor.seconds()), self._timeUp
            )
        self._timerAt = at

    def _timeUp(self) -> None:
        """The timer fired: act on every deadline that has passed."""
        self._timer = None
        now = self.factory.reactor.seconds() + _EPSILON
        if self._abortAt is not None and self._abortAt <= now:
            self._abortAt = None
            self._abortNow()
        if self._messageAt is not None and self._messageAt <= now:
            self._messageAt = None
            self._messageTimeUp()
        if self._sessionAt is not None and self._sessionAt <= now:
            self._sessionAt = None
            self._sessionTimeUp()
        io = self._ioDeadline()
        if io is not None and io <= now:
            if self._waiting:
                # smx itself works on the session (QMGR, SMAR): not the
                # client's time; it has a whole io_timeout from now
                self._readySince = self.factory.reactor.seconds()
            else:
                self.timeoutConnection()
        if not self._lost:
            self._setTimer()

    def _stopTimers(self) -> None:
        """No deadline runs any more (the connection is gone)."""
        self._messageAt = self._sessionAt = self._abortAt = None
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    # -- io_timeout ---------------------------------------------------------

    def _record(self, partial: int) -> None:
        """
        A complete line arrived; C{partial} bytes of the next one follow.
        """
        # io_timeout now ends later: the timer finds out when it fires
        self._readySince = self.factory.reactor.seconds()
        if bool(partial) != bool(self._partial):
            self.factory.table.setIncomplete(self, bool(partial))
        self._partial = partial

    def lag(self, now: float) -> float:
        """
        How long the server has been waiting for this client to send a
        complete line or finish the TLS handshake (0 while the server
        works on the session or closes it); see L{smx.mail.sessions}.
        """
        if self._waiting or self._closing:
            return 0.0
        return now - self._readySince

    def timeoutConnection(self) -> None:
        """
        io_timeout passed without a complete line, or without the end of
        the TLS handshake after STARTTLS: 421 4.4.2 and close; a session
        whose handshake did not finish is dropped (nothing can be said
        to it).
        """
        if self._tlsPending:
            self.factory.log.info(
                ss_sess=self.sessionId, where="timeout", tls="handshake", stat=421
            )
            self._close(abort=True)
            return
        self.factory.log.info(ss_sess=self.sessionId, where="timeout", stat=421)
        self.connection.timeout()
        self._flush()
        self._close()

    # -- max_message_time and max_session_time -------------------------------

    def _startMessageTimer(self) -> None:
        seconds = self.factory.settings.maxMessageTime
        if seconds and self._messageAt is None:
            self._messageAt = self.factory.reactor.seconds() + seconds
            self._setTimer()

    def _stopMessageTimer(self) -> None:
        # the timer, if set for it, finds nothing due and is set again
        self._messageAt = None

    def _messageTimeUp(self) -> None:
        """max_message_time passed between the 354 and the final dot."""
        if self._closing or self._lost:
            return
        self._endSession("max_message_time", "Error: message transfer time exceeded")

    def _sessionTimeUp(self) -> None:
        """
        max_session_time passed: end the session when the server next
        waits for a command (a message being received may finish).
        """
        self._expired = True
        if not (self._running or self._waiting or self._closing or self._lost):
            self._endExpired()

    def _endExpired(self) -> None:
        if not self.connection.receivingData and not self._closing:
            self._endSession("max_session_time", "Error: session time limit exceeded")

    def _endSession(self, limit: str, text: str) -> None:
        self.factory.log.info(
            ss_sess=self.sessionId, where="timeout", limit=limit, stat=421
        )
        if self._tlsPending:
            self._close(abort=True)
            return
        self.connection.refuse(421, "4.4.2", text)
        self._flush()
        self._close()

    def evict(self) -> None:
        """
        Close this session to make room for a new one (it keeps the server
        waiting; see L{smx.mail.sessions}): 421 4.3.2.
        """
        reply = (421, "4.3.2", "Too many sessions; closing an idle one")
        self._logConnection(*reply)
        if not self._tlsPending:
            self.connection.refuse(*reply)
            self._flush()
        self._close()

    def _close(self, abort: bool = False) -> None:
        """
        End the session: it no longer counts against the limits; the TCP
        connection is closed after the replies are sent, or dropped if
        C{abort}, if the TLS handshake is unfinished, or if the client
        has not taken the replies within L{CLOSE_GRACE} seconds.
        """
        if self._closing:
            return
        self._closing = True
        self._messageAt = self._sessionAt = None
        self._closeTransaction()
        self.factory.table.remove(self)
        # QMGR knows before the client reads the last reply (and connects
        # again, perhaps to another SMTPS process)
        self._sessionOver()
        if abort or self._tlsPending:
            self.transport.abortConnection()
            return
        self.transport.loseConnection()
        if not self._lost:
            self._abortAt = self.factory.reactor.seconds() + CLOSE_GRACE
            self._setTimer()

    def _abortNow(self) -> None:
        if not self._lost:
            self.transport.abortConnection()

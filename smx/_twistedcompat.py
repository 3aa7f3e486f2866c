# -*- test-case-name: smx.test.test_twistedcompat -*-
"""
NAME
    smx._twistedcompat - every private name of Twisted smx relies on

SYNOPSIS
    from smx._twistedcompat import hasFinalResult, MaildirNameGenerator

DESCRIPTION
    smx uses a few names that Twisted does not promise to keep (their
    names start with an underscore).  Each is used here and only here,
    behind a small function or alias whose docstring says what it relies
    on and why smx needs it, so that a Twisted upgrade that changes one of
    them breaks one module, and L{smx.test.test_twistedcompat} says which.
    Nothing else in smx may use a private name of Twisted or of the
    standard library (L{smx.test.test_tree} checks).

    The supported Twisted releases are pinned in C{setup.cfg}
    (C{install_requires}); the tests of this module are what to run when
    that range is widened.

    What is used, and by whom:

      - C{Deferred._runningCallbacks} (L{hasFinalResult}):
        L{smx.fastdefer}; C{Deferred._callbacks}, C{_canceller} and C{_chainedTo}
        (L{succeeded}): L{smx.fastdefer}, the proxies of split mode and
        QMGR's admission of sessions (L{smx.queue.connections}).
      - C{FileDescriptor._tempDataBuffer}, C{FileDescriptor._writeDisconnected},
        C{PosixReactorBase._disconnectSelectable},
        C{tcp.Connector._makeTransport}, C{unix.Connector._makeTransport}
        and C{_SendmsgMixin._sendmsgQueue} (L{hasBufferedWrites},
        L{canSendTCPNow}, L{canSendUnixNow}, L{disconnectSelectable},
        L{TCPConnector}, L{UNIXConnector}): L{smx.net}.
      - C{EPollReactor._poller}, C{_selectables} and
        C{_PollLikeMixin._doReadOrWrite} (L{dispatchWithoutLogContext}):
        the processes of split mode (L{smx.split.service}).
      - C{twisted.scripts.twistd._SomeApplicationRunner} and
        C{AppLogger._getLogObserver} (L{twistdLogObserver}): L{smx.tap};
        C{FileLogObserver._outFile} (L{fileOfObserver}):
        L{smx.logobserver}.
      - C{CommandLocator._commandDispatch},
        C{CommandLocator._wrapWithSerialization},
        C{BoxDispatcher._commandReceived} and C{BoxDispatcher._safeEmit}
        (L{ampResponder}, L{ampWrapResponder}, L{ampCommandReceived},
        L{ampSendAnswer}): L{smx.split.dispatch}.
      - C{twisted.mail.maildir._MaildirNameGenerator}
        (L{MaildirNameGenerator}): L{smx.mail.lmtpd}.
      - C{DNSServerFactory._responseFromMessage} and
        C{ResolverBase._lookup} (L{responseFromMessage},
        L{RecordResolverBase}): the test DNS server
        L{smx.maps.test.dnsserver}.
"""

from __future__ import annotations

import errno
import select
from typing import Any, Callable, Optional

from twisted.internet import defer, tcp, unix
from twisted.mail import maildir
from twisted.names import common, dns
from twisted.protocols import amp
from twisted.python import log

__all__ = [
    "hasFinalResult",
    "succeeded",
    "hasBufferedWrites",
    "canSendTCPNow",
    "canSendUnixNow",
    "disconnectSelectable",
    "TCPConnector",
    "UNIXConnector",
    "dispatchWithoutLogContext",
    "twistdLogObserver",
    "fileOfObserver",
    "ampResponder",
    "ampWrapResponder",
    "ampCommandReceived",
    "ampSendAnswer",
    "MaildirNameGenerator",
    "responseFromMessage",
    "RecordResolverBase",
]


def hasFinalResult(d: defer.Deferred) -> bool:
    """
    Has C{d} its final result: fired, not waiting for another Deferred,
    and its callbacks not running right now?

    Relies on C{Deferred._runningCallbacks}, the flag Twisted sets while
    it runs a Deferred's callback chain (it guards the same re-entrancy in
    C{Deferred._runCallbacks}).  L{smx.fastdefer} takes a fired Deferred's
    result directly instead of adding a callback; while the callbacks run
    (one of them may be what asks) C{d.result} is not the final result
    yet, and only this flag tells.  (One function for the three tests:
    it runs for nearly every Deferred an SMTP command yields.)
    """
    return d.called and not d.paused and not d._runningCallbacks


_newObject = object.__new__
_Deferred = defer.Deferred


def succeeded(result: Any) -> defer.Deferred:
    """
    C{defer.succeed(result)}, without a call of C{Deferred.__init__}.

    A command of SMTPS makes several Deferreds that have fired already
    (cached answers, checks that finished without waiting): this makes
    one with a single call.  Relies on C{Deferred._callbacks} and
    C{Deferred._canceller}, the two attributes C{__init__} sets, and on
    C{_chainedTo}, which C{succeed} sets (the rest are class attributes); with C{Deferred.debug} on (which adds the
    creator's stack) it calls C{defer.succeed}.
    """
    if _Deferred.debug:
        return defer.succeed(result)
    d = _newObject(_Deferred)
    d._callbacks = []
    d._canceller = None
    d.result = result
    d.called = True
    d._chainedTo = None
    return d


def hasBufferedWrites(transport: Any) -> bool:
    """
    Has a TCP transport bytes that Twisted has not written to its socket?

    Relies on C{FileDescriptor._tempDataBuffer}: C{write} appends to that
    list and C{doWrite} moves it to the public C{dataBuffer}, so bytes
    waiting may be in either.  L{smx.net} writes to the socket directly
    only when nothing is waiting (or the order of bytes would change).
    """
    return bool(transport._tempDataBuffer or transport.dataBuffer)


def canSendTCPNow(transport: Any) -> bool:
    """
    May a write on a TCP transport go straight to its socket: plain TCP
    (no TLS), open, without a producer, with nothing buffered and its
    writing half open?

    One function for the whole test, public state and private: it runs
    for every write of SMTPS and SMTPC (L{smx.net}).  Relies on
    C{FileDescriptor._tempDataBuffer} and C{dataBuffer} (as
    L{hasBufferedWrites}) and on C{FileDescriptor._writeDisconnected}, set
    by Twisted once C{loseWriteConnection} took effect (C{write} then
    drops data, and so must the direct send).
    """
    return not (
        transport.TLS
        or transport.producer is not None
        or transport.disconnecting
        or not transport.connected
        or transport._tempDataBuffer
        or transport.dataBuffer
        or transport._writeDisconnected
    )


def canSendUnixNow(transport: Any) -> bool:
    """
    May bytes go straight to the socket of a Unix transport: open,
    without a producer, with nothing buffered, its writing half open and
    no file descriptor waiting to be sent?

    As L{canSendTCPNow}, and also relies on
    C{_SendmsgMixin._sendmsgQueue}: bytes that carry descriptors
    (C{sendFileDescriptor}) must be left to Twisted, which sends the
    descriptors with them.
    """
    return not (
        transport.producer is not None
        or transport.disconnecting
        or not transport.connected
        or transport._tempDataBuffer
        or transport.dataBuffer
        or transport._writeDisconnected
        or getattr(transport, "_sendmsgQueue", None)
    )


def writeDisconnecting(transport: Any) -> bool:
    """
    Is the writing half of C{transport} being shut down, or shut down?

    Relies on C{FileDescriptor._writeDisconnecting}, set by Twisted's
    C{loseWriteConnection} until the buffer is written, and on
    L{writeDisconnected}'s flag after it: a C{doWrite} of its own may
    then not be called.
    """
    return bool(getattr(transport, "_writeDisconnecting", False)) or bool(
        getattr(transport, "_writeDisconnected", False)
    )


def disconnectSelectable(
    reactor: Any, selectable: Any, why: Any, isRead: bool = False
) -> None:
    """
    Remove C{selectable} from C{reactor} and close it now, as the reactor
    does when a read or write finds the connection gone.

    Relies on C{PosixReactorBase._disconnectSelectable(selectable, why,
    isRead)}.  L{smx.net} closes a connection whose last reply is already
    written at the end of the reactor's turn, without first registering
    the socket for writing as C{loseConnection} does; this is the
    reactor's own closing path, so C{connectionLost} runs as usual.
    """
    reactor._disconnectSelectable(selectable, why, isRead)


class UNIXConnector(unix.Connector):
    """
    A L{unix.Connector} whose connection is an instance of C{clientClass}
    (as L{TCPConnector}).

    Relies on C{unix.Connector._makeTransport} and its C{checkPID}.

    @cvar clientClass: the L{unix.Client} subclass to create.
    """

    clientClass = unix.Client

    def _makeTransport(self) -> Any:
        return self.clientClass(self.address, self, self.reactor, self.checkPID)


class TCPConnector(tcp.Connector):
    """
    A L{tcp.Connector} whose connection is an instance of C{clientClass}
    (L{tcp.Port} has a public C{transport} attribute for the class of
    accepted connections; a connector's C{transport} is the connection
    itself).

    Relies on C{tcp.Connector._makeTransport}, the method
    C{BaseConnector.connect} calls to create the client transport each
    time it connects.

    @cvar clientClass: the L{tcp.Client} subclass to create.
    """

    clientClass = tcp.Client

    def _makeTransport(self) -> tcp.Client:
        return self.clientClass(
            self.host, self.port, self.bindAddress, self, self.reactor
        )


def dispatchWithoutLogContext(
    reactor: Any, beforePoll: Optional[Callable[[], bool]] = None
) -> bool:
    """
    Make the epoll reactor C{reactor} hand each ready descriptor to its
    selectable directly, without wrapping the call in
    C{log.callWithLogger}: that asks the selectable for its C{logPrefix}
    and runs the call in a new log context (C{{"system": prefix}}) for
    every I/O event, for the C{[system]} part of legacy C{log.msg} lines
    logged meanwhile (they show C{[-]} instead); smx's own records do not
    use it.  Exceptions of C{doRead} and C{doWrite} are still caught,
    logged and end the connection (C{_doReadOrWrite} does that); one
    escaping that is logged, as C{callWithLogger} does.

    Relies on C{EPollReactor._poller} and C{_selectables} (as
    C{EPollReactor.doPoll}, which this replaces as the reactor's
    C{doIteration}) and C{_PollLikeMixin._doReadOrWrite(selectable, fd,
    event)}.

    @param beforePoll: called before each wait for events (the work of
        L{smx.turn}); when it says it did something, the wait is no
        longer than the reactor's public C{timeout()} then says (that
        work may have set a timer).
    @return: whether it was done (C{False}: not the epoll reactor).
    """
    epoll: Any = getattr(select, "epoll", None)
    poller: Any = getattr(reactor, "_poller", None)
    if epoll is None or not isinstance(poller, epoll):
        return False
    selectables = reactor._selectables
    handle = reactor._doReadOrWrite
    poll = poller.poll
    EINTR = errno.EINTR

    def doPoll(timeout: Optional[float]) -> None:
        if beforePoll is not None and beforePoll():
            due = reactor.timeout()
            if due is not None and (timeout is None or due < timeout):
                timeout = due
        if timeout is None:
            timeout = -1
        try:
            events = poll(timeout, len(selectables))
        except OSError as e:
            if e.errno == EINTR:
                return
            raise
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is not None:
                try:
                    handle(selectable, fd, event)
                except BaseException:
                    # as callWithLogger: log it, go on with the others
                    log.err()

    reactor.doIteration = doPoll
    return True


def twistdLogObserver(options: Any) -> Any:
    """
    The log observer C{twistd} makes for its parsed C{options} (the file of
    C{--logfile}, standard output with C{-n}, ...), so that smx can put a
    filter in front of it.

    Relies on C{twisted.scripts.twistd._SomeApplicationRunner} (the
    platform's application runner class), its C{loggerFactory} and the
    logger's C{_getLogObserver}; twistd has no public way to get the
    observer it would install.
    """
    from twisted.scripts.twistd import _SomeApplicationRunner

    appLogger = _SomeApplicationRunner.loggerFactory(options)
    return appLogger._getLogObserver()


def fileOfObserver(observer: Any) -> Any:
    """
    The file a L{twisted.logger.FileLogObserver} writes to (standard
    output, or twistd's L{twisted.python.logfile.LogFile}).  Relies on its
    private C{_outFile}: the observer has no public way to give it.
    """
    return observer._outFile


def ampResponder(proto: Any, commandName: bytes) -> Any:
    """
    C{(commandClass, responderFunction)} for C{commandName} from the
    C{Command.responder} declarations of C{proto}'s class, or C{None}.

    Relies on C{CommandLocator._commandDispatch}, the table its metaclass
    builds and C{CommandLocator.locateResponder} reads (which returns the
    responder wrapped in AMP's callback chain: L{smx.split.dispatch}
    calls it directly).
    """
    return proto._commandDispatch.get(commandName)


def ampCommandReceived(proto: Any, box: Any) -> None:
    """
    AMP's own handling of a command box: find the responder, call it,
    send the answer or the error.

    Relies on C{BoxDispatcher._commandReceived(box)}, which
    C{ampBoxReceived} calls for every box with a C{_command} key;
    L{smx.split.dispatch.LeanDispatch} overrides it and hands AMP here
    what it does not answer itself.
    """
    amp.BoxDispatcher._commandReceived(proto, box)


def ampWrapResponder(proto: Any, aCallable: Any, command: Any) -> Any:
    """
    AMP's wrapping of C{aCallable} in C{command}'s argument parsing and
    answer making, as C{locateResponder} returns it.

    Relies on C{CommandLocator._wrapWithSerialization(aCallable, command)}.
    """
    return proto._wrapWithSerialization(aCallable, command)


def ampSendAnswer(proto: Any, box: Any) -> None:
    """
    Send an answer box as AMP does, ignoring a lost connection.

    Relies on C{BoxDispatcher._safeEmit(box)}.
    """
    proto._safeEmit(box)


#: Unique Maildir file names (C{<seconds>.M<microseconds>P<pid>Q<n>.<host>},
#: as bytes, from C{generate()}), made from a clock.  Relies on
#: C{twisted.mail.maildir._MaildirNameGenerator(clock)}; the public
#: C{twisted.mail.maildir} API only writes whole mailboxes.  Note that its
#: pid is the one of the process that imported Twisted's module.
MaildirNameGenerator = maildir._MaildirNameGenerator


def responseFromMessage(
    factory: Any, message: dns.Message, rCode: int = dns.OK
) -> dns.Message:
    """
    An empty response to the DNS query C{message}, with C{rCode}.

    Relies on C{DNSServerFactory._responseFromMessage}, which copies the
    query's id, question and flags into a response the way the factory
    answers its own queries.  Used by the misbehaving test DNS server.
    """
    result: dns.Message = factory._responseFromMessage(message=message, rCode=rCode)
    return result


class RecordResolverBase(common.ResolverBase):
    """
    A L{common.ResolverBase} whose subclasses answer every C{lookup*}
    method from one L{lookupRecords} method.

    Relies on C{ResolverBase._lookup(name, cls, type, timeout)}, the one
    method each C{lookup*} method and C{query} call.
    """

    def lookupRecords(
        self, name: bytes, cls: int, type: int, timeout: Optional[Any] = None
    ) -> defer.Deferred:
        """
        Look C{name} up; override this.

        @return: a L{Deferred} firing with C{(answers, authority,
            additional)}, lists of L{dns.RRHeader}.
        """
        return defer.fail(NotImplementedError("lookupRecords"))

    def _lookup(
        self, name: bytes, cls: int, type: int, timeout: Optional[Any] = None
    ) -> defer.Deferred:
        return self.lookupRecords(name, cls, type, timeout)

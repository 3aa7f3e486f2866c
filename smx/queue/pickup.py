# -*- test-case-name: smx.queue.test.test_pickup,smx.scripts.test.test_integration_sendmail -*-
"""
NAME
    smx.queue.pickup - submit the messages waiting in the maildrop directory

SYNOPSIS
    pickup { submission_address = "127.0.0.1:25"; maildrop_directory =
             "maildrop"; maildrop_group = smxdrop; interval = 5s; }

DESCRIPTION
    C{smx sendmail} keeps a message in the maildrop directory when SMTPS
    does not take it (smx does not run, or answers 4xx); see
    L{smx.queue.maildrop}.  The pickup service, a child service of the
    embedded tree started after the SMTPS listeners, looks into that
    directory when it starts and every C{interval}, and submits each
    message to the local SMTPS over loopback SMTP
    (L{smx.queue.submission}), as Postfix's pickup hands maildrop files
    to its cleanup: every check of SMTPS applies (access map, relaying,
    sizes, milters) and the message gets SMTPS's C{Received:} header.

    A file is removed only after SMTPS answered 250 to the final dot (or,
    for recipients refused with 5xx, after their bounce got its 250): a
    message accepted by C{smx sendmail} is never lost, and a crash between
    the 250 and the removal means at worst a second delivery.  After a
    4xx the recipients stay in the file (rewritten atomically without the
    accepted ones) and are tried again, with a delay doubling from
    C{interval} up to L{MAX_DELAY}.  A recipient refused with 5xx gets a
    bounce (RFC 3464, L{smx.queue.dsn}) to the sender, unless its
    C{NOTIFY} excludes failures or the sender is null (then it is logged
    and dropped, as QMGR drops a double bounce).

    The blocking submission runs in a thread of its own, one file at a
    time, so that the reactor goes on serving the SMTP session it opens.

CONFIGURATION PARAMETERS
    pickup { submission_address, maildrop_directory, maildrop_group,
    interval, log, log_level }; smtps max_message_size (the largest file
    read, with room for the envelope); hostname (EHLO name, bounces).

SECURITY
    The maildrop directory may be writable by a group of local users.  A
    file is read without following a symbolic link, must be a regular
    file with one link, and its envelope is checked field by field
    (L{smx.queue.maildrop.readDrop}); the owner of the file is logged as
    the submitting user.  A file that cannot be used is renamed to
    C{corrupt.NAME} and left for the postmaster.  Temporary files older
    than L{STALE_AGE} (a C{smx sendmail} killed while writing, which never
    exited with 0) are removed.

DIAGNOSTICS
    One record per file: C{pickup=NAME, uid=..., from=<...>, nrcpts=N,
    accepted=K, deferred=D, failed=F}.  C{sev=ERR} for a corrupt file, a
    directory that cannot be read or a bounce that is refused;
    C{sev=WARN} for a dropped bounce to the null sender.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from twisted.application import service
from twisted.python.failure import Failure
from twisted.internet import defer

from smx.log import Logger
from smx.queue.dsn import buildReport, is8bit
from smx.queue.maildrop import (
    DropEnvelope,
    DropRecipient,
    MaildropError,
    preparedDirectory,
    readDrop,
    removeDrop,
    rewriteDrop,
    staleTemporaryNames,
    waitingNames,
)
from smx.queue.pickupsettings import PickupSettings, submissionAddress
from smx.queue.submission import Outcome, submit

#: the longest delay between two tries of one file, in seconds
MAX_DELAY = 300.0

#: age in seconds after which a temporary file is removed
STALE_AGE = 86400.0

#: a bounce returns the whole message only up to this size, else its header
BOUNCE_LIMIT = 50000


@dataclass
class FileResult:
    """
    What became of one maildrop file.

    @ivar status: C{"done"} (removed), C{"kept"} (recipients left to try
        again), C{"unreachable"} (SMTPS did not answer: kept, and the rest
        of the directory waits too), C{"gone"} (removed by someone else) or
        C{"corrupt"} (renamed).
    @ivar records: log records: C{(severity, func, fields)}.
    """

    status: str
    records: List[Tuple[str, str, Dict[str, Any]]] = field(default_factory=list)


Submit = Callable[[Tuple[str, int], DropEnvelope, bytes, str], Outcome]


class MaildropReader:
    """
    The blocking work on one maildrop file: read it, submit it, bounce
    what was refused for good, rewrite or remove it.  It runs in a thread;
    it logs nothing itself but returns its records.
    """

    def __init__(self, settings: PickupSettings, submit: Submit = submit) -> None:
        self.settings = settings
        self.submit = submit

    def process(self, name: str) -> FileResult:
        """
        Handle the file C{name} (see the module docstring).
        """
        directory = self.settings.directory
        try:
            envelope, content, uid = readDrop(directory, name, self.settings.maxSize)
        except FileNotFoundError:
            return FileResult("gone")
        except MaildropError as e:
            return self._corrupt(name, str(e))
        result = FileResult("kept")
        fields = {
            "pickup": name,
            "uid": uid,
            "user": envelope.user or None,
            "from": "<%s>" % (envelope.sender,),
        }  # type: Dict[str, Any]
        original = envelope
        pending = envelope.pending()
        failedBefore = len(envelope.failed())
        accepted = deferred = 0
        unreachable = False
        if pending:
            outcome = self.submit(
                self.settings.submissionAddress,
                envelope,
                content,
                self.settings.hostname,
            )
            accepted = len(outcome.accepted)
            deferred = len(outcome.temporary)
            unreachable = not outcome.accepted and any(
                r.where in ("connect", "greeting") for r in outcome.temporary
            )
            failedNow = {r.address: r.reply for r in outcome.permanent}
            stillPending = {r.address for r in outcome.temporary}
            recipients = []
            for r in envelope.recipients:
                if r.failed is not None:
                    recipients.append(r)
                elif r.address in failedNow:
                    recipients.append(
                        DropRecipient(r.address, r.notify, failedNow[r.address])
                    )
                elif r.address in stillPending:
                    recipients.append(r)
            envelope = envelope.withRecipients(recipients)
            for t in outcome.temporary:
                result.records.append(
                    (
                        "INFO",
                        "",
                        dict(
                            pickup=name,
                            to="<%s>" % (t.address,),
                            stat="deferred",
                            reply=t.reply,
                        ),
                    )
                )
        fields.update(
            nrcpts=len(pending) + failedBefore,
            accepted=accepted,
            deferred=deferred,
            failed=len(envelope.failed()),
        )
        result.records.insert(0, ("INFO", "", fields))
        envelope = self._bounce(name, envelope, content, result)
        try:
            if not envelope.recipients:
                removeDrop(directory, name)
                result.status = "done"
            elif envelope != original:
                rewriteDrop(directory, name, envelope, content)
        except OSError as e:
            result.records.append(
                (
                    "ERR",
                    "MaildropReader.process",
                    dict(pickup=name, error=e.strerror or str(e)),
                )
            )
        if unreachable:
            result.status = "unreachable"
        return result

    def _corrupt(self, name: str, why: str) -> FileResult:
        directory = self.settings.directory
        result = FileResult("corrupt")
        fields = dict(pickup=name, error=why)  # type: Dict[str, Any]
        try:
            os.rename(
                os.path.join(directory, name),
                os.path.join(directory, "corrupt." + name),
            )
            fields["stat"] = "renamed to corrupt.%s" % (name,)
        except OSError as e:
            fields["stat"] = "cannot rename: %s" % (e.strerror,)
        result.records.append(("ERR", "MaildropReader.process", fields))
        return result

    def _bounce(
        self, name: str, envelope: DropEnvelope, content: bytes, result: FileResult
    ) -> DropEnvelope:
        """
        Send one bounce for the recipients refused for good.

        @return: the envelope without the recipients that need no bounce
            any more (sent, not wanted, or impossible).
        """
        failed = envelope.failed()
        if not failed:
            return envelope
        wanted = [r for r in failed if r.notify is None or "FAILURE" in r.notify]
        done = set(id(r) for r in failed)
        rest = [r for r in envelope.recipients if id(r) not in done]
        if not wanted:
            return envelope.withRecipients(rest)
        if not envelope.sender:
            result.records.append(
                (
                    "WARN",
                    "MaildropReader.bounce",
                    dict(
                        pickup=name,
                        stat="no bounce to <>",
                        to=",".join("<%s>" % (r.address,) for r in wanted),
                    ),
                )
            )
            return envelope.withRecipients(rest)
        report = buildReport(
            "failed",
            self.settings.hostname,
            {
                "id": name,
                "sender": envelope.sender,
                "received": envelope.created or None,
                "envid": envelope.envid,
            },
            [
                {
                    "address": r.address,
                    "code": _code(r.failed or ""),
                    "reply": r.failed or "",
                }
                for r in wanted
            ],
            content,
            headersOnly=envelope.ret == "HDRS" or len(content) > BOUNCE_LIMIT,
            now=time.time(),
        )
        bounce = DropEnvelope(
            "",
            (DropRecipient(envelope.sender),),
            bodyType="8BITMIME" if is8bit(report) else "7BIT",
        )
        outcome = self.submit(
            self.settings.submissionAddress, bounce, report, self.settings.hostname
        )
        if outcome.accepted:
            result.records.append(
                (
                    "INFO",
                    "",
                    dict(pickup=name, to="<%s>" % (envelope.sender,), stat="bounced"),
                )
            )
            return envelope.withRecipients(rest)
        if outcome.permanent:
            result.records.append(
                (
                    "ERR",
                    "MaildropReader.bounce",
                    dict(
                        pickup=name,
                        to="<%s>" % (envelope.sender,),
                        stat="bounce refused, dropped",
                        reply=outcome.permanent[0].reply,
                    ),
                )
            )
            return envelope.withRecipients(rest)
        return envelope


def _code(reply: str) -> int:
    head = reply[:3]
    return int(head) if head.isdigit() else 0


class PickupService(service.Service):
    """
    Look into the maildrop directory at start and every C{interval}, and
    hand each file to a L{MaildropReader} in a thread.

    @ivar settings: the L{PickupSettings}.
    """

    name = "pickup"  # type: ignore[assignment]

    def __init__(
        self,
        settings: PickupSettings,
        reactor: Any,
        log: Optional[Logger] = None,
        reader: Optional[MaildropReader] = None,
        runInThread: Optional[Callable[..., "defer.Deferred[Any]"]] = None,
    ) -> None:
        """
        @param reactor: provides C{IReactorTime} (and the thread pool
            calls when C{runInThread} is not given).
        @param reader: does the work on one file (default: a
            L{MaildropReader} that submits with L{smx.queue.submission}).
        @param runInThread: C{runInThread(f, *args)} returns a Deferred
            of C{f(*args)} run outside the reactor thread (default: a
            thread pool of one thread, started with the service).
        """
        self.settings = settings
        self.reactor = reactor
        self.log = log if log is not None else Logger("pickup")
        self.reader = reader if reader is not None else MaildropReader(settings)
        self._runInThread = runInThread
        self._pool = None  # type: Any
        self._call = None  # type: Any
        self._scanning = None  # type: Optional[defer.Deferred[None]]
        #: name -> (next try, delay) of files that were kept
        self._delays = {}  # type: Dict[str, Tuple[float, float]]

    def startService(self) -> None:
        service.Service.startService(self)
        try:
            mode, warnings = preparedDirectory(
                self.settings.directory, self.settings.maildropGroup
            )
            for warning in warnings:
                self.log.warn("PickupService.startService", error=warning)
        except (OSError, KeyError) as e:
            self.log.error(
                "PickupService.startService",
                directory=self.settings.directory,
                error=getattr(e, "strerror", None) or "no group %s" % (e,),
            )
        if self._runInThread is None:
            from twisted.python.threadpool import ThreadPool

            self._pool = ThreadPool(0, 1, "smx-pickup")
            self._pool.start()
        self.log.notice(
            pickup="start",
            directory=self.settings.directory,
            submit="%s:%d" % self.settings.submissionAddress,
        )
        self._call = self.reactor.callLater(0, self.scan)

    def stopService(self) -> "defer.Deferred[None]":
        service.Service.stopService(self)
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        scanning = self._scanning
        d = defer.succeed(None) if scanning is None else defer.Deferred()
        if scanning is not None:
            scanning.addBoth(lambda _: d.callback(None))

        def stopPool(_: Any) -> None:
            pool, self._pool = self._pool, None
            if pool is not None:
                pool.stop()

        d.addCallback(stopPool)
        return d

    def _inThread(self, f: Callable[..., Any], *args: Any) -> "defer.Deferred[Any]":
        if self._runInThread is not None:
            return self._runInThread(f, *args)
        from twisted.internet import threads

        return threads.deferToThreadPool(self.reactor, self._pool, f, *args)

    def scan(self) -> "defer.Deferred[None]":
        """
        Handle every waiting file whose time has come, one at a time, then
        look again after C{interval}.

        @return: a Deferred that fires when this round is over.
        """
        self._call = None
        if self._scanning is not None:
            return self._scanning
        d = defer.ensureDeferred(self._scan())
        self._scanning = d

        def done(result: Any) -> None:
            self._scanning = None
            if self.running:
                self._call = self.reactor.callLater(self.settings.interval, self.scan)

        d.addErrback(lambda f: self.log.failure("PickupService.scan", f))
        d.addCallback(done)
        return d

    async def _scan(self) -> None:
        directory = self.settings.directory
        now = self.reactor.seconds()
        try:
            names = waitingNames(directory)
            stale = staleTemporaryNames(directory, time.time(), STALE_AGE)
        except OSError as e:
            self.log.error(
                "PickupService.scan", directory=directory, error=e.strerror or str(e)
            )
            return
        for n in stale:
            try:
                os.unlink(os.path.join(directory, n))
                self.log.warn("PickupService.scan", removed=n, stat="stale temporary")
            except OSError:
                continue
        self._delays = {n: v for n, v in self._delays.items() if n in names}
        for name in names:
            if not self.running:
                return
            nextTry, delay = self._delays.get(name, (0.0, 0.0))
            if nextTry > now:
                continue
            try:
                result = await self._inThread(self.reader.process, name)
            except Exception:
                # a fault of smx with this one file: the file stays, is
                # tried again later like a 4xx, and the others still go
                self.log.failure("PickupService.scan", Failure(), pickup=name)
                delay = min(max(delay * 2, self.settings.interval), MAX_DELAY)
                self._delays[name] = (self.reactor.seconds() + delay, delay)
                continue
            for severity, func, fields in result.records:
                if severity == "INFO":
                    self.log.info(**fields)
                elif severity == "WARN":
                    self.log.warn(func, **fields)
                else:
                    self.log.error(func, **fields)
            if result.status in ("kept", "unreachable"):
                delay = min(max(delay * 2, self.settings.interval), MAX_DELAY)
                self._delays[name] = (self.reactor.seconds() + delay, delay)
            else:
                self._delays.pop(name, None)
            if result.status == "unreachable":
                return


def pickupService(cfg: Any, reactor: Any) -> PickupService:
    """
    The pickup service of a configuration (for L{smx.components}).

    @raise ComponentError: if C{maildrop_group} names no group.
    """
    import grp

    from smx.components import ComponentError
    from smx.log import loggerFromConfiguration

    settings = PickupSettings.fromConfiguration(cfg)
    if settings.maildropGroup is not None:
        try:
            grp.getgrnam(settings.maildropGroup)
        except KeyError:
            raise ComponentError(
                str(
                    cfg.section("pickup").error(
                        "maildrop_group: there is no group %r"
                        % (settings.maildropGroup,),
                        "maildrop_group",
                    )
                )
            )
    return PickupService(
        settings,
        reactor,
        log=loggerFromConfiguration("pickup", cfg.section("pickup")),
    )


__all__ = [
    "PickupService",
    "PickupSettings",
    "MaildropReader",
    "FileResult",
    "pickupService",
    "submissionAddress",
]

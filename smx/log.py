# -*- test-case-name: smx.test.test_log -*-
"""
NAME
    smx.log - the log records of every smx component

SYNOPSIS
    from smx.log import Logger
    log = Logger("smtps")
    log.info(ss_sess=sessionId, client_ipv4=address)
    log.error("openIBDB", file=path, error=str(e))

DESCRIPTION
    A record is a sequence of C{name=value} fields separated by C{", "}
    (seed App. C.2).  Every value is encoded so that a record is one line
    that C{awk -F,} can split: non-printable bytes (including CR, LF, NUL
    and every byte outside printable ASCII), commas and percent signs are
    written as C{%XX}.  Fields whose value is C{None} are left out.

    Records of severity warning and above start with C{sev=WARN},
    C{sev=ERR}, C{sev=CRIT} or C{sev=ALERT} and name the function that
    found the problem (C{func=}), so that

        egrep 'sev=(ALERT|CRIT|ERR|FAIL)' LOGFILE

    finds every problem (seed §6.9).

    Each record has a level; it is written only if its level is at most
    the component's C{log_level} (seed §5.5: 9 for normal operation, 12 to
    14 while testing).  Normal mail-flow records have level 8, details 11
    and more.

CONFIGURATION PARAMETERS
    log { facility; ident; options; file }   seed §5.5, per component
    log_level                                 per component

    With C{facility} set, records go to syslog (the local C{/dev/log}
    socket) with C{ident} (default: the component name).  With C{file} set
    (an smx extension), records are appended to that file.  On SIGUSR2
    (seed §6.8.1) a file that was copied away (C{cp qmgr.log qmgr.log.0})
    is rewound to empty, and a file that was moved away
    (C{mv qmgr.log qmgr.log.0}) is replaced by a new one.  Otherwise records go to Twisted's
    log, which C{twistd -n} writes to standard output.

    While the metrics endpoint runs, every record (whatever its level)
    is shown to L{Logger.observer} first, which counts it (L{smx.metrics}).

DIAGNOSTICS
    A destination that cannot be opened is reported on Twisted's log and
    records fall back to it; logging never raises into its caller.
"""

from __future__ import annotations

import atexit
import os
import socket
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional

from twisted.logger import Logger as _TwistedLogger
from twisted.python import threadable

from smx.turn import atEndOfTurn
from smx.unixsocket import socketName

#: severities and their syslog priority
SEVERITIES = {
    "ALERT": 1,
    "CRIT": 2,
    "ERR": 3,
    "WARN": 4,
    "NOTICE": 5,
    "INFO": 6,
    "DEBUG": 7,
}

#: syslog facilities by name (syslog(3))
FACILITIES = {
    "kern": 0,
    "user": 1,
    "mail": 2,
    "daemon": 3,
    "auth": 4,
    "syslog": 5,
    "lpr": 6,
    "news": 7,
    "uucp": 8,
    "cron": 9,
    "authpriv": 10,
    "ftp": 11,
    "local0": 16,
    "local1": 17,
    "local2": 18,
    "local3": 19,
    "local4": 20,
    "local5": 21,
    "local6": 22,
    "local7": 23,
}

#: the default log level (seed §5.5: 9 is recommended for normal operation)
DEFAULT_LEVEL = 9

# bytes that are written as themselves: printable ASCII except "," and "%"
_PLAIN = frozenset(range(0x20, 0x7F)) - {ord(","), ord("%")}
_ENCODED = [
    chr(b) if b in _PLAIN else "%%%02X" % (b,) for b in range(256)
]  # type: List[str]


def encodeValue(value: Any) -> str:
    """
    Encode one field value as seed App. C.2 says: non-printable characters,
    commas and percent signs become C{%XX}.

    @param value: a C{str}, C{bytes}, number or anything with a C{str()}.
    @return: the encoded text.
    """
    if isinstance(value, bytes):
        data = value
    else:
        if not isinstance(value, str):
            value = str(value)
        if value.isprintable() and value.isascii():
            if "," not in value and "%" not in value:
                return value
        data = value.encode("utf-8", "surrogateescape")
    return "".join([_ENCODED[b] for b in data])


def decodeValue(text: str) -> str:
    """
    Undo L{encodeValue} (used by C{smx recover-from-log}).
    """
    out = bytearray()
    i = 0
    raw = text.encode("latin-1", "replace")
    while i < len(raw):
        if raw[i] == 0x25 and i + 3 <= len(raw):
            try:
                out.append(int(raw[i + 1 : i + 3], 16))
                i += 3
                continue
            except ValueError:
                pass
        out.append(raw[i])
        i += 1
    return out.decode("utf-8", "replace")


def formatRecord(fields: Dict[str, Any]) -> str:
    """
    Format one record: C{name=value} pairs joined by C{", "}; C{None}
    values are left out.
    """
    parts = []
    for name, value in fields.items():
        if value is None:
            continue
        t = type(value)
        if t is int:
            parts.append("%s=%d" % (name, value))
        elif (
            t is str
            and value.isprintable()
            and value.isascii()
            and "," not in value
            and "%" not in value
        ):
            # most values need no encoding: L{encodeValue}'s first test,
            # without the call
            parts.append(name + "=" + value)
        else:
            parts.append(name + "=" + encodeValue(value))
    return ", ".join(parts)


def parseRecord(line: str) -> Dict[str, str]:
    """
    Split a record into its fields (values decoded).  Text before the first
    field (a time stamp or syslog prefix) is ignored.
    """
    fields = {}
    for part in line.rstrip("\r\n").split(", "):
        name, sep, value = part.partition("=")
        if not sep:
            continue
        name = name.rsplit(" ", 1)[-1]
        fields[name] = decodeValue(value)
    return fields


class _TwistedSink:
    """
    Records to Twisted's global log (standard output under C{twistd -n}),
    or straight to twistd's text log while L{writeTwistedRecordsTo} has
    named it (the same line, without Twisted's event machinery).
    """

    def __init__(self, component: str) -> None:
        self.namespace = "smx." + component
        self._log = _TwistedLogger(namespace=self.namespace)

    def write(self, severity: str, line: str) -> None:
        direct = _direct
        if SEVERITIES[severity] <= SEVERITIES["ERR"]:
            if direct is None:
                self._log.error("{line}", line=line)
            else:
                direct.record(self.namespace, "error", line)
        elif severity == "WARN":
            if direct is None:
                self._log.warn("{line}", line=line)
            else:
                direct.record(self.namespace, "warn", line)
        elif direct is None:
            self._log.info("{line}", line=line)
        else:
            direct.record(self.namespace, "info", line)

    def reopen(self) -> None:
        pass

    def close(self) -> None:
        pass


#: where L{_TwistedSink} writes its records while twistd's text log goes
#: through L{smx.logobserver.TurnLog}: that observer; C{None}: through
#: Twisted's L{Logger<twisted.logger.Logger>}
_direct = None  # type: Any


def writeTwistedRecordsTo(target: Any) -> None:
    """
    Send the records meant for Twisted's log straight to C{target} (an
    object with C{record(namespace, levelName, line)} and C{flush()}), or
    through Twisted's log again with C{None}.
    """
    global _direct
    previous, _direct = _direct, target
    if previous is not None and previous is not target:
        previous.flush()


class TurnBuffer:
    """
    Text for one file, collected in the reactor thread of a running
    reactor and written with one C{write} at the end of the reactor's
    turn (a dozen records per message would otherwise be a dozen system
    calls); anywhere else written at once.
    """

    def __init__(self, file: Any) -> None:
        self._file = file
        self._pending = []  # type: List[str]

    def add(self, text: str) -> None:
        self._pending.append(text)
        if len(self._pending) > 1:
            return
        reactor = _runningReactor()
        if reactor is None:
            self.flush()
        else:
            atEndOfTurn(reactor, self.flush)

    def flush(self) -> None:
        """
        Write the collected text.
        """
        if self._pending:
            text = "".join(self._pending)
            del self._pending[:]
            try:
                self._file.write(text)
                self._file.flush()
            except (OSError, ValueError):
                self.failed()

    def failed(self) -> None:
        """A write failed (the text is dropped)."""


class _LogFile(TurnBuffer):
    """
    One log file shared by the L{FileSink}s that name it, so that their
    records stay in order (collected as L{TurnBuffer} says).
    """

    def __init__(self, path: str) -> None:
        TurnBuffer.__init__(self, open(path, "a", encoding="ascii", errors="replace"))
        self.path = path
        self.users = 0
        self._pid = os.getpid()
        self._second = -1
        self._stamp = ""

    def write(self, ident: str, line: str) -> None:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now))
            self._pid = os.getpid()
        self.add("%s %s[%d]: %s\n" % (self._stamp, ident, self._pid, line))

    def forgetStamp(self) -> None:
        """Make the next record take the time and the pid again."""
        self._second = -1

    def failed(self) -> None:
        _TwistedLogger(namespace="smx.log").failure(
            "smx.log: cannot write to {path}", path=self.path
        )

    def reopen(self) -> None:
        """
        Rotation (SIGUSR2, seed §6.8.1).  If the path still names the file
        that is open, it was copied away (C{cp qmgr.log qmgr.log.0}): it is
        rewound, i.e. truncated, so that it starts again from empty.  If the
        path names another file or none (C{mv qmgr.log qmgr.log.0}), that
        file is opened or created.  Either way records are appended
        (C{O_APPEND}), so a truncated file never gets a gap of NULs.
        """
        self.flush()
        old = self._file
        try:
            current = os.stat(self.path)
        except OSError:
            current = None
        opened = os.fstat(old.fileno())
        try:
            new = open(self.path, "a", encoding="ascii", errors="replace")
        except OSError:
            _TwistedLogger(namespace="smx.log").failure(
                "smx.log: cannot reopen {path}", path=self.path
            )
            return
        if current is not None and os.path.samestat(current, opened):
            try:
                os.ftruncate(new.fileno(), 0)
            except OSError:
                _TwistedLogger(namespace="smx.log").failure(
                    "smx.log: cannot rewind {path}", path=self.path
                )
        self._file = new
        old.close()

    def close(self) -> None:
        self.flush()
        self._file.close()


def _runningReactor() -> Any:
    """
    The reactor, when it is running and this is its thread; else C{None}.
    (Called once per reactor turn that logs: it neither imports nor
    installs a reactor, and does not go through the deprecation proxy of
    C{twisted.internet}.)
    """
    if threadable.ioThread != threading.get_ident():
        return None
    reactor = sys.modules.get("twisted.internet.reactor")
    if reactor is None or not getattr(reactor, "running", False):
        return None
    return reactor


#: open log files by absolute path
_files = {}  # type: Dict[str, _LogFile]


def flushAll() -> None:
    """
    Write every record still collected (at exit, and before a fork).
    """
    for shared in list(_files.values()) + [_direct]:
        if shared is None:
            continue
        try:
            shared.flush()
        except (OSError, ValueError):
            pass


def _forked() -> None:
    # a child of twistd's daemonizing fork stamps its own pid
    for shared in _files.values():
        shared.forgetStamp()


atexit.register(flushAll)
os.register_at_fork(before=flushAll, after_in_child=_forked)


class FileSink:
    """
    Records appended to a file, one per line with a time stamp; reopened
    by L{reopen} (SIGUSR2, seed §6.8.1).  Sinks of one file share it (see
    L{_LogFile}): a record written in the reactor thread reaches the file
    at the end of the reactor's turn, or at L{flush}.

    @ivar path: the log file name.
    """

    def __init__(self, path: str, ident: str) -> None:
        self.path = path
        self.ident = ident
        key = os.path.abspath(path)
        shared = _files.get(key)
        if shared is None:
            shared = _files[key] = _LogFile(path)
        shared.users += 1
        self._shared = shared  # type: Optional[_LogFile]

    def write(self, severity: str, line: str) -> None:
        if self._shared is not None:
            self._shared.write(self.ident, line)

    def flush(self) -> None:
        """Write what was collected."""
        if self._shared is not None:
            self._shared.flush()

    def reopen(self) -> None:
        if self._shared is not None:
            self._shared.reopen()

    def close(self) -> None:
        shared, self._shared = self._shared, None
        if shared is None:
            return
        shared.users -= 1
        if shared.users == 0:
            shared.close()
            _files.pop(os.path.abspath(self.path), None)
        else:
            shared.flush()


class SyslogSink:
    """
    Records sent to the local syslog daemon over its Unix datagram socket,
    with this component's own ident and facility (so that several
    components in one process keep their names, which syslog(3) cannot).
    """

    def __init__(
        self,
        ident: str,
        facility: str = "mail",
        options: frozenset = frozenset(),
        path: str = "/dev/log",
        fallback: Optional[Any] = None,
    ) -> None:
        self.ident = ident
        self.facility = FACILITIES.get(facility.lower(), FACILITIES["mail"])
        self.withPid = "pid" in options
        self.path = path
        self._fallback = fallback
        self._socket = None  # type: Optional[socket.socket]
        self._connect()

    def _connect(self) -> None:
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            s.connect(socketName(self.path))
        except OSError:
            self._socket = None
        else:
            self._socket = s

    def write(self, severity: str, line: str) -> None:
        prio = self.facility * 8 + SEVERITIES[severity]
        tag = self.ident + ("[%d]" % (os.getpid(),) if self.withPid else "")
        message = ("<%d>%s: %s" % (prio, tag, line)).encode("ascii", "replace")
        if self._socket is None:
            self._connect()
        if self._socket is not None:
            try:
                self._socket.send(message)
                return
            except OSError:
                self._socket = None
        if self._fallback is not None:
            self._fallback.write(severity, line)

    def reopen(self) -> None:
        if self._socket is not None:
            self._socket.close()
        self._connect()

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


class Logger:
    """
    The log of one component.

    @ivar component: the component name (C{smtps}, C{qmgr}, ...).
    @ivar level: records with a higher level are not written.
    """

    #: called as C{observer(logger, fields)} with every record, whatever
    #: its level (L{smx.metrics} counts them); C{None}: nobody listens
    observer = None  # type: Optional[Callable[[Logger, Dict[str, Any]], None]]

    #: the debug levels of QMGR's categories (L{smx.queue.debug.DebugLogger}
    #: sets them); C{None}: no debug records, which a caller can test
    #: before it builds one
    debugLevels = None  # type: Any

    def __init__(self, component: str, level: int = DEFAULT_LEVEL, sink=None):
        self.component = component
        self.level = level
        self.sink = sink if sink is not None else _TwistedSink(component)

    def enabled(self, level: int) -> bool:
        """
        Would a record of C{level} be written?  Lets a caller skip building
        an expensive record.
        """
        return level <= self.level

    def emit(self, severity: str, level: int, fields: Dict[str, Any]) -> None:
        """
        Write one record unless its C{level} exceeds L{level}; show it to
        the L{observer} in any case.
        """
        observer = Logger.observer
        if observer is not None:
            try:
                observer(self, fields)
            except Exception:
                _TwistedLogger(namespace="smx.log").failure(
                    "smx.log: the observer failed on a record of {component}",
                    component=self.component,
                )
        if level > self.level:
            return
        try:
            self.sink.write(severity, formatRecord(fields))
        except Exception:
            _TwistedLogger(namespace="smx.log").failure(
                "smx.log: cannot write a record for {component}",
                component=self.component,
            )

    def info(self, level: int = 8, **fields: Any) -> None:
        """A record of the normal flow of mail (level 8 by default)."""
        self.emit("INFO", level, fields)

    def notice(self, level: int = 6, **fields: Any) -> None:
        """A record worth noticing (start, stop, reload)."""
        self.emit("NOTICE", level, fields)

    def debug(self, level: int = 12, **fields: Any) -> None:
        """A detail for testing (level 12 by default)."""
        self.emit("DEBUG", level, fields)

    def _problem(self, severity: str, func: str, fields: Dict[str, Any]) -> None:
        record = {"sev": severity, "func": func}  # type: Dict[str, Any]
        record.update(fields)
        self.emit(severity, 0, record)

    def warn(self, func: str, **fields: Any) -> None:
        """Something is wrong but nothing failed (C{sev=WARN})."""
        self._problem("WARN", func, fields)

    def error(self, func: str, **fields: Any) -> None:
        """An operation failed (C{sev=ERR})."""
        self._problem("ERR", func, fields)

    def critical(self, func: str, **fields: Any) -> None:
        """A component cannot do its job (C{sev=CRIT})."""
        self._problem("CRIT", func, fields)

    def alert(self, func: str, **fields: Any) -> None:
        """Mail may be lost unless someone acts (C{sev=ALERT})."""
        self._problem("ALERT", func, fields)

    def failure(self, func: str, failure: Any, **fields: Any) -> None:
        """
        An unexpected exception (a L{twisted.python.failure.Failure}):
        logged as C{sev=ERR} with its type and value, and the traceback
        to Twisted's log for the developer.
        """
        fields["error"] = "%s: %s" % (
            getattr(failure.type, "__name__", failure.type),
            failure.value,
        )
        self._problem("ERR", func, fields)
        _TwistedLogger(namespace="smx." + self.component).failure(
            "unexpected failure in {func}", failure=failure, func=func
        )


class ChainedObserver:
    """
    C{observe(logger, fields)} put in front of L{Logger.observer} while
    attached: the observer that was there still sees every record after
    it (the metrics and the TLS reports both watch the records).
    """

    def __init__(self, observe: Callable[[Logger, Dict[str, Any]], None]) -> None:
        self.observe = observe
        self._previous = None  # type: Any

    def __call__(self, logger: Logger, fields: Dict[str, Any]) -> None:
        try:
            self.observe(logger, fields)
        finally:
            previous = self._previous
            if previous is not None:
                previous(logger, fields)

    def attach(self) -> None:
        self._previous = Logger.observer
        Logger.observer = self

    def detach(self) -> None:
        if Logger.observer is self:
            Logger.observer = self._previous
        self._previous = None


class MemorySink:
    """
    A sink that keeps records in a list: for tests of any component.

    @ivar records: C{(severity, line)} tuples.
    """

    def __init__(self) -> None:
        self.records = []  # type: List[tuple]

    def write(self, severity: str, line: str) -> None:
        self.records.append((severity, line))

    def lines(self) -> List[str]:
        return [line for _, line in self.records]

    def reopen(self) -> None:
        pass

    def close(self) -> None:
        pass


_sinks = []  # type: List[Any]


def loggerFromConfiguration(component: str, section: Any) -> Logger:
    """
    Build the L{Logger} of a component from its configuration section
    (C{log { ... }} and C{log_level}, seed §5.5).

    @param section: an L{smx.config} section, or C{None} for the defaults.
    """
    level = DEFAULT_LEVEL
    sink = _TwistedSink(component)  # type: Any
    if section is not None:
        level = int(section["log_level"])
        logSection = section.section("log")
        ident = logSection["ident"] or component
        path = _get(logSection, "file")
        try:
            if path:
                sink = FileSink(path, ident)
            elif logSection.isSet("facility"):
                sink = SyslogSink(
                    ident,
                    logSection["facility"],
                    logSection["options"] or frozenset(),
                    fallback=sink,
                )
        except OSError as e:
            Logger(component, sink=sink).error(
                "loggerFromConfiguration", file=path, error=e.strerror
            )
    _sinks.append(sink)
    return Logger(component, level, sink)


def _get(section: Any, name: str) -> Any:
    try:
        return section[name]
    except KeyError:
        return None


def reopenAll() -> None:
    """
    Reopen every log file and syslog connection (SIGUSR2, seed §6.8.1).
    """
    for sink in _sinks:
        sink.reopen()


def installReopenSignal(installer: Callable[[int, Any], Any]) -> None:
    """
    Make SIGUSR2 reopen the logs.

    @param installer: C{signal.signal} or a replacement in tests.
    """
    import signal

    installer(signal.SIGUSR2, lambda signum, frame: reopenAll())

# -*- test-case-name: smx.tlspolicy.test.test_tlsrpt -*-
"""
NAME
    smx.tlspolicy.tlsrpt - SMTP TLS reporting (RFC 8460)

SYNOPSIS
    smtpc { tlsrpt = yes; tlsrpt_directory = tlsrpt;
            tlsrpt_organization = "Example Inc."; tlsrpt_contact =
            "postmaster@example.com"; }

    smx tlsrpt [-f smx.conf] [-q DIR] [--day YYYY-MM-DD] [--domain D]

DESCRIPTION
    L{SessionRecorder} watches the log records of SMTPC (it is an
    observer of L{smx.log.Logger}, like the metrics of L{smx.metrics}):
    every C{tls_policy_ok} and C{tls_policy_failed} record of an
    MTA-STS or DANE policy (C{policy=mta-sts}, C{policy=dane}, see
    L{smx.tlspolicy.policy}) is one session counted for its policy
    domain.  Each is appended as one JSON line to the file of its UTC
    day in C{tlsrpt_directory} (C{2026-12-01.jsonl}): one C{write(2)}
    on a file opened with C{O_APPEND}, no fsync, so that C{kill -9}
    loses nothing written and a crash of the machine at most the last
    records; a line cut short is skipped when the file is read.  For an
    MTA-STS policy domain the policy as cached (L{smx.tlspolicy.mtasts})
    is written once a day beside the counts, so that the report can
    show it.  Files older than L{KEEP_DAYS} days are removed.

    L{dailyReports} reads a day's file and builds, per policy domain,
    the report of RFC 8460 section 4: C{organization-name},
    C{date-range}, C{contact-info}, C{report-id}, and per policy
    (C{policy-type} C{sts} or C{tlsa}, C{policy-string},
    C{policy-domain}, C{mx-host}) the C{summary} counts and the
    C{failure-details} (C{result-type}, C{sending-mta-ip},
    C{receiving-mx-hostname}, C{receiving-ip}, C{failed-session-count},
    C{failure-reason-code}).  C{smx tlsrpt} prints them
    (L{smx.scripts.tlsrpt}); sending them to the C{rua} of a domain's
    C{_smtp._tls} record is left to the administrator.

CONFIGURATION PARAMETERS
    smtpc { tlsrpt; tlsrpt_directory; tlsrpt_organization;
    tlsrpt_contact; mta_sts_cache }   and the global C{hostname}

DIAGNOSTICS
    A day file that cannot be written is reported once per day
    (C{sev=ERR, func=SessionRecorder}); counting goes on in the next
    day's file.
"""

from __future__ import annotations

import calendar
import dataclasses
import json
import os
import re
import time
from typing import Any, Callable, ClassVar, Dict, Iterator, List, Mapping, Optional
from typing import Set, Tuple

from twisted.application import service

from smx.log import Logger
from smx.tlspolicy.policy import FAILED_RECORD, OK_RECORD

#: days a day file is kept
KEEP_DAYS = 32

#: C{policy=} of a record -> RFC 8460 C{policy-type}
POLICY_TYPES = {"mta-sts": "sts", "dane": "tlsa"}

_DAY = re.compile(r"(\d{4})-(\d{2})-(\d{2})\Z")
_SUFFIX = ".jsonl"


def dayOf(seconds: float) -> str:
    """The UTC day (C{YYYY-MM-DD}) of a time."""
    return time.strftime("%Y-%m-%d", time.gmtime(seconds))


def checkDay(text: str) -> str:
    """
    @return: C{text} if it is a day C{YYYY-MM-DD}.
    @raise ValueError: if it is not.
    """
    match = _DAY.match(text)
    if match is None:
        raise ValueError("%r is not a day (YYYY-MM-DD)" % (text,))
    try:
        time.strptime(text, "%Y-%m-%d")
    except ValueError:
        raise ValueError("%r is not a day (YYYY-MM-DD)" % (text,))
    return text


@dataclasses.dataclass(frozen=True)
class ReportSettings:
    """
    The TLS reporting options of an C{smtpc} section.

    @ivar enabled: C{tlsrpt}.
    @ivar directory: C{tlsrpt_directory}, absolute.
    @ivar organization: C{tlsrpt_organization} (empty: L{hostname}).
    @ivar contact: C{tlsrpt_contact} (empty: C{postmaster@hostname}).
    @ivar hostname: the global C{hostname} (the C{report-id} domain).
    @ivar stsCache: C{mta_sts_cache} (the MTA-STS policies to show), or
        empty with C{mta_sts = no}.
    """

    enabled: bool
    directory: str
    organization: str
    contact: str
    hostname: str
    stsCache: str

    OPTIONS: ClassVar[Mapping[str, str]] = {
        "enabled": "tlsrpt",
        "directory": "tlsrpt_directory",
        "organization": "tlsrpt_organization",
        "contact": "tlsrpt_contact",
        "hostname": "/hostname",
    }
    DERIVED: ClassVar[Mapping[str, Tuple[str, ...]]] = {
        "stsCache": ("mta_sts", "mta_sts_cache"),
    }

    @classmethod
    def fromSection(cls, section: Any) -> "ReportSettings":
        """
        @param section: an C{smtpc} L{smx.config.Section}.
        """
        from smx.config.settings import optionValues

        values = optionValues(cls, section)
        if not values["hostname"]:
            import socket

            values["hostname"] = socket.getfqdn()
        values["stsCache"] = section["mta_sts_cache"] if section["mta_sts"] else ""
        return cls(**values)

    @property
    def organizationName(self) -> str:
        """C{organization-name} of a report."""
        return self.organization or self.hostname

    @property
    def contactInfo(self) -> str:
        """C{contact-info} of a report."""
        return self.contact or "postmaster@%s" % (self.hostname,)


# -- counting ---------------------------------------------------------------


class SessionRecorder:
    """
    Appends the policy sessions of the records it observes to the day
    files.

    @ivar directory: where the day files are.
    """

    def __init__(
        self,
        directory: str,
        clock: Any,
        log: Logger,
        stsPolicy: Optional[Callable[[str], Optional[Tuple[List[str], List[str]]]]],
    ) -> None:
        """
        @param clock: an C{IReactorTime} (the day of a record).
        @param stsPolicy: domain -> C{(policy lines, mx patterns)} of its
            MTA-STS policy, or C{None} (L{stsPolicyReader}).
        """
        self.directory = directory
        self.clock = clock
        self.log = log
        self.stsPolicy = stsPolicy
        self._day = ""
        self._fd = -1
        self._failedDay = ""
        self._written = set()  # type: Set[Tuple[str, str]]

    def observe(self, logger: Any, fields: Dict[str, Any]) -> None:
        """
        Count one record if it is a session of an MTA-STS or DANE policy
        (an L{smx.log.Logger.observer}).
        """
        func = fields.get("func")
        if func != OK_RECORD and func != FAILED_RECORD:
            return
        kind = POLICY_TYPES.get(str(fields.get("policy")))
        if kind is None:
            return
        domain = str(fields.get("policy_domain") or fields.get("domain") or "")
        domain = domain.lower().rstrip(".")
        if not domain:
            return
        now = self.clock.seconds()
        entry = {"t": int(now), "d": domain, "p": kind}  # type: Dict[str, Any]
        if func == FAILED_RECORD:
            entry["r"] = str(fields.get("result_type") or "validation-failure")
            for key, name in (
                ("mx", "mx"),
                ("ip", "ip"),
                ("local", "local_ip"),
                ("why", "reason"),
            ):
                if fields.get(name):
                    entry[key] = str(fields[name])
        elif fields.get("mx"):
            entry["mx"] = str(fields["mx"])
        if fields.get("testing") in (1, "1", True):
            entry["testing"] = 1
        lines = []
        day = dayOf(now)
        if kind == "sts" and (day, domain) not in self._written:
            policy = self.stsPolicy(domain) if self.stsPolicy is not None else None
            if policy is not None:
                lines.append(
                    {"policy": domain, "p": "sts", "s": policy[0], "mx": policy[1]}
                )
                self._written.add((day, domain))
        lines.append(entry)
        self._append(day, lines)

    def _append(self, day: str, entries: List[Dict[str, Any]]) -> None:
        if day != self._day:
            self._open(day)
        if self._fd < 0:
            return
        data = "".join(
            json.dumps(e, separators=(",", ":"), sort_keys=True) + "\n" for e in entries
        ).encode("utf-8")
        try:
            os.write(self._fd, data)
        except OSError as e:
            self._failed(day, e)

    def _open(self, day: str) -> None:
        self.close()
        self._day = day
        self._written = {k for k in self._written if k[0] == day}
        path = os.path.join(self.directory, day + _SUFFIX)
        try:
            os.makedirs(self.directory, exist_ok=True)
            self._fd = os.open(
                path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644
            )
        except OSError as e:
            self._failed(day, e)
            return
        self._removeOld(day)

    def _failed(self, day: str, e: OSError) -> None:
        if self._failedDay != day:
            self._failedDay = day
            self.log.error(
                "SessionRecorder",
                tlsrpt_directory=self.directory,
                error=e.strerror or str(e),
            )

    def _removeOld(self, day: str) -> None:
        limit = calendar.timegm(time.strptime(day, "%Y-%m-%d")) - KEEP_DAYS * 86400
        for name, path in dayFiles(self.directory):
            if calendar.timegm(time.strptime(name, "%Y-%m-%d")) < limit:
                try:
                    os.unlink(path)
                except OSError:
                    pass

    def close(self) -> None:
        """Close the day file."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            self._day = ""


def dayFiles(directory: str) -> Iterator[Tuple[str, str]]:
    """
    @return: C{(day, path)} of the day files in C{directory}.
    """
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in sorted(names):
        if name.endswith(_SUFFIX) and _DAY.match(name[: -len(_SUFFIX)]):
            yield name[: -len(_SUFFIX)], os.path.join(directory, name)


def stsPolicyReader(
    path: str,
) -> Callable[[str], Optional[Tuple[List[str], List[str]]]]:
    """
    Read the policies of the MTA-STS cache file C{path} (read again when
    it changes).

    @return: domain -> C{(policy lines, mx patterns)} or C{None}.
    """
    from smx.tlspolicy.mtasts import PolicyCache

    state = {"stamp": None, "cache": None}  # type: Dict[str, Any]
    quiet = Logger("smtpc", 0)

    def policyOf(domain: str) -> Optional[Tuple[List[str], List[str]]]:
        try:
            st = os.stat(path)
            stamp = (st.st_mtime_ns, st.st_ino, st.st_size)
        except OSError:
            return None
        if stamp != state["stamp"]:
            state["stamp"] = stamp
            state["cache"] = PolicyCache(path, quiet)
        entry = state["cache"].get(domain)
        if entry is None:
            return None
        return entry.policy.lines(), list(entry.policy.mx)

    return policyOf


# -- the report (RFC 8460 section 4) ----------------------------------------


def readDay(directory: str, day: str) -> Iterator[Dict[str, Any]]:
    """
    The entries of a day file, one at a time (a line cut short or not
    JSON is skipped).

    @raise ValueError: if C{day} is not C{YYYY-MM-DD}.
    """
    path = os.path.join(directory, checkDay(day) + _SUFFIX)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return iter(())
    return _entries(f)


def _entries(f: Any) -> Iterator[Dict[str, Any]]:
    with f:
        for line in f:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                yield entry


def dailyReports(
    settings: ReportSettings, day: str, domain: Optional[str] = None
) -> List[Dict[str, Any]]:
    """
    The RFC 8460 reports of C{day}, one per policy domain (sorted).

    @param domain: only this policy domain's report.
    @raise ValueError: if C{day} is not C{YYYY-MM-DD}.
    """
    entries = readDay(settings.directory, day)
    if domain is not None:
        domain = domain.lower().rstrip(".")
    strings = {}  # type: Dict[Tuple[str, str], Tuple[List[str], List[str]]]
    sessions = {}  # type: Dict[str, Dict[str, Dict[str, Any]]]
    for e in entries:
        if "policy" in e:
            strings[(str(e["policy"]), str(e.get("p")))] = (
                list(e.get("s") or []),
                list(e.get("mx") or []),
            )
            continue
        d = str(e.get("d", ""))
        kind = str(e.get("p", ""))
        if not d or kind not in ("sts", "tlsa") or (domain and d != domain):
            continue
        policy = sessions.setdefault(d, {}).setdefault(
            kind, {"ok": 0, "failed": 0, "failures": {}, "mx": set()}
        )
        if "r" in e:
            policy["failed"] += 1
            key = (
                str(e["r"]),
                e.get("local"),
                e.get("mx"),
                e.get("ip"),
                e.get("why"),
            )
            policy["failures"][key] = policy["failures"].get(key, 0) + 1
        else:
            policy["ok"] += 1
        if e.get("mx"):
            policy["mx"].add(str(e["mx"]))
    reports = []
    for d in sorted(sessions):
        policies = []
        for kind in sorted(sessions[d]):
            counts = sessions[d][kind]
            described = {
                "policy-type": kind,
                "policy-domain": d,
            }  # type: Dict[str, Any]
            if kind == "sts" and (d, "sts") in strings:
                lines, patterns = strings[(d, "sts")]
                described["policy-string"] = lines
                described["mx-host"] = patterns
            elif counts["mx"]:
                described["mx-host"] = sorted(counts["mx"])
            details = []
            for key, n in sorted(
                counts["failures"].items(), key=lambda kv: tuple(map(str, kv[0]))
            ):
                resultType, local, mx, ip, why = key
                detail = {
                    "result-type": resultType,
                    "failed-session-count": n,
                }  # type: Dict[str, Any]
                if local:
                    detail["sending-mta-ip"] = local
                if mx:
                    detail["receiving-mx-hostname"] = mx
                if ip:
                    detail["receiving-ip"] = ip
                if why:
                    detail["failure-reason-code"] = why
                details.append(detail)
            policies.append(
                {
                    "policy": described,
                    "summary": {
                        "total-successful-session-count": counts["ok"],
                        "total-failure-session-count": counts["failed"],
                    },
                    "failure-details": details,
                }
            )
        reports.append(
            {
                "organization-name": settings.organizationName,
                "date-range": {
                    "start-datetime": day + "T00:00:00Z",
                    "end-datetime": day + "T23:59:59Z",
                },
                "contact-info": settings.contactInfo,
                "report-id": "%s_%s@%s" % (day, d, settings.hostname),
                "policies": policies,
            }
        )
    return reports


# -- the service ------------------------------------------------------------


class ReportService(service.Service):
    """
    Attaches a L{SessionRecorder} to the log records while it runs (in
    front of whatever observer was there, e.g. the metrics, which still
    sees every record).
    """

    name = "tlsrpt"  # type: ignore[assignment]

    def __init__(self, recorder: SessionRecorder) -> None:
        self.recorder = recorder
        self._previous = None  # type: Any

    def _observe(self, logger: Any, fields: Dict[str, Any]) -> None:
        try:
            self.recorder.observe(logger, fields)
        finally:
            previous = self._previous
            if previous is not None:
                previous(logger, fields)

    def startService(self) -> None:
        service.Service.startService(self)
        self._previous = Logger.observer
        Logger.observer = self._observe

    def stopService(self) -> Any:
        service.Service.stopService(self)
        if Logger.observer == self._observe:
            Logger.observer = self._previous
        self._previous = None
        self.recorder.close()


def reportService(cfg: Any, reactor: Any) -> Optional[ReportService]:
    """
    The TLS reporting service of the first C{smtpc} section, or C{None}
    with C{tlsrpt = no}.  Start it after L{smx.metrics}' service (it
    keeps the metrics' observer behind its own).
    """
    from smx.log import loggerFromConfiguration

    section = cfg.section("smtpc")
    settings = ReportSettings.fromSection(section)
    if not settings.enabled:
        return None
    reader = stsPolicyReader(settings.stsCache) if settings.stsCache else None
    log = loggerFromConfiguration("smtpc", section)
    recorder = SessionRecorder(settings.directory, reactor, log, reader)
    return ReportService(recorder)

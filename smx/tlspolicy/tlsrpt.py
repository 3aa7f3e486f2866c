# -*- test-case-name: smx.tlspolicy.test.test_tlsrpt -*-
"""
NAME
    smx.tlspolicy.tlsrpt - SMTP TLS reporting (RFC 8460)

SYNOPSIS
    smtpc { tlsrpt = yes; tlsrpt_directory = tlsrpt;
            tlsrpt_organization = "Example Inc."; tlsrpt_contact =
            "postmaster@example.com"; }

    smx tlsrpt [-f smx.conf] [-q DIR] [--day YYYY-MM-DD] [--domain D] [--send]

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
    C{failure-details} (C{result-type}, C{sending-mta-ip} when the
    record has a C{local_ip=}, C{receiving-mx-hostname}, C{receiving-ip},
    C{failed-session-count}, C{failure-reason-code}: the record's
    C{reason=}).  C{smx tlsrpt} prints them
    (L{smx.scripts.tlsrpt}).

    L{sendReports} (C{smx tlsrpt --send}) sends each to the C{rua} URIs
    of its domain's C{_smtp._tls} TXT record (RFC 8460 sections 3 and
    5): a C{mailto:} address gets a C{multipart/report;
    report-type="tlsrpt"} mail with the gzipped report
    (L{reportMessage}), submitted to the local SMTPS as C{smx sendmail}
    submits; an C{https:} URI an HTTPS POST of the gzipped report as
    C{application/tlsrpt+gzip}.

CONFIGURATION PARAMETERS
    smtpc { tlsrpt; tlsrpt_directory; tlsrpt_organization;
    tlsrpt_contact; mta_sts_cache }   and the global C{hostname}
    pickup { submission_address }      where report mails are submitted

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

from smx.log import ChainedObserver, Logger
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
        self._observer = ChainedObserver(recorder.observe)

    def startService(self) -> None:
        service.Service.startService(self)
        self._observer.attach()

    def stopService(self) -> Any:
        service.Service.stopService(self)
        self._observer.detach()
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


# -- sending (RFC 8460 sections 3 and 5) ------------------------------------


class RecordError(ValueError):
    """A C{_smtp._tls} TXT record that cannot be used."""


def parseReportingRecord(texts: List[str]) -> List[str]:
    """
    The C{rua} URIs of a domain's C{_smtp._tls} TXT records (RFC 8460
    section 3).

    @param texts: the TXT records (each one's strings joined).
    @return: the URIs (C{mailto:...}, C{https://...}); C{[]} when no
        record starts with C{v=TLSRPTv1}.
    @raise RecordError: several such records, or the one there cannot be
        parsed.
    """
    records = [t for t in texts if re.match(r"v=TLSRPTv1[ \t]*(;|\Z)", t)]
    if not records:
        return []
    if len(records) > 1:
        raise RecordError("%d TLSRPT records" % (len(records),))
    uris = []  # type: List[str]
    for field in records[0].split(";")[1:]:
        field = field.strip(" \t")
        if not field:
            continue
        name, sep, value = field.partition("=")
        if not sep:
            raise RecordError("bad TLSRPT record field %r" % (field,))
        if name == "rua":
            uris = [u.strip(" \t") for u in value.split(",")]
    if not uris or not all(uris):
        raise RecordError("TLSRPT record without rua")
    return uris


def mailtoAddress(uri: str) -> Optional[str]:
    """
    The address of a C{mailto:} URI (RFC 6068; a query is ignored), or
    C{None} if it is not one with an address.
    """
    from urllib.parse import unquote

    if not uri.lower().startswith("mailto:"):
        return None
    address = unquote(uri[7:].split("?", 1)[0])
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        return None
    if any(ord(c) < 0x21 or ord(c) == 0x7F or c in "<>,;" for c in address):
        return None
    return address


def reportFileName(report: Dict[str, Any], submitter: str) -> str:
    """
    The file name of a gzipped report (RFC 8460 section 5.3):
    C{submitter!policy-domain!begin!end!unique-id.json.gz}.
    """
    begin = calendar.timegm(
        time.strptime(report["date-range"]["start-datetime"], "%Y-%m-%dT%H:%M:%SZ")
    )
    end = calendar.timegm(
        time.strptime(report["date-range"]["end-datetime"], "%Y-%m-%dT%H:%M:%SZ")
    )
    domain = report["policies"][0]["policy"]["policy-domain"]
    unique = re.sub(r"[^A-Za-z0-9._-]", "-", report["report-id"])
    return "%s!%s!%d!%d!%s.json.gz" % (submitter, domain, begin, end, unique)


def reportMessage(
    report: Dict[str, Any], settings: ReportSettings, to: str, now: float
) -> bytes:
    """
    The mail that carries C{report} to C{to} (RFC 8460 section 5.3): a
    C{multipart/report; report-type="tlsrpt"} with the gzipped JSON
    report as C{application/tlsrpt+gzip}.

    @return: the message with CR LF line ends.
    """
    import gzip
    from email import policy as emailPolicy
    from email.mime.application import MIMEApplication
    from email.mime.multipart import MIMEMultipart
    from email.mime.text import MIMEText
    from email.utils import formatdate, make_msgid

    domain = report["policies"][0]["policy"]["policy-domain"]
    submitter = settings.hostname
    message = MIMEMultipart("report", report_type="tlsrpt")
    message["From"] = reportSender(settings)
    message["To"] = to
    message["Date"] = formatdate(now)
    message["Message-ID"] = make_msgid(domain=settings.hostname)
    message["Subject"] = "Report Domain: %s Submitter: %s Report-ID: <%s>" % (
        domain,
        submitter,
        report["report-id"],
    )
    message["TLS-Report-Domain"] = domain
    message["TLS-Report-Submitter"] = submitter
    message.attach(
        MIMEText(
            "This is an aggregate TLS report (RFC 8460) from %s for %s.\n"
            % (submitter, domain),
            "plain",
            "us-ascii",
        )
    )
    blob = gzip.compress(json.dumps(report).encode("utf-8"), mtime=0)
    part = MIMEApplication(blob, "tlsrpt+gzip")
    part.add_header(
        "Content-Disposition",
        "attachment",
        filename=reportFileName(report, submitter),
    )
    message.attach(part)
    # no folding of the long file name into RFC 2231 pieces
    return message.as_bytes(policy=emailPolicy.SMTP.clone(max_line_length=0))


def reportSender(settings: ReportSettings) -> str:
    """
    The sender of the report mails: C{tlsrpt_contact} if it is a mail
    address, else C{postmaster@hostname}.
    """
    contact = settings.contactInfo
    if mailtoAddress("mailto:" + contact) is not None:
        return contact
    return "postmaster@%s" % (settings.hostname,)


@dataclasses.dataclass(frozen=True)
class Delivery:
    """
    What became of one report for one C{rua} URI.

    @ivar domain: the policy domain.
    @ivar uri: the C{rua} URI (empty when there was none).
    @ivar outcome: C{sent}, C{skipped} (the domain asks for no report) or
        C{failed}.
    @ivar text: why, or the server's answer.
    """

    domain: str
    uri: str
    outcome: str
    text: str


async def sendReports(
    reports: List[Dict[str, Any]],
    settings: ReportSettings,
    dns: Any,
    submit: Callable[[str, bytes], Any],
    post: Callable[[str, bytes], Any],
    now: float,
) -> List[Delivery]:
    """
    Send each report to the C{rua} URIs of its domain's C{_smtp._tls} TXT
    record: by mail (C{mailto:}, L{reportMessage}) or by an HTTPS POST
    of the gzipped report (C{https:}, RFC 8460 section 5.4).

    @param dns: looks up the TXT records (C{lookupTXT}).
    @param submit: C{submit(address, message)} -> (a Deferred firing
        with) C{(ok, text)}.
    @param post: C{post(uri, gzipped report)} -> (a Deferred firing with)
        C{(ok, text)}.
    """
    import gzip

    from twisted.internet import defer

    from smx.maps.errors import DNSPermanentError, DNSTemporaryError

    done = []  # type: List[Delivery]
    for report in reports:
        domain = report["policies"][0]["policy"]["policy-domain"]
        try:
            texts = await dns.lookupTXT("_smtp._tls." + domain)
        except DNSPermanentError:
            texts = []
        except DNSTemporaryError as e:
            done.append(Delivery(domain, "", "failed", "DNS: %s" % (e,)))
            continue
        try:
            uris = parseReportingRecord(texts)
        except RecordError as e:
            done.append(Delivery(domain, "", "skipped", str(e)))
            continue
        if not uris:
            done.append(Delivery(domain, "", "skipped", "no TLSRPT record"))
            continue
        for uri in uris:
            address = mailtoAddress(uri)
            if address is not None:
                message = reportMessage(report, settings, address, now)
                ok, text = await defer.maybeDeferred(submit, address, message)
            elif uri.lower().startswith("https://"):
                blob = gzip.compress(json.dumps(report).encode("utf-8"), mtime=0)
                ok, text = await defer.maybeDeferred(post, uri, blob)
            else:
                done.append(
                    Delivery(domain, uri, "skipped", "not a mailto: or https: URI")
                )
                continue
            done.append(Delivery(domain, uri, "sent" if ok else "failed", text))
    return done


def submitter(cfg: Any, settings: ReportSettings) -> Callable[[str, bytes], Any]:
    """
    C{submit(address, message)} for L{sendReports}: one ESMTP transaction
    with the local SMTPS (C{pickup { submission_address }}), as C{smx
    sendmail} submits, in a thread.
    """
    from twisted.internet import threads

    from smx.queue.maildrop import DropEnvelope, DropRecipient
    from smx.queue.pickupsettings import submissionAddress
    from smx.queue.submission import submit

    where = submissionAddress(cfg)
    sender = reportSender(settings)

    def _submit(address: str, message: bytes) -> Tuple[bool, str]:
        envelope = DropEnvelope(sender, (DropRecipient(address),))
        outcome = submit(where, envelope, message, settings.hostname)
        if outcome.accepted:
            return True, "accepted by %s:%d" % where
        failed = outcome.temporary + outcome.permanent
        return False, failed[0].reply if failed else "not accepted"

    return lambda address, message: threads.deferToThread(_submit, address, message)


def poster(
    reactor: Any, dns: Any, trustRoot: Any, timeout: float
) -> Callable[[str, bytes], Any]:
    """
    C{post(uri, blob)} for L{sendReports}: an HTTPS POST of the gzipped
    report as C{application/tlsrpt+gzip}, the server's certificate
    checked against C{trustRoot}, its name resolved with C{dns}.
    """
    from twisted.web.client import Agent, HTTPConnectionPool, readBody
    from twisted.web.http_headers import Headers

    from smx.tlspolicy.mtasts import agentEndpoints

    agent = Agent.usingEndpointFactory(
        reactor,
        agentEndpoints(reactor, dns, trustRoot, timeout),
        HTTPConnectionPool(reactor, persistent=False),
    )

    async def _post(uri: str, blob: bytes) -> Tuple[bool, str]:
        import io

        from twisted.internet import defer
        from twisted.web.client import FileBodyProducer

        try:
            d = agent.request(
                b"POST",
                uri.encode("ascii"),
                Headers({b"Content-Type": [b"application/tlsrpt+gzip"]}),
                FileBodyProducer(io.BytesIO(blob)),
            )
            d.addTimeout(timeout, reactor)
            response = await d
            await readBody(response)
        except (defer.CancelledError, defer.TimeoutError):
            return False, "timeout"
        except Exception as e:
            reasons = getattr(e, "reasons", None)
            if reasons:
                return False, "; ".join(r.getErrorMessage() for r in reasons)
            return False, str(e) or type(e).__name__
        if 200 <= response.code < 300:
            return True, "HTTP status %d" % (response.code,)
        return False, "HTTP status %d" % (response.code,)

    from twisted.internet import defer

    return lambda uri, blob: defer.Deferred.fromCoroutine(_post(uri, blob))

# -*- test-case-name: smx.tlspolicy.test.test_mtasts,smx.tlspolicy.test.test_integration_mtasts -*-
"""
NAME
    smx.tlspolicy.mtasts - SMTP MTA Strict Transport Security (RFC 8461)

SYNOPSIS
    smtpc { mta_sts = yes; mta_sts_cache = mta-sts.json;
            mta_sts_timeout = 30s; tls { CAcert_file = ca.pem; } }

    source = mtastsSource(MTASTSSettings.fromSection(smtpc), reactor, dns, log)
    policy = yield source.policyFor("example.com", ["mx1.example.com"])

DESCRIPTION
    For a recipient domain, SMTPC asks L{MTASTSPolicySource.policyFor}
    (an L{smx.tlspolicy.policy.ITLSPolicySource}) for the domain's
    MTA-STS policy:

     1. the C{_mta-sts.<domain>} TXT record is looked up (RFC 8461 §3.1);
        exactly one record starting with C{v=STSv1} with a valid C{id=}
        says the domain has a policy;
     2. if the cached policy has the same C{id} and less than half of
        its C{max_age} has passed, it is used as it is; otherwise the policy is fetched from
        C{https://mta-sts.<domain>/.well-known/mta-sts.txt} (§3.3): the
        server's certificate must be valid for C{mta-sts.<domain>} and
        chain to the CAs of C{tls { CAcert_file }} (the system's trusted
        CAs without it); only a 200 answer of type C{text/plain} of at
        most 64 KB within C{mta_sts_timeout} counts; redirects are not
        followed;
     3. a fetched policy (§3.2: C{version: STSv1}, C{mode}, C{mx},
        C{max_age} of at most 31557600 seconds) replaces the cached one
        and is written to C{mta_sts_cache} at once (atomically), so that
        it survives a restart;
     4. a failed TXT lookup or a failed fetch never lowers or removes a
        cached policy that has not expired (§5.1, §10.2): the cached one
        goes on being used until its C{max_age} runs out.

    The result is a L{smx.tlspolicy.policy.TLSPolicy}: C{mode: enforce}
    gives level C{verify} with the policy's C{mx} patterns as
    C{matchNames} (an MX host that matches none is not used; the
    certificate of the one used must be valid for its name and trusted,
    §4.2); C{mode: testing} the same with C{testing} set (a failure is
    logged and reported, delivery goes on as with C{may}); C{mode: none}
    and no policy at all give C{None}.

    MTA-STS is about the MX hosts of the recipient domain: routes that
    are address literals, local delivery and domains the mailertable
    sends to hosts of its own (a relay, a smart host, even C{.
    esmtp:smarthost}; L{MailertableRelays}) get no policy and cause no
    lookup.

    A policy that could not be fetched is not asked for again for
    L{RETRY_FAILED} seconds (the cached one, or none, is used meanwhile);
    requests of several deliveries to one domain share one fetch.

CONFIGURATION PARAMETERS
    smtpc { mta_sts; mta_sts_cache; mta_sts_timeout; mta_sts_port }
    smtpc { tls { CAcert_file; CAcert_path } }   the CAs of the HTTPS fetch
    smar { nameserver; DNS_timeout; DNS_flags }  the DNS lookups
    smar { mailertable }                         the relayed domains

SECURITY
    The policy host is resolved with smx's own resolver (C{nameserver})
    and connected to directly; no proxy.  The body is read into memory up
    to 64 KB only.  The cache file holds public data (the policies).

DIAGNOSTICS
    C{mta_sts=DOMAIN, policy_id=ID, mode=MODE, max_age=N} when a new
    policy is taken; C{sev=WARN, func=fetchPolicy, mta_sts=DOMAIN,
    error=...} when a fetch fails, with a C{tls_policy_failed} record of
    result type C{sts-policy-fetch-error}, C{sts-webpki-invalid} or
    C{sts-policy-invalid} for the TLS report (L{smx.tlspolicy.tlsrpt}).
    A cache file that cannot be read is reported once (C{sev=ERR}) and
    replaced at the next fetch.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import (
    Any,
    Callable,
    ClassVar,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
)

from OpenSSL import SSL
from twisted.internet import defer, endpoints, error, protocol, ssl
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from smx.log import Logger
from smx.mail.address import domainKey
from smx.maps.errors import DNSPermanentError, DNSTemporaryError
from smx.net import isIPAddress
from smx.tlspolicy.policy import FAILED_RECORD, ITLSPolicySource, TLSPolicy

#: the largest C{max_age} of RFC 8461 §3.2 (about a year)
MAX_AGE_LIMIT = 31557600

#: the largest policy body read (bytes)
MAX_POLICY_SIZE = 64 * 1024

#: seconds a failed fetch is not tried again for the same domain
RETRY_FAILED = 300

#: the path of the policy on C{mta-sts.<domain>} (RFC 8461 §3.3)
WELL_KNOWN = "/.well-known/mta-sts.txt"

_ID = re.compile(r"[A-Za-z0-9]{1,32}\Z")
_EXT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}\Z")
_EXT_VALUE = re.compile(r"[\x21-\x3a\x3c\x3e-\x7e]+\Z")
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)\Z")
_POLICY_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}\Z")


class STSError(Exception):
    """
    An MTA-STS record or policy could not be used.

    @ivar resultType: the RFC 8460 result type (C{sts-policy-invalid},
        C{sts-policy-fetch-error}, C{sts-webpki-invalid}).
    """

    def __init__(self, message: str, resultType: str = "sts-policy-invalid"):
        Exception.__init__(self, message)
        self.resultType = resultType


# -- the TXT record (RFC 8461 §3.1) -----------------------------------------


def parseRecord(texts: Sequence[str]) -> Optional[str]:
    """
    The policy C{id} of the C{_mta-sts} TXT records of a domain.

    @param texts: the TXT records (each one's strings joined).
    @return: the C{id}, or C{None} when there is no record starting with
        C{v=STSv1}.
    @raise STSError: if there are several such records or the one there
        is cannot be parsed (the domain then has no usable record, §3.1).
    """
    records = [t for t in texts if re.match(r"v=STSv1(?:[ \t]*;|[ \t]*\Z)", t)]
    if not records:
        return None
    if len(records) > 1:
        raise STSError("%d MTA-STS TXT records" % (len(records),))
    fields = [f.strip(" \t") for f in records[0].split(";")]
    if fields and fields[-1] == "":
        fields.pop()
    ident = None  # type: Optional[str]
    for field in fields[1:]:
        name, sep, value = field.partition("=")
        if not sep or not _EXT_NAME.match(name):
            raise STSError("bad MTA-STS TXT record field %r" % (field,))
        if name == "id":
            if not _ID.match(value):
                raise STSError("bad MTA-STS policy id %r" % (value,))
            if ident is None:
                ident = value
        elif not _EXT_VALUE.match(value):
            raise STSError("bad MTA-STS TXT record field %r" % (field,))
    if ident is None:
        raise STSError("MTA-STS TXT record without id")
    return ident


# -- the policy (RFC 8461 §3.2, §4.1) ---------------------------------------


@dataclasses.dataclass(frozen=True)
class STSPolicy:
    """
    A parsed MTA-STS policy.

    @ivar mode: C{enforce}, C{testing} or C{none}.
    @ivar mx: the MX patterns (lower case, C{*.} for one label).
    @ivar maxAge: seconds the policy may be cached.
    @ivar text: the policy as fetched (for the cache and for C{smx tlsrpt}).
    """

    mode: str
    mx: Tuple[str, ...]
    maxAge: int
    text: str

    def lines(self) -> List[str]:
        """
        The fields of the policy, one string each (RFC 8460 C{policy-string}).
        """
        return [line.strip() for line in self.text.splitlines() if line.strip()]

    def matches(self, host: str) -> bool:
        """
        Does the MX host name C{host} match one of the policy's patterns?
        """
        return any(mxMatches(pattern, host) for pattern in self.mx)


def mxMatches(pattern: str, host: str) -> bool:
    """
    RFC 8461 §4.1: C{mail.example.com} matches itself; C{*.example.com}
    matches C{mail.example.com} (one label, any) but neither
    C{example.com} nor C{a.b.example.com}.  Case and a final dot do not
    matter.
    """
    pattern = pattern.lower().rstrip(".")
    host = host.lower().rstrip(".")
    if pattern.startswith("*."):
        first, dot, rest = host.partition(".")
        return bool(first) and bool(dot) and rest == pattern[2:]
    return host == pattern


def _mxPattern(value: str) -> str:
    value = value.lower().rstrip(".")
    name = value[2:] if value.startswith("*.") else value
    labels = name.split(".")
    if len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        raise STSError("bad mx pattern %r" % (value,))
    return value


def parsePolicy(text: str) -> STSPolicy:
    """
    Parse a policy body (RFC 8461 §3.2).

    Lines end in LF or CRLF; unknown fields are ignored; of a field other
    than C{mx} given twice the first counts.  C{max_age} above
    L{MAX_AGE_LIMIT} is taken as L{MAX_AGE_LIMIT}.

    @raise STSError: if a line is not C{key: value}, the version is not
        C{STSv1}, the mode is not C{enforce}, C{testing} or C{none},
        C{max_age} is missing or not a number, or a mode other than
        C{none} has no valid C{mx}.
    """
    fields = {}  # type: Dict[str, str]
    mx = []  # type: List[str]
    for number, line in enumerate(text.replace("\r\n", "\n").split("\n"), 1):
        line = line.rstrip(" \t")
        if not line:
            continue
        key, sep, value = line.partition(":")
        value = value.strip(" \t")
        if not sep or not _POLICY_KEY.match(key) or not value:
            raise STSError("line %d of the policy is not 'key: value'" % (number,))
        if key == "mx":
            mx.append(_mxPattern(value))
        else:
            fields.setdefault(key, value)
    if fields.get("version") != "STSv1":
        raise STSError("policy version is %r, not STSv1" % (fields.get("version"),))
    mode = fields.get("mode")
    if mode not in ("enforce", "testing", "none"):
        raise STSError("policy mode is %r" % (mode,))
    age = fields.get("max_age", "")
    if not (age.isascii() and age.isdigit() and len(age) <= 10):
        raise STSError("policy max_age is %r" % (age or None,))
    if mode != "none" and not mx:
        raise STSError("policy in mode %s without mx" % (mode,))
    return STSPolicy(mode, tuple(mx), min(int(age), MAX_AGE_LIMIT), text)


# -- the cache (RFC 8461 §5.1) ----------------------------------------------


@dataclasses.dataclass(frozen=True)
class CachedPolicy:
    """
    A policy as cached: its C{id}, when it was fetched, the policy.
    """

    id: str
    fetched: float
    policy: STSPolicy

    @property
    def expires(self) -> float:
        """When the policy may no longer be used (fetch time + max_age)."""
        return self.fetched + self.policy.maxAge

    def toPlain(self) -> Dict[str, Any]:
        """The form kept in the cache file."""
        return {"id": self.id, "fetched": self.fetched, "policy": self.policy.text}

    @classmethod
    def fromPlain(cls, data: Mapping[str, Any]) -> "CachedPolicy":
        """
        @raise STSError: if C{data} is not an entry of a cache file.
        @raise KeyError, TypeError, ValueError: likewise.
        """
        ident = str(data["id"])
        if not _ID.match(ident):
            raise STSError("bad id %r" % (ident,))
        return cls(ident, float(data["fetched"]), parsePolicy(str(data["policy"])))


class PolicyCache:
    """
    The cached policies by domain, kept in a JSON file that is replaced
    atomically (written to a temporary file, synced, renamed) whenever a
    policy changes.

    @ivar path: the file, or C{None} (memory only).
    @ivar policies: domain -> L{CachedPolicy}.
    """

    def __init__(self, path: Optional[str], log: Logger) -> None:
        self.path = path
        self.log = log
        self.policies = {}  # type: Dict[str, CachedPolicy]
        if path is not None:
            self.policies = self._read(path, log)

    @staticmethod
    def _read(path: str, log: Logger) -> Dict[str, CachedPolicy]:
        policies = {}  # type: Dict[str, CachedPolicy]
        try:
            with open(path, "rb") as f:
                data = json.loads(f.read().decode("utf-8"))
            entries = data["policies"]
            if not isinstance(entries, dict):
                raise ValueError("'policies' is not an object")
        except FileNotFoundError:
            return policies
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.error("PolicyCache", mta_sts_cache=path, error=str(e))
            return policies
        for domain, entry in entries.items():
            try:
                policies[str(domain)] = CachedPolicy.fromPlain(entry)
            except (STSError, KeyError, TypeError, ValueError) as e:
                log.error(
                    "PolicyCache", mta_sts_cache=path, domain=domain, error=str(e)
                )
        return policies

    def get(self, domain: str) -> Optional[CachedPolicy]:
        """The cached policy of C{domain}, expired or not."""
        return self.policies.get(domain)

    def put(self, domain: str, entry: CachedPolicy, now: float) -> None:
        """
        Keep C{entry} for C{domain}, drop the expired entries, and write
        the file.  What another writer of the file (another C{smtpc}
        section, another SMTPC process) put there meanwhile is kept: of
        two entries of a domain the one fetched last wins.
        """
        if self.path is not None:
            quiet = Logger(self.log.component, -1, self.log.sink)
            for name, other in self._read(self.path, quiet).items():
                mine = self.policies.get(name)
                if mine is None or other.fetched > mine.fetched:
                    self.policies[name] = other
        self.policies[domain] = entry
        for name in [d for d, e in self.policies.items() if e.expires <= now]:
            del self.policies[name]
        self._save()

    def _save(self) -> None:
        if self.path is None:
            return
        data = {
            "version": 1,
            "policies": {d: e.toPlain() for d, e in sorted(self.policies.items())},
        }
        blob = json.dumps(data, indent=1, sort_keys=True).encode("utf-8")
        directory = os.path.dirname(self.path) or "."
        tmp = "%s.%d.tmp" % (self.path, os.getpid())
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, blob)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            dirfd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dirfd)
            finally:
                os.close(dirfd)
        except OSError as e:
            self.log.error("PolicyCache", mta_sts_cache=self.path, error=str(e))
            try:
                os.unlink(tmp)
            except OSError:
                pass


# -- the HTTPS fetch (RFC 8461 §3.3) ----------------------------------------


class _ResolvingEndpoint:
    """
    A TLS client endpoint for a host name that is resolved with smx's
    resolver (not the system's), tried address by address; the TLS
    connection checks the certificate against the host name.
    """

    def __init__(
        self, reactor: Any, dns: Any, host: str, port: int, creator: Any, timeout: float
    ) -> None:
        self.reactor = reactor
        self.dns = dns
        self.host = host
        self.port = port
        self.creator = creator
        self.timeout = timeout

    @defer.inlineCallbacks
    def connect(self, factory: Any) -> Any:
        addresses = yield self.dns.lookupAddresses(self.host)
        if not addresses:
            raise error.DNSLookupError("%s has no address" % (self.host,))
        last = None  # type: Optional[Failure]
        for address in addresses:
            if ":" in address:
                tcp = endpoints.TCP6ClientEndpoint(
                    self.reactor, address, self.port, timeout=self.timeout
                )  # type: Any
            else:
                tcp = endpoints.TCP4ClientEndpoint(
                    self.reactor, address, self.port, timeout=self.timeout
                )
            try:
                proto = yield endpoints.wrapClientTLS(self.creator, tcp).connect(
                    factory
                )
            except error.ConnectError:
                last = Failure()
                continue
            return proto
        assert last is not None
        last.raiseException()


@implementer(IAgentEndpointFactory)
class _EndpointFactory:
    def __init__(self, reactor: Any, dns: Any, trustRoot: Any, timeout: float) -> None:
        self.reactor = reactor
        self.dns = dns
        self.trustRoot = trustRoot
        self.timeout = timeout

    def endpointForURI(self, uri: Any) -> Any:
        host = uri.host.decode("ascii")
        creator = ssl.optionsForClientTLS(host, trustRoot=self.trustRoot)
        return _ResolvingEndpoint(
            self.reactor, self.dns, host, uri.port, creator, self.timeout
        )


def agentEndpoints(reactor: Any, dns: Any, trustRoot: Any, timeout: float) -> Any:
    """
    The endpoints of an HTTPS C{Agent} that resolves host names with
    C{dns} (smx's resolver) and checks the server's certificate against
    C{trustRoot} (an C{IAgentEndpointFactory}).
    """
    return _EndpointFactory(reactor, dns, trustRoot, timeout)


class _BodyReader(protocol.Protocol):
    """
    Reads a response body of at most L{MAX_POLICY_SIZE} bytes.
    """

    def __init__(self, finished: defer.Deferred) -> None:
        self.finished = finished
        self.chunks = []  # type: List[bytes]
        self.size = 0

    def dataReceived(self, data: bytes) -> None:
        if self.finished.called:
            return
        self.size += len(data)
        if self.size > MAX_POLICY_SIZE:
            self.finished.errback(
                STSError(
                    "policy larger than %d bytes" % (MAX_POLICY_SIZE,),
                    "sts-policy-invalid",
                )
            )
            self.transport.stopProducing()  # type: ignore[union-attr]
            return
        self.chunks.append(data)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if self.finished.called:
            return
        if reason.check(ResponseDone):
            self.finished.callback(b"".join(self.chunks))
        else:
            self.finished.errback(
                STSError(
                    "policy body incomplete: %s" % (reason.getErrorMessage(),),
                    "sts-policy-fetch-error",
                )
            )


def _fetchFailure(f: Failure) -> STSError:
    """
    The L{STSError} of a failed request: a certificate that does not
    verify or match is C{sts-webpki-invalid}, anything else
    C{sts-policy-fetch-error}.
    """
    if isinstance(f.value, STSError):
        return f.value
    from service_identity import VerificationError

    failures = [f] + list(getattr(f.value, "reasons", None) or [])
    if any(r.check(defer.CancelledError, defer.TimeoutError) for r in failures):
        return STSError("timeout", "sts-policy-fetch-error")
    texts = [r.getErrorMessage() or getattr(r.type, "__name__", "?") for r in failures]
    text = "; ".join(texts[1:] or texts)
    for r in failures:
        if r.check(VerificationError):
            return STSError("certificate name: %s" % (text,), "sts-webpki-invalid")
        if r.check(SSL.Error) and "certificate" in r.getErrorMessage().lower():
            return STSError("certificate: %s" % (text,), "sts-webpki-invalid")
    return STSError(text, "sts-policy-fetch-error")


class PolicyFetcher:
    """
    Fetches C{https://mta-sts.<domain>/.well-known/mta-sts.txt}.
    """

    def __init__(
        self,
        reactor: Any,
        dns: Any,
        trustRoot: Any,
        timeout: float,
        port: int = 443,
    ) -> None:
        """
        @param dns: resolves the policy host (C{lookupAddresses}).
        @param trustRoot: an C{IOpenSSLTrustRoot} the server's certificate
            must chain to.
        @param timeout: seconds the whole fetch may take.
        @param port: the HTTPS port (443; tests use another).
        """
        self.reactor = reactor
        self.timeout = timeout
        self.port = port
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.agent = Agent.usingEndpointFactory(
            reactor, agentEndpoints(reactor, dns, trustRoot, timeout), pool
        )

    def url(self, domain: str) -> str:
        """The policy URL of C{domain}."""
        if self.port == 443:
            return "https://mta-sts.%s%s" % (domain, WELL_KNOWN)
        return "https://mta-sts.%s:%d%s" % (domain, self.port, WELL_KNOWN)

    def fetch(self, domain: str) -> defer.Deferred:
        """
        @return: a L{Deferred} firing with the parsed L{STSPolicy}, or
            failing with L{STSError}.
        """
        d = self.agent.request(
            b"GET",
            self.url(domain).encode("ascii"),
            Headers({b"User-Agent": [b"smx MTA-STS"]}),
        )
        d.addCallback(self._cbResponse)
        d.addTimeout(self.timeout, self.reactor)
        d.addErrback(lambda f: Failure(_fetchFailure(f)))
        d.addCallback(self._cbBody)
        return d

    def _cbResponse(self, response: Any) -> defer.Deferred:
        if response.code != 200:
            response.deliverBody(_Discard())
            raise STSError(
                "HTTP status %d (not 200)" % (response.code,), "sts-policy-fetch-error"
            )
        types = response.headers.getRawHeaders(b"content-type") or [b""]
        media = types[0].split(b";")[0].strip().lower()
        if media != b"text/plain":
            response.deliverBody(_Discard())
            raise STSError(
                "content type %r (not text/plain)"
                % (media.decode("ascii", "replace") or None,),
                "sts-policy-invalid",
            )
        finished = defer.Deferred()  # type: defer.Deferred
        response.deliverBody(_BodyReader(finished))
        return finished

    def _cbBody(self, body: bytes) -> STSPolicy:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise STSError("policy is not UTF-8")
        return parsePolicy(text)


class _Discard(protocol.Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.stopProducing()  # type: ignore[union-attr]


def trustRootFromFiles(caFile: Optional[str], caPath: Optional[str]) -> Any:
    """
    The CAs an MTA-STS policy server's certificate must chain to: those of
    C{CAcert_file} and C{CAcert_path}, else the system's.

    @raise ValueError: if a file cannot be read or holds no certificate.
    """
    if not caFile and not caPath:
        return ssl.platformTrust()
    certificates = []
    files = [caFile] if caFile else []
    if caPath:
        try:
            names = sorted(os.listdir(caPath))
        except OSError as e:
            raise ValueError("CAcert_path %s: %s" % (caPath, e.strerror))
        files.extend(
            os.path.join(caPath, n)
            for n in names
            if os.path.isfile(os.path.join(caPath, n))
        )
    for name in files:
        try:
            with open(name, "rb") as f:
                data = f.read()
        except OSError as e:
            raise ValueError("CA file %s: %s" % (name, e.strerror))
        for pem in re.findall(
            rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", data, re.S
        ):
            certificates.append(ssl.Certificate.loadPEM(pem))
    if not certificates:
        raise ValueError("no CA certificate in %s" % (", ".join(files),))
    return ssl.trustRootFromCertificates(certificates)


# -- the policy source (RFC 8461 §5) ----------------------------------------


@dataclasses.dataclass(frozen=True)
class MTASTSSettings:
    """
    The MTA-STS options of an C{smtpc} section.

    @ivar enabled: C{mta_sts}.
    @ivar cacheFile: C{mta_sts_cache}, an absolute path.
    @ivar timeout: C{mta_sts_timeout}, seconds a policy fetch may take.
    @ivar caFile: C{tls { CAcert_file }}, or C{None}.
    @ivar caPath: C{tls { CAcert_path }}, or C{None}.
    @ivar port: C{mta_sts_port}, the port of the policy servers (443).
    @ivar mailertable: C{smar { mailertable { name } }}: the domains it
        relays get no policy (L{MailertableRelays}); empty: none.
    """

    enabled: bool
    cacheFile: str
    timeout: float
    caFile: Optional[str]
    caPath: Optional[str]
    port: int
    mailertable: str

    OPTIONS: ClassVar[Mapping[str, str]] = {
        "enabled": "mta_sts",
        "cacheFile": "mta_sts_cache",
        "timeout": "mta_sts_timeout",
        "caFile": "tls.CAcert_file",
        "caPath": "tls.CAcert_path",
        "port": "mta_sts_port",
        "mailertable": "/smar.mailertable.name",
    }
    DERIVED: ClassVar[Mapping[str, Tuple[str, ...]]] = {}

    @classmethod
    def fromSection(cls, section: Any) -> "MTASTSSettings":
        """
        @param section: an C{smtpc} L{smx.config.Section}.
        """
        from smx.config.settings import optionValues

        return cls(**optionValues(cls, section))


@implementer(ITLSPolicySource)
class MTASTSPolicySource:
    """
    The MTA-STS policies of recipient domains (an L{ITLSPolicySource}).

    @ivar cache: the L{PolicyCache}.
    @ivar fetcher: the L{PolicyFetcher}.
    """

    def __init__(
        self,
        reactor: Any,
        dns: Any,
        fetcher: Any,
        cache: PolicyCache,
        log: Logger,
        relayed: Optional[Callable[[str], bool]] = None,
    ) -> None:
        """
        @param dns: looks up the TXT records (C{lookupTXT}, an
            L{smx.maps.dns.DNSResolver}).
        @param fetcher: fetches a policy (C{fetch(domain)}, a
            L{PolicyFetcher}).
        @param relayed: domain -> is its mail sent to hosts the
            configuration names (a mailertable entry with hosts) rather
            than to its MX hosts (L{MailertableRelays}); C{None}: never.
        """
        self.reactor = reactor
        self.dns = dns
        self.fetcher = fetcher
        self.cache = cache
        self.log = log
        self.relayed = relayed
        self._pending = {}  # type: Dict[str, List[defer.Deferred]]
        self._failed = {}  # type: Dict[str, float]

    def policyFor(self, domain: str, mxHosts: Iterable[str]) -> defer.Deferred:
        """
        The MTA-STS policy of C{domain} (see the module documentation).

        @return: a L{Deferred} firing with a L{TLSPolicy} of source
            C{mta-sts}, or C{None}; it never fails.
        """
        if not _namedHosts(mxHosts) or domain.startswith("["):
            # local delivery, or address literals (a mailertable relay):
            # not delivery to the domain's MX hosts, which MTA-STS is about
            return defer.succeed(None)
        try:
            domain = domainKey(domain.rstrip("."))
        except ValueError as e:
            self.log.info(mta_sts=domain, error=str(e))
            return defer.succeed(None)
        if self.relayed is not None and self.relayed(domain):
            # a relay (smart host) the mailertable names, not the MX hosts
            return defer.succeed(None)
        waiting = self._pending.get(domain)
        d = defer.Deferred()  # type: defer.Deferred
        if waiting is not None:
            waiting.append(d)
            return d
        self._pending[domain] = [d]
        discovered = defer.Deferred.fromCoroutine(self._discover(domain))
        discovered.addErrback(self._ebDiscover, domain)
        discovered.addCallback(self._cbDiscovered, domain)
        return d

    def _ebDiscover(self, f: Failure, domain: str) -> Optional[CachedPolicy]:
        self.log.failure("policyFor", f, mta_sts=domain)
        return self._usable(domain)

    def _cbDiscovered(self, entry: Optional[CachedPolicy], domain: str) -> None:
        result = None  # type: Optional[TLSPolicy]
        try:
            if entry is not None and entry.policy.mode != "none":
                result = TLSPolicy(
                    "verify",
                    matchNames=entry.policy.mx,
                    source="mta-sts",
                    testing=entry.policy.mode == "testing",
                    policyDomain=domain,
                )
        except Exception:
            self.log.failure("policyFor", Failure(), mta_sts=domain)
        for d in self._pending.pop(domain, []):
            d.callback(result)

    def _usable(self, domain: str) -> Optional[CachedPolicy]:
        entry = self.cache.get(domain)
        if entry is not None and entry.expires > self.reactor.seconds():
            return entry
        return None

    async def _discover(self, domain: str) -> Optional[CachedPolicy]:
        cached = self._usable(domain)
        try:
            texts = await self.dns.lookupTXT("_mta-sts." + domain)
        except DNSPermanentError:
            texts = []
        except DNSTemporaryError as e:
            # the cached policy (if any) goes on: a DNS failure lowers nothing
            self.log.info(mta_sts=domain, error=str(e))
            return cached
        try:
            ident = parseRecord(texts)
        except STSError as e:
            self.log.info(mta_sts=domain, error=str(e))
            return cached
        if ident is None:
            return cached
        now = self.reactor.seconds()
        if cached is not None and cached.id == ident:
            # refreshed once half of its max_age has passed (RFC 8461 §5.1)
            if now - cached.fetched < cached.policy.maxAge / 2:
                return cached
        failed = self._failed.get(domain)
        if failed is not None and now - failed < RETRY_FAILED:
            return cached
        try:
            policy = await self.fetcher.fetch(domain)
        except STSError as e:
            self._failed[domain] = now
            self.log.warn("fetchPolicy", mta_sts=domain, error=str(e))
            self.log.warn(
                FAILED_RECORD,
                domain=domain,
                policy_domain=domain,
                mx=None,
                ip=None,
                policy="mta-sts",
                result_type=e.resultType,
                testing=int(cached is not None and cached.policy.mode == "testing"),
                reason=str(e),
            )
            return cached
        self._failed.pop(domain, None)
        entry = CachedPolicy(ident, self.reactor.seconds(), policy)
        self.cache.put(domain, entry, entry.fetched)
        self.log.info(
            mta_sts=domain, policy_id=ident, mode=policy.mode, max_age=policy.maxAge
        )
        return entry

    def policyString(self, domain: str) -> Optional[Tuple[List[str], List[str]]]:
        """
        The cached policy of C{domain} as a TLS report shows it.

        @return: C{(policy lines, mx patterns)}, or C{None}.
        """
        entry = self.cache.get(domain.lower().rstrip("."))
        if entry is None:
            return None
        return entry.policy.lines(), list(entry.policy.mx)


class MailertableRelays:
    """
    Which domains the mailertable sends to hosts of its own (a relay, a
    smart host: C{example.com esmtp:relay.example.net}, C{. esmtp:smarthost})
    instead of their MX hosts: MTA-STS is about the MX hosts, so it does
    not apply to them.  The file is read again when it changes.
    """

    def __init__(self, path: str, log: Logger) -> None:
        self.path = path
        self.log = log
        self._stamp = None  # type: Any
        self._table = None  # type: Any

    def __call__(self, domain: str) -> bool:
        from smx.maps.errors import MapError
        from smx.maps.mailertable import Mailertable

        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_ino, st.st_size)
        except OSError:
            stamp = None
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self._table = Mailertable.fromFile(self.path)
            except MapError as e:
                # the old table (if any) stays; MTA-STS applies without one
                self.log.error("MailertableRelays", mailertable=self.path, error=str(e))
        if self._table is None:
            return False
        found = self._table.find(domain)
        return found is not None and bool(found[1].hosts)


def _namedHosts(hosts: Iterable[str]) -> bool:
    """Is one of C{hosts} a host name (not an address literal)?"""
    for host in hosts:
        host = host.strip("[]")
        if not host:
            continue
        if host.lower().startswith("ipv6:"):
            continue
        if not isIPAddress(host):
            return True
    return False


def mtastsSource(
    settings: MTASTSSettings,
    reactor: Any,
    dns: Any,
    log: Logger,
) -> Optional[MTASTSPolicySource]:
    """
    The MTA-STS source of an C{smtpc} section, or C{None} when
    C{mta_sts = no}.

    @param dns: the resolver of the TXT records and the policy hosts (an
        L{smx.maps.dns.DNSResolver}).
    @raise ValueError: if the CA files cannot be read (a user's mistake).
    """
    if not settings.enabled:
        return None
    trust = trustRootFromFiles(settings.caFile, settings.caPath)
    fetcher = PolicyFetcher(reactor, dns, trust, settings.timeout, settings.port)
    cache = PolicyCache(settings.cacheFile, log)
    relayed = None  # type: Optional[Callable[[str], bool]]
    if settings.mailertable:
        relayed = MailertableRelays(settings.mailertable, log)
    return MTASTSPolicySource(reactor, dns, fetcher, cache, log, relayed)


def mtastsSourceFromConfiguration(
    cfg: Any,
    reactor: Any,
    section: Any = None,
    log: Optional[Logger] = None,
    dns: Any = None,
) -> Optional[MTASTSPolicySource]:
    """
    L{mtastsSource} of the C{smtpc} C{section} (default: the first), the
    domains the C{smar} mailertable relays (L{MailertableRelays}) left
    out.

    @param dns: the resolver of the TXT records and the policy hosts
        (SMTPC's); C{None}: one of its own, built from the C{smar}
        section's C{nameserver}, C{DNS_timeout} and C{DNS_flags}.
    @raise ValueError: if the CA files cannot be read.
    """
    if section is None:
        section = cfg.section("smtpc")
    settings = MTASTSSettings.fromSection(section)
    if not settings.enabled:
        return None
    if log is None:
        log = Logger("smtpc")
    if dns is None:
        from smx.maps.dns import DNSResolver
        from smx.maps.settings import ResolverSettings

        resolver = ResolverSettings.fromConfiguration(cfg)
        dns = DNSResolver(
            reactor,
            resolver.nameservers,
            resolver.dnsTimeout,
            resolver.dnsUseTCP,
            log,
        )
    return mtastsSource(settings, reactor, dns, log)

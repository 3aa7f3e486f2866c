# -*- test-case-name: smx.maps.test.test_integration_dns -*-
"""
Asynchronous DNS lookups for SMAR (seed §5.8.2 items 2, 3, 5) with
C{twisted.names}: MX, A, AAAA, PTR and TXT, results cached for their TTL;
TLSA for DANE (SMTPC) with the AD bit of a validating resolver.

C{nameserver} entries may be C{addr}, C{addr:port}, C{[v6]} or
C{[v6]:port}; without any, C{/etc/resolv.conf} is used.  C{DNS_timeout}
bounds every lookup (split over the servers, at least two tries);
C{DNS_flags = {use_TCP}} sends every query over TCP; otherwise queries go
over UDP and an answer with the TC bit is asked again over TCP (the seed
lists that as missing, §9.3; smx does it).  C{use_connect} is accepted:
Twisted always uses a connected UDP socket per query.

Results: a name that does not exist (NXDOMAIN) raises L{DNSPermanentError};
a name without records of the type asked for gives an empty list (NODATA);
a timeout, SERVFAIL, REFUSED or an answer that cannot be parsed raises
L{DNSTemporaryError}.  Positive and negative answers are cached (negative
ones for the SOA minimum, at most 5 minutes, or 60 seconds); temporary
failures are not.
"""

from __future__ import annotations

import functools
import io
import ipaddress
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from twisted.internet import defer
from twisted.names import client, dns, error
from twisted.python.failure import Failure

from smx.fastdefer import settled
from smx.log import Logger
from smx.mail.address import domainKey
from smx.maps.errors import DNSPermanentError, DNSTemporaryError

NEGATIVE_TTL = 60
MAX_NEGATIVE_TTL = 300


def parseNameserver(text: str) -> Tuple[str, int]:
    """
    Parse one C{nameserver} entry.

    @param text: C{addr}, C{addr:port}, C{[v6]}, C{[v6]:port} or a bare
        IPv6 address.
    @return: C{(address, port)}.
    @raise ValueError: if it is not an IP address (host names are not
        allowed: a resolver cannot need itself) or the port is bad.
    """
    text = text.strip()
    port = 53
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise ValueError("bad nameserver %r: missing ']'" % (text,))
        if rest:
            if not rest.startswith(":"):
                raise ValueError("bad nameserver %r" % (text,))
            port = _port(rest[1:], text)
    elif text.count(":") == 1:
        host, _, p = text.partition(":")
        port = _port(p, text)
    else:
        host = text
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError("bad nameserver %r: not an IP address" % (text,))
    return host, port


def _port(text: str, whole: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise ValueError("bad nameserver %r: bad port" % (whole,))
    return port


@functools.lru_cache(maxsize=4096)
def reverseName(address: str) -> str:
    """
    The C{in-addr.arpa} / C{ip6.arpa} name of an IP address.

    @raise ValueError: if C{address} is not an IP address.
    """
    return ipaddress.ip_address(address).reverse_pointer


class _TCPOnlyResolver(client.Resolver):
    """
    A resolver that sends every query over TCP (C{DNS_flags = {use_TCP}}).
    """

    def queryUDP(self, queries, timeout=None):
        if timeout is None:
            timeout = self.timeout
        return self.queryTCP(queries, sum(timeout))


class _QuietUDP:
    """
    The reactor as the resolver sees it: the same, except that the UDP
    protocol it listens with (one per query) is not noisy, so that a
    query does not log "Starting protocol" and "Stopping protocol".
    """

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)

    def listenUDP(self, port: int, protocol: Any, *args: Any, **kwargs: Any) -> Any:
        protocol.noisy = False
        return self._reactor.listenUDP(port, protocol, *args, **kwargs)


#: the TLSA record type (RFC 6698); twisted.names has no class for it
TLSA = 52

#: the UDP payload size announced in the OPT record (RFC 6891)
EDNS_PAYLOAD = 1232

#: the DO bit (RFC 3225) in the TTL field of the OPT record
_DO = 0x8000

_RCODES = {
    dns.EFORMAT: "format error",
    dns.ESERVER: "server failure",
    dns.ENAME: "no such domain",
    dns.ENOTIMP: "not implemented",
    dns.EREFUSED: "query refused",
}


def _askAuthenticated(message: Any) -> None:
    """
    Set the AD bit and add an EDNS0 OPT record with the DO bit to a query
    (RFC 6840 section 5.7, RFC 3225), so that a validating resolver says
    whether the answer is secure.
    """
    message.authenticData = 1
    message.additional.append(
        dns.RRHeader(
            b"",
            dns.OPT,
            EDNS_PAYLOAD,
            _DO,
            dns.UnknownRecord(b""),
        )
    )


#: added to the record type in the cache key of a lookup with AD and DO
_SECURE = 0x10000


def _mxName(rdata: bytes) -> str:
    """The host name of the wire data of an MX record (no compression:
    L{_rdata} encoded it without a compression dictionary)."""
    record = dns.Record_MX()
    record.decode(io.BytesIO(rdata), len(rdata))
    return record.name.name.decode("ascii", "replace").lower().rstrip(".")


def _rdata(payload: Any) -> bytes:
    """The wire data of a record twisted.names does not know."""
    data = getattr(payload, "data", None)
    if isinstance(data, bytes):
        return data
    out = io.BytesIO()
    payload.encode(out)
    return out.getvalue()


class _SecureDatagram(dns.DNSDatagramProtocol):
    """A UDP query with AD and DO (L{_askAuthenticated})."""

    noisy = False

    def writeMessage(self, message: Any, address: Any) -> None:
        _askAuthenticated(message)
        dns.DNSDatagramProtocol.writeMessage(self, message, address)


class _SecureStream(dns.DNSProtocol):
    """A TCP query with AD and DO (L{_askAuthenticated})."""

    def writeMessage(self, message: Any) -> None:
        _askAuthenticated(message)
        dns.DNSProtocol.writeMessage(self, message)


class _Controller:
    """What the DNS protocols tell their owner; nothing to do here."""

    def messageReceived(self, message: Any, protocol: Any, address: Any = None):
        pass

    def connectionMade(self, protocol: Any) -> None:
        pass

    def connectionLost(self, protocol: Any) -> None:
        pass


def _resolvConfServers(resolver: Any) -> List[Tuple[str, int]]:
    """The servers a C{client.Resolver} read from resolv.conf."""
    servers = list(resolver.servers or []) + list(resolver.dynServers or [])
    return servers or [("127.0.0.1", 53)]


async def _secureQuery(
    reactor: Any,
    servers: Sequence[Tuple[str, int]],
    name: str,
    rtype: int,
    tries: Sequence[float],
    useTCP: bool,
) -> Any:
    """
    One query with AD and DO, the servers taken in turn, one try each of
    C{tries} seconds; over TCP when C{useTCP} or the UDP answer is
    truncated.

    @return: the answer (a L{dns.Message}).
    @raise DNSTemporaryError: if no server answered.
    """
    query = [dns.Query(name, rtype, dns.IN)]
    last = "timeout"
    for i, timeout in enumerate(tries):
        server = servers[i % len(servers)]
        try:
            if not useTCP:
                message = await _udpQuery(reactor, server, query, timeout)
                if not message.trunc:
                    return message
            return await _tcpQuery(reactor, server, query, timeout)
        except (defer.TimeoutError, dns.DNSQueryTimeoutError):
            last = "timeout"
        except OSError as e:
            last = str(e)
        except error.DNSQueryRefusedError:
            last = "query refused"
        except Exception as e:
            # a garbled answer, a refused connection: try the next one
            last = str(e) or type(e).__name__
    raise DNSTemporaryError(
        "%s %s: %s" % (name, dns.QUERY_TYPES.get(rtype, rtype), last)
    )


async def _udpQuery(reactor: Any, server: Tuple[str, int], query, timeout) -> Any:
    proto = _SecureDatagram(_Controller(), reactor=reactor)
    interface = "::" if ":" in server[0] else ""
    port = reactor.listenUDP(0, proto, interface=interface)
    try:
        return await proto.query(server, query, timeout)
    finally:
        port.stopListening()


async def _tcpQuery(reactor: Any, server: Tuple[str, int], query, timeout) -> Any:
    from twisted.internet import endpoints

    if ":" in server[0]:
        endpoint = endpoints.TCP6ClientEndpoint(
            reactor, server[0], server[1], timeout=timeout
        )  # type: Any
    else:
        endpoint = endpoints.TCP4ClientEndpoint(
            reactor, server[0], server[1], timeout=timeout
        )
    proto = await endpoints.connectProtocol(
        endpoint, _SecureStream(_Controller(), reactor=reactor)
    )
    try:
        return await proto.query(query, timeout)
    finally:
        proto.transport.loseConnection()


class DNSResolver:
    """
    Cached asynchronous lookups.

    @ivar servers: the name servers, C{(address, port)} pairs.
    @ivar timeout: seconds a lookup may take.
    @ivar useTCP: query over TCP only.
    """

    def __init__(
        self,
        reactor: Any,
        nameservers: Sequence[Union[str, Tuple[str, int]]],
        timeout: float,
        useTCP: bool,
        log: Optional[Logger] = None,
        resolvConf: str = "/etc/resolv.conf",
    ) -> None:
        """
        @param nameservers: C{nameserver} (none: those of C{resolvConf}).
        @param timeout: C{DNS_timeout}, seconds a lookup may take (shared
            out between the tries).
        @param useTCP: query over TCP only (C{DNS_flags = use_tcp}).
        """
        if not timeout > 0:
            raise ValueError("DNS timeout %r is not positive" % (timeout,))
        self.reactor = reactor
        self.servers = [
            s if isinstance(s, tuple) else parseNameserver(s) for s in nameservers
        ][:4]
        self.timeout = float(timeout)
        self.useTCP = useTCP
        self.log = log if log is not None else Logger("smar")
        self._cache = {}  # type: Dict[Tuple[str, int], Tuple[float, Any]]
        tries = max(2, len(self.servers))
        self._tries = tuple([self.timeout / tries] * tries)
        factory = _TCPOnlyResolver if useTCP else client.Resolver
        quiet = _QuietUDP(reactor)
        if self.servers:
            self._resolver = factory(
                servers=list(self.servers), timeout=self._tries, reactor=quiet
            )
        else:
            self._resolver = factory(
                resolv=resolvConf, timeout=self._tries, reactor=quiet
            )

    def close(self) -> None:
        """
        Drop open TCP connections and the cache.
        """
        connections = list(self._resolver.connections or [])  # type: List[Any]
        for proto in connections:
            proto.transport.loseConnection()
        self._cache.clear()

    clearCache = close

    def _query(self, name: str, rtype: int) -> defer.Deferred:
        name = name.lower().rstrip(".")
        if not name.isascii():
            # an internationalised domain (RFC 6531) is asked in A-labels
            try:
                name = domainKey(name)
            except ValueError as e:
                # "bad internationalised domain NAME: why"
                return defer.fail(DNSPermanentError(str(e)))
        key = (name, rtype)
        now = self.reactor.seconds()
        hit = self._cache.get(key)
        if hit is not None:
            if hit[0] > now:
                if isinstance(hit[1], Exception):
                    return defer.fail(hit[1])
                return defer.succeed(hit[1])
            del self._cache[key]
        # a level-14 record of each query sent (counted by smx.metrics)
        self.log.debug(14, dns_query=name, type=dns.QUERY_TYPES.get(rtype, rtype))
        d = self._resolver.query(dns.Query(name, rtype, dns.IN), self._tries)
        d.addCallbacks(
            self._cbAnswer, self._ebAnswer, (name, rtype), None, (name, rtype)
        )
        return d

    def _cbAnswer(self, result, name: str, rtype: int) -> List[Any]:
        answers, authority, _ = result
        records = []
        ttl = None  # type: Optional[int]
        for rr in answers:
            if rr.type == rtype:
                records.append(rr.payload)
                ttl = rr.ttl if ttl is None else min(ttl, rr.ttl)
        if ttl is None:
            ttl = self._negativeTTL(authority)
        if ttl > 0:
            self._cache[(name, rtype)] = (self.reactor.seconds() + ttl, records)
        return records

    def _negativeTTL(self, authority) -> int:
        for rr in authority:
            if rr.type == dns.SOA:
                return min(rr.ttl, rr.payload.minimum, MAX_NEGATIVE_TTL)
        return NEGATIVE_TTL

    def _ebAnswer(self, f, name: str, rtype: int):
        qtype = dns.QUERY_TYPES.get(rtype, str(rtype))
        if f.check(error.DNSNameError):
            exc = DNSPermanentError("%s %s: no such domain" % (name, qtype))
            msg = f.value.args[0] if f.value.args else None
            ttl = self._negativeTTL(getattr(msg, "authority", None) or [])
            self._cache[(name, rtype)] = (self.reactor.seconds() + ttl, exc)
            raise exc
        if f.check(defer.TimeoutError, dns.DNSQueryTimeoutError):
            reason = "timeout"
        elif f.check(error.DNSServerError):
            reason = "server failure"
        elif f.check(error.DNSQueryRefusedError):
            reason = "query refused"
        else:
            reason = f.getErrorMessage() or f.type.__name__
        self.log.info(dns_lookup=name, type=qtype, error=reason)
        raise DNSTemporaryError("%s %s: %s" % (name, qtype, reason))

    def lookupMX(self, name: str) -> defer.Deferred:
        """
        @return: a L{Deferred} firing with C{[(preference, host), ...]}
            sorted by preference (not shuffled), C{[]} for no MX records.
        """
        d = self._query(name, dns.MX)
        d.addCallback(
            lambda rs: sorted(
                (r.preference, r.name.name.decode("ascii", "replace").lower())
                for r in rs
            )
        )
        return d

    def lookupA(self, name: str) -> defer.Deferred:
        """
        @return: a L{Deferred} firing with the IPv4 addresses of C{name}.
        """
        d = self._query(name, dns.A)
        d.addCallback(lambda rs: [r.dottedQuad() for r in rs])
        return d

    def lookupAAAA(self, name: str) -> defer.Deferred:
        """
        @return: a L{Deferred} firing with the IPv6 addresses of C{name}.
        """
        d = self._query(name, dns.AAAA)
        d.addCallback(lambda rs: [str(ipaddress.IPv6Address(r.address)) for r in rs])
        return d

    def lookupPTR(self, address: str) -> defer.Deferred:
        """
        @return: a L{Deferred} firing with the names of the PTR records of
            the IP C{address}.
        """
        try:
            name = reverseName(address)
        except ValueError:
            return defer.fail(DNSPermanentError("%r is not an IP address" % (address,)))
        d = self._query(name, dns.PTR)
        d.addCallback(
            lambda rs: [r.name.name.decode("ascii", "replace").lower() for r in rs]
        )
        return d

    def lookupTXT(self, name: str) -> defer.Deferred:
        """
        @return: a L{Deferred} firing with the TXT strings (each record's
            strings joined).
        """
        d = self._query(name, dns.TXT)
        d.addCallback(
            lambda rs: [b"".join(r.data).decode("utf-8", "replace") for r in rs]
        )
        return d

    def lookupTLSA(self, name: str) -> defer.Deferred:
        """
        The TLSA records of C{name} (RFC 6698; for DANE, RFC 7672:
        C{_25._tcp.<mx>}) and whether the resolver says they are
        DNSSEC-validated.

        The query is sent with the AD bit and, in an EDNS0 OPT record,
        the DO bit (RFC 6840 section 5.7), to the same servers with the
        same tries as the other lookups (over TCP when the answer is
        truncated or C{use_TCP} is set); the answer's AD bit is the
        resolver's word that the records (or their absence) are secure.
        smx validates no signatures itself: the resolver must be a
        validating one the host trusts (a local one, as for Postfix).

        @return: a L{Deferred} firing with C{(rdatas, authenticated)}:
            the record data as C{bytes} (usage, selector, matching type,
            association data) and the AD bit; C{([], authenticated)} for
            a name without TLSA records or that does not exist.  It fails
            with L{DNSTemporaryError} for a timeout, SERVFAIL or a
            garbled answer.
        """
        return self._lookupSecure(name, TLSA)

    def lookupMXSecure(self, name: str) -> defer.Deferred:
        """
        The MX hosts of C{name} and whether the resolver says they are
        DNSSEC-validated (DANE uses an MX host name only from a secure MX
        RRset, RFC 7672 section 2.2.1), asked as L{lookupTLSA} asks.

        @return: a L{Deferred} firing with C{(hosts, authenticated)}: the
            MX host names in lower case without the trailing dot.
        """
        d = self._lookupSecure(name, dns.MX)
        d.addCallback(
            lambda found: (
                [_mxName(rdata) for rdata in found[0]],
                found[1],
            )
        )
        return d

    def _lookupSecure(self, name: str, rtype: int) -> defer.Deferred:
        """
        A query with AD and DO (see L{lookupTLSA}).

        @return: a L{Deferred} firing with C{(rdatas, authenticated)}.
        """
        name = name.lower().rstrip(".")
        key = (name, rtype | _SECURE)
        now = self.reactor.seconds()
        hit = self._cache.get(key)
        if hit is not None:
            if hit[0] > now:
                return defer.succeed(hit[1])
            del self._cache[key]
        qtype = dns.QUERY_TYPES.get(rtype, "TLSA" if rtype == TLSA else str(rtype))
        self.log.debug(14, dns_query=name, type=qtype)
        servers = self.servers or _resolvConfServers(self._resolver)
        d = defer.Deferred.fromCoroutine(
            _secureQuery(self.reactor, servers, name, rtype, self._tries, self.useTCP)
        )
        d.addCallback(self._cbSecure, name, rtype, qtype)
        d.addErrback(self._ebSecure, name, qtype)
        return d

    def _cbSecure(
        self, message: Any, name: str, rtype: int, qtype: str
    ) -> Tuple[List[bytes], bool]:
        authenticated = bool(message.authenticData)
        if message.rCode == dns.ENAME:
            result = ([], authenticated)  # type: Tuple[List[bytes], bool]
            ttl = self._negativeTTL(message.authority)
        elif message.rCode != dns.OK:
            raise DNSTemporaryError(
                "%s %s: %s" % (name, qtype, _RCODES.get(message.rCode, message.rCode))
            )
        else:
            rdatas = []
            ttls = []
            for rr in message.answers:
                if rr.type == rtype:
                    rdatas.append(_rdata(rr.payload))
                    ttls.append(rr.ttl)
            result = (rdatas, authenticated)
            ttl = min(ttls) if ttls else self._negativeTTL(message.authority)
        if ttl > 0:
            self._cache[(name, rtype | _SECURE)] = (
                self.reactor.seconds() + ttl,
                result,
            )
        return result

    def _ebSecure(self, f: Failure, name: str, qtype: str) -> None:
        if f.check(DNSTemporaryError):
            f.raiseException()
        if f.check(defer.TimeoutError, dns.DNSQueryTimeoutError):
            reason = "timeout"
        else:
            reason = f.getErrorMessage() or repr(f.value)
        self.log.info(dns_lookup=name, type=qtype, error=reason)
        raise DNSTemporaryError("%s %s: %s" % (name, qtype, reason))

    def lookupAddresses(self, name: str) -> defer.Deferred:
        """
        A and AAAA records of C{name}, IPv4 first.

        @return: a L{Deferred} firing with a list of addresses (possibly
            empty); it fails with L{DNSPermanentError} if the name does not
            exist, with L{DNSTemporaryError} if a lookup failed temporarily
            and the other found nothing.
        """
        da = self.lookupA(name)
        d6 = self.lookupAAAA(name)
        d = settled([da, d6])
        d.addCallback(self._cbAddresses)
        return d

    def _cbAddresses(self, results) -> List[str]:
        found = []  # type: List[str]
        failures = []
        for ok, value in results:
            if ok:
                found.extend(value)
            else:
                failures.append(value)
        if found or not failures:
            return found
        for f in failures:
            if f.check(DNSTemporaryError):
                f.raiseException()
        failures[0].raiseException()
        return []  # not reached

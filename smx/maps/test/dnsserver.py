# -*- test-case-name: smx.maps.test.test_integration_dns -*-
"""
A Twisted Names authoritative DNS server on 127.0.0.1 and a free port,
serving test zones, for integration tests of smx (SMAR, SMTPC, end to end).

    from smx.maps.test.dnsserver import startDNSServer

    port, stop = startDNSServer({
        "remote.test": [("MX", 10, "mx.remote.test")],
        "mx.remote.test": [("A", "127.0.0.2"), ("AAAA", "::1")],
        "2.0.0.127.in-addr.arpa": [("PTR", "mx.remote.test")],
        "4.3.2.1.dnsbl.test": [("A", "127.0.0.2"), ("TXT", "listed")],
    }, truncate={"big.test"}, timeout={"slow.test"})
    ... nameserver = "127.0.0.1:%d" % port ...
    yield stop()      # or self.addCleanup(stop)

Record types: C{("A", addr)}, C{("AAAA", addr)}, C{("MX", pref, host)},
C{("PTR", name)}, C{("TXT", text)}, C{("CNAME", name)}, C{("TLSA", usage,
selector, matching type, hex data)} (RFC 6698, e.g. C{("TLSA", 3, 1, 1,
"ab12...")}); an optional last element is the TTL (default 300).

DNSSEC, as a validating resolver shows it: names in C{signed} and the
names below them are answered with the AD bit (RFC 4035 section 3.2.3)
when the query asked for it with AD or DO (RFC 6840 section 5.7); the
server signs nothing, it only says so, which is all smx looks at.  A name with no records at all answers
NXDOMAIN; a name with records but none of the type asked for answers
NOERROR with no answers (NODATA).

Misbehaviour: names in C{truncate} are answered over UDP with the TC bit
and no records (the full answer only over TCP); names in C{timeout} are
never answered; names in C{garbage} are answered over UDP with bytes that
are not a DNS message; names in C{servfail} answer SERVFAIL.  C{queries}
on the returned server object (see L{startDNSServerWithLog}) records
every question as C{(name, type, "udp" | "tcp")}.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Tuple

from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.names import dns, error, server

from smx._twistedcompat import RecordResolverBase, responseFromMessage

_TYPES = {
    "A": dns.A,
    "AAAA": dns.AAAA,
    "MX": dns.MX,
    "PTR": dns.PTR,
    "TXT": dns.TXT,
    "CNAME": dns.CNAME,
    "TLSA": 52,
}


def _payload(record: tuple) -> Tuple[int, Any, int]:
    kind = record[0].upper()
    if kind == "A":
        return dns.A, dns.Record_A(record[1]), _ttl(record, 2)
    if kind == "AAAA":
        return dns.AAAA, dns.Record_AAAA(record[1]), _ttl(record, 2)
    if kind == "MX":
        return dns.MX, dns.Record_MX(record[1], record[2]), _ttl(record, 3)
    if kind == "PTR":
        return dns.PTR, dns.Record_PTR(record[1]), _ttl(record, 2)
    if kind == "TXT":
        text = record[1].encode() if isinstance(record[1], str) else record[1]
        return dns.TXT, dns.Record_TXT(text), _ttl(record, 2)
    if kind == "CNAME":
        return dns.CNAME, dns.Record_CNAME(record[1]), _ttl(record, 2)
    if kind == "TLSA":
        data = bytes([record[1], record[2], record[3]]) + bytes.fromhex(record[4])
        return 52, dns.UnknownRecord(data), _ttl(record, 5)
    raise ValueError("unknown record type %r" % (record[0],))


def _ttl(record: tuple, index: int) -> int:
    return int(record[index]) if len(record) > index else 300


class TestZoneResolver(RecordResolverBase):
    """
    Answers from a dict of names to records.
    """

    def __init__(self, records: Dict[str, List[tuple]]):
        RecordResolverBase.__init__(self)
        self.records = {}  # type: Dict[str, List[Tuple[int, Any, int]]]
        for name, rrs in records.items():
            self.records[name.lower().rstrip(".")] = [_payload(r) for r in rrs]

    def lookupRecords(self, name, cls, type, timeout=None):
        if isinstance(name, bytes):
            name = name.decode("ascii")
        key = name.lower().rstrip(".")
        rrs = self.records.get(key)
        if rrs is None:
            return defer.fail(error.DomainError(name))
        answers = []
        for rtype, payload, ttl in rrs:
            if rtype == type or (rtype == dns.CNAME and type != dns.CNAME):
                answers.append(
                    dns.RRHeader(name, rtype, dns.IN, ttl, payload, auth=True)
                )
                if rtype == dns.CNAME:
                    target = payload.name.name.decode("ascii").lower()
                    for t2, p2, ttl2 in self.records.get(target, []):
                        if t2 == type:
                            answers.append(
                                dns.RRHeader(target, t2, dns.IN, ttl2, p2, auth=True)
                            )
        return defer.succeed((answers, [], []))


class TestDNSServerFactory(server.DNSServerFactory):
    """
    A server factory that can misbehave for chosen names.
    """

    def __init__(
        self, resolver, truncate=(), timeout=(), garbage=(), servfail=(), signed=()
    ):
        server.DNSServerFactory.__init__(self, authorities=[resolver])
        self.signed = {n.lower().rstrip(".") for n in signed}
        #: the AD and DO bits of each query, C{(name, ad, do)}
        self.flags = []  # type: List[Tuple[str, bool, bool]]
        self._asked = {}  # type: Dict[int, bool]
        self.truncate = {n.lower() for n in truncate}
        self.timeout = {n.lower() for n in timeout}
        self.garbage = {n.lower() for n in garbage}
        self.servfail = {n.lower() for n in servfail}
        self.queries = []  # type: List[Tuple[str, str, str]]

    def handleQuery(self, message, protocol, address):
        q = message.queries[0]
        name = q.name.name.decode("ascii").lower().rstrip(".")
        self.queries.append(
            (
                name,
                dns.QUERY_TYPES.get(q.type, str(q.type)),
                "udp" if address else "tcp",
            )
        )
        ad, do = bool(message.authenticData), _dnssecOK(message)
        self.flags.append((name, ad, do))
        self._asked[message.id] = ad or do
        if name in self.timeout:
            return None
        if address is not None and name in self.garbage:
            protocol.transport.write(b"\x00\x01garbage", address)
            return None
        if name in self.servfail:
            response = responseFromMessage(self, message, rCode=dns.ESERVER)
            self.sendReply(protocol, response, address)
            return None
        if address is not None and name in self.truncate:
            response = responseFromMessage(self, message, rCode=dns.OK)
            response.trunc = True
            self.sendReply(protocol, response, address)
            return None
        return server.DNSServerFactory.handleQuery(self, message, protocol, address)

    def isSigned(self, name: str) -> bool:
        """Is C{name} in one of the zones the test calls signed?"""
        name = name.lower().rstrip(".")
        return any(name == z or name.endswith("." + z) for z in self.signed)

    def sendReply(self, protocol, message, address):
        # AD on the answer about a name in a signed zone to a query that
        # asked for it with AD or DO, off otherwise
        asked = self._asked.pop(message.id, False)
        if message.queries:
            name = message.queries[0].name.name.decode("ascii")
            message.authenticData = bool(asked and self.isSigned(name))
        return server.DNSServerFactory.sendReply(self, protocol, message, address)


def _dnssecOK(message) -> bool:
    """Has the query an OPT record with the DO bit (RFC 3225)?"""
    for rr in message.additional:
        if rr.type == dns.OPT:
            ttl = getattr(rr, "ttl", 0) or 0
            if getattr(rr, "dnssecOK", False) or ttl & 0x8000:
                return True
    return False


def startDNSServerWithLog(
    records: Dict[str, List[tuple]],
    truncate: Iterable[str] = (),
    timeout: Iterable[str] = (),
    garbage: Iterable[str] = (),
    servfail: Iterable[str] = (),
    reactor: Optional[Any] = None,
    signed: Iterable[str] = (),
):
    """
    Like L{startDNSServer} but also return the factory, whose C{queries}
    lists every question received.

    @return: C{(port, stop, factory)}.
    """
    if reactor is None:
        from twisted.internet import reactor as _reactor

        reactor = _reactor
    factory = TestDNSServerFactory(
        TestZoneResolver(records), truncate, timeout, garbage, servfail, signed
    )
    # the UDP port chosen by the system may be in use for TCP (by another
    # test's connection): try again with another one (and a new protocol:
    # the old one keeps its transport until the old port has closed)
    for attempt in range(20):
        protocol = dns.DNSDatagramProtocol(factory)
        udp = reactor.listenUDP(0, protocol, interface="127.0.0.1")
        port = udp.getHost().port
        try:
            tcp = reactor.listenTCP(port, factory, interface="127.0.0.1")
        except CannotListenError:
            udp.stopListening()
            if attempt == 19:
                raise
        else:
            break

    def stop():
        for proto in list(factory.connections):
            proto.transport.loseConnection()
        return defer.gatherResults(
            [
                defer.maybeDeferred(udp.stopListening),
                defer.maybeDeferred(tcp.stopListening),
            ]
        )

    return port, stop, factory


def startDNSServer(
    records: Dict[str, List[tuple]],
    truncate: Iterable[str] = (),
    timeout: Iterable[str] = (),
    garbage: Iterable[str] = (),
    servfail: Iterable[str] = (),
    reactor: Optional[Any] = None,
    signed: Iterable[str] = (),
):
    """
    Start an authoritative server for C{records} on 127.0.0.1, UDP and TCP
    on the same free port.

    @return: C{(port, stop)}; C{stop()} returns a L{Deferred} that fires
        once both ports are closed.
    """
    port, stop, _ = startDNSServerWithLog(
        records, truncate, timeout, garbage, servfail, reactor, signed
    )
    return port, stop

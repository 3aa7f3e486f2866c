# -*- test-case-name: smx.pmilter.test.test_greylist -*-
"""
NAME
    smx.pmilter.greylistdb - the Berkeley DB file of the greylist pmilter

SYNOPSIS
    db = GreylistDatabase("/var/spool/smx/greylist.db")
    verdict = db.check(Triplet("192.0.2.0/24", "a@example.com",
                               "b@example.org"), now, policy)
    db.whitelist("cltaddr:10.0.0.0/8"); db.remove(...); db.entries()

DESCRIPTION
    One Berkeley DB hash file (L{smx.bdb}) holds the triplets (client
    network, sender, recipient) with the time of their first and last
    attempt, how many attempts were made and whether they passed, and the
    whitelist.  It survives restarts.

    Every operation opens the file, does its work and closes it (which
    writes it out), under an C{flock} of C{FILE.lock}: the SMTP servers
    and C{smx greylist} may use the file at the same time, from any
    number of processes.  A read takes about 10 µs; a write is flushed to
    disk, which is why the pmilter makes them in a thread.

    Keys are C{t NUL network NUL sender NUL recipient} for a triplet and
    C{w NUL kind NUL value} for a whitelist entry (kinds C{cltaddr},
    C{from}, C{to}); values are ASCII.

DIAGNOSTICS
    A file that cannot be opened or written raises the C{OSError} or the
    Berkeley DB error; the pmilter then fails and SMTPS's failure policy
    applies.  L{parseEntry} raises C{ValueError} for a whitelist entry it
    cannot understand.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
from dataclasses import dataclass
from typing import Any, Iterator, List, Optional, Tuple

from smx.bdb import db

#: the kinds of whitelist entries
WHITELIST_KINDS = ("cltaddr", "from", "to")


@dataclass(frozen=True)
class Triplet:
    """
    What greylisting remembers: the client's network, the sender and the
    recipient (lower case, without angle brackets; C{""} is the null
    sender).
    """

    network: str
    sender: str
    recipient: str

    def key(self) -> bytes:
        return b"\0".join([b"t", *(s.encode("utf-8", "surrogateescape") for s in self)])

    def __iter__(self) -> Iterator[str]:
        return iter((self.network, self.sender, self.recipient))


@dataclass(frozen=True)
class Policy:
    """
    The timing of greylisting.

    @ivar delay: seconds a new triplet is refused.
    @ivar retryWindow: seconds a refused triplet waits for its retry.
    @ivar lifetime: seconds a triplet that passed is kept since last seen.
    """

    delay: float
    retryWindow: float
    lifetime: float


@dataclass
class Record:
    """
    One triplet's history.
    """

    first: float
    last: float
    count: int
    passed: bool

    def encode(self) -> bytes:
        return b"%d %d %d %d" % (self.first, self.last, self.count, self.passed)

    @classmethod
    def decode(cls, data: bytes) -> Optional["Record"]:
        try:
            first, last, count, passed = data.split()
            return cls(float(first), float(last), int(count), passed == b"1")
        except ValueError:
            return None

    def expired(self, now: float, policy: Policy) -> bool:
        if self.passed:
            return now - self.last > policy.lifetime
        return now - self.first > policy.retryWindow


@dataclass(frozen=True)
class Verdict:
    """
    The result of L{GreylistDatabase.check}.

    @ivar state: C{"whitelisted"}, C{"new"} (first attempt), C{"early"}
        (retried before the delay), C{"passed"} (retried after it) or
        C{"known"} (passed before).
    @ivar wait: seconds until a retry passes (0 once it does).
    """

    state: str
    wait: float = 0

    @property
    def refused(self) -> bool:
        return self.state in ("new", "early")


def clientNetwork(host: str, ipv4Prefix: int = 24, ipv6Prefix: int = 64) -> str:
    """
    The network of a client address: its /24 (IPv4) or /64 (IPv6).

    @raise ValueError: C{host} is not an IP address.
    """
    address = ipaddress.ip_address(host)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    prefix = ipv4Prefix if address.version == 4 else ipv6Prefix
    return str(ipaddress.ip_network("%s/%d" % (address, prefix), strict=False))


def normalAddress(address: str) -> str:
    """
    An envelope address as greylisting compares it: without angle
    brackets, in lower case.
    """
    address = address.strip()
    if address.startswith("<") and address.endswith(">"):
        address = address[1:-1]
    return address.lower()


def parseEntry(text: str) -> Tuple[str, str]:
    """
    A whitelist entry as C{smx greylist whitelist} takes it:
    C{cltaddr:192.0.2.0/24} (or a bare address or network),
    C{from:user@example.com}, C{from:@example.com}, C{from:@.example.com}
    (subdomains), C{to:...} likewise (a bare address is a sender).

    @return: C{(kind, value)} in their normal form.
    @raise ValueError: the entry cannot be understood.
    """
    text = text.strip()
    kind, sep, value = text.partition(":")
    if not sep or kind.lower() not in WHITELIST_KINDS:
        try:
            ipaddress.ip_network(text, strict=False)
        except ValueError:
            if "@" not in text:
                raise ValueError(
                    "%r is not an address, a network or an entry "
                    "cltaddr:/from:/to:" % (text,)
                )
            kind, value = "from", text
        else:
            kind, value = "cltaddr", text
    kind = kind.lower()
    if kind == "cltaddr":
        try:
            network = ipaddress.ip_network(value.strip(), strict=False)
        except ValueError:
            raise ValueError("%r is not an IP address or network" % (value,))
        return kind, str(network)
    value = normalAddress(value)
    if not value or "@" not in value or any(c.isspace() for c in value):
        raise ValueError(
            "%r is not an address, @domain or @.domain (from:/to:)" % (value,)
        )
    return kind, value


def _whitelistKey(kind: str, value: str) -> bytes:
    return b"\0".join([b"w", kind.encode(), value.encode("utf-8", "surrogateescape")])


def _addressKeys(kind: str, address: str) -> List[bytes]:
    """
    The whitelist keys that match an address: itself, its @domain and
    @.parent of each parent domain.
    """
    keys = [_whitelistKey(kind, address)]
    _, at, domain = address.rpartition("@")
    if at and domain:
        keys.append(_whitelistKey(kind, "@" + domain))
        labels = domain.split(".")
        for i in range(len(labels)):
            keys.append(_whitelistKey(kind, "@." + ".".join(labels[i:])))
    return keys


def _networkKeys(host: str) -> List[bytes]:
    address = ipaddress.ip_address(host)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return [
        _whitelistKey(
            "cltaddr",
            str(ipaddress.ip_network("%s/%d" % (address, bits), strict=False)),
        )
        for bits in range(address.max_prefixlen, -1, -1)
    ]


class GreylistDatabase:
    """
    The greylist file (see the module docstring).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.lockPath = path + ".lock"

    @contextlib.contextmanager
    def _open(self, write: bool) -> Iterator[Any]:
        """
        The database, open under the lock; C{None} when reading a file
        that does not exist yet.
        """
        directory = os.path.dirname(self.path)
        if write and directory:
            os.makedirs(directory, exist_ok=True)
        lockFd = (
            os.open(
                self.lockPath,
                os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                0o640,
            )
            if write or os.path.exists(self.lockPath)
            else None
        )
        try:
            if lockFd is not None:
                fcntl.flock(lockFd, fcntl.LOCK_EX if write else fcntl.LOCK_SH)
            if not write and not os.path.exists(self.path):
                yield None
                return
            d = db.DB()
            try:
                d.open(
                    self.path,
                    dbtype=db.DB_HASH,
                    flags=db.DB_CREATE if write else db.DB_RDONLY,
                    mode=0o640,
                )
                yield d
            finally:
                d.close()
        finally:
            if lockFd is not None:
                os.close(lockFd)

    def _whitelisted(
        self, d: Any, host: Optional[str], sender: str, recipient: str
    ) -> bool:
        keys = []  # type: List[bytes]
        if host is not None:
            try:
                keys.extend(_networkKeys(host))
            except ValueError:
                pass
        if sender:
            keys.extend(_addressKeys("from", sender))
        keys.extend(_addressKeys("to", recipient))
        return any(d.get(k) is not None for k in keys)

    def check(
        self,
        triplet: Triplet,
        now: float,
        policy: Policy,
        host: Optional[str] = None,
    ) -> Verdict:
        """
        Record an attempt of C{triplet} at C{now} and say whether it
        passes.

        @param host: the client's address, for the whitelist.
        """
        with self._open(write=True) as d:
            if self._whitelisted(d, host, triplet.sender, triplet.recipient):
                return Verdict("whitelisted")
            key = triplet.key()
            data = d.get(key)
            record = Record.decode(data) if data is not None else None
            if record is None or record.expired(now, policy):
                if policy.delay <= 0:
                    d.put(key, Record(now, now, 1, True).encode())
                    return Verdict("passed")
                d.put(key, Record(now, now, 1, False).encode())
                return Verdict("new", policy.delay)
            record.count += 1
            record.last = now
            if record.passed:
                d.put(key, record.encode())
                return Verdict("known")
            waited = now - record.first
            if waited >= policy.delay:
                record.passed = True
                d.put(key, record.encode())
                return Verdict("passed")
            d.put(key, record.encode())
            return Verdict("early", policy.delay - waited)

    def expire(self, now: float, policy: Policy) -> int:
        """
        Remove the triplets that expired.

        @return: how many.
        """
        removed = 0
        with self._open(write=True) as d:
            cursor = d.cursor()
            try:
                item = cursor.first()
                while item is not None:
                    key, data = item
                    if key.startswith(b"t\0"):
                        record = Record.decode(data)
                        if record is None or record.expired(now, policy):
                            cursor.delete()
                            removed += 1
                    item = cursor.next()
            finally:
                cursor.close()
        return removed

    def entries(self) -> List[Tuple[str, Tuple[str, ...], Optional[Record]]]:
        """
        Every entry: C{("triplet", (network, sender, recipient), record)}
        and C{("whitelist", (kind, value), None)}, sorted.
        """
        out = []  # type: List[Tuple[str, Tuple[str, ...], Optional[Record]]]
        with self._open(write=False) as d:
            if d is None:
                return out
            cursor = d.cursor()
            try:
                item = cursor.first()
                while item is not None:
                    key, data = item
                    parts = tuple(
                        p.decode("utf-8", "surrogateescape") for p in key.split(b"\0")
                    )
                    if parts[0] == "t" and len(parts) == 4:
                        out.append(("triplet", parts[1:], Record.decode(data)))
                    elif parts[0] == "w" and len(parts) == 3:
                        out.append(("whitelist", parts[1:], None))
                    item = cursor.next()
            finally:
                cursor.close()
        out.sort(key=lambda e: (e[0], e[1]))
        return out

    def whitelist(self, entry: str) -> Tuple[str, str]:
        """
        Add a whitelist entry (see L{parseEntry}).

        @return: the entry in its normal form.
        @raise ValueError: the entry cannot be understood.
        """
        kind, value = parseEntry(entry)
        with self._open(write=True) as d:
            d.put(_whitelistKey(kind, value), b"1")
        return kind, value

    def remove(self, *what: str) -> int:
        """
        Remove a whitelist entry (one argument, as L{whitelist} takes it)
        or triplets: C{(network, sender, recipient)}, where C{"*"} matches
        anything (C{remove("192.0.2.0/24", "*", "*")}) and a network or
        address those of the triplets it overlaps (C{"192.0.2.7"} matches
        C{192.0.2.0/24}).

        @return: how many entries were removed.
        @raise ValueError: neither one entry nor three fields.
        """
        if len(what) == 1:
            kind, value = parseEntry(what[0])
            with self._open(write=True) as d:
                key = _whitelistKey(kind, value)
                if d.get(key) is None:
                    return 0
                d.delete(key)
                return 1
        if len(what) != 3:
            raise ValueError(
                "remove takes a whitelist entry, or NETWORK SENDER RECIPIENT"
            )
        network, sender, recipient = what
        within = None  # type: Any
        if network != "*":
            within = ipaddress.ip_network(network, strict=False)
        if sender != "*":
            sender = normalAddress(sender)
        if recipient != "*":
            recipient = normalAddress(recipient)

        def matches(fields: List[str]) -> bool:
            if within is not None:
                try:
                    if not within.overlaps(ipaddress.ip_network(fields[0])):
                        return False
                except (ValueError, TypeError):
                    return False
            return sender in ("*", fields[1]) and recipient in ("*", fields[2])

        removed = 0
        with self._open(write=True) as d:
            cursor = d.cursor()
            try:
                item = cursor.first()
                while item is not None:
                    parts = item[0].split(b"\0")
                    if parts[0] == b"t" and len(parts) == 4:
                        fields = [
                            p.decode("utf-8", "surrogateescape") for p in parts[1:]
                        ]
                        if matches(fields):
                            cursor.delete()
                            removed += 1
                    item = cursor.next()
            finally:
                cursor.close()
        return removed

# -*- test-case-name: smx.maps.test.test_integration_resolver,smx.maps.test.test_access -*-
"""
The mailertable (seed §5.8.3): where mail for a domain goes.

Grammar (the seed's typeset shows C{~} and C{lmtpl:}/C{esmtpl:}; those
are rendering artefacts of C{^}, C{lmtp:} and C{esmtp:}, which are what
smx accepts)::

    entry    ::= lhs " "+ rhs
    lhs      ::= [ "." ] hostname | "."
    rhs      ::= [ port "^" ] [ mailer ":" ] hostlist
    mailer   ::= "lmtp" | "esmtp"
    hostlist ::= host [ " "+ hostlist ]
    host     ::= "[" IPv4-address "]" | "[IPv6:" IPv6-address "]" | hostname

The default mailer is C{esmtp}.  A host name is subject to MX lookups; an
address literal is used as is.  C{lmtp:} without hosts means local
delivery over the C{LMTP_socket} of SMTPC (a I{local domain}, seed
§6.3.1); C{lmtp:} with hosts speaks LMTP over TCP to them.  C{esmtp:}
without hosts routes by the MX records of the recipient's domain (useful
to override a C{.} default).  Lines starting with C{#} and empty lines
are ignored.  Keys are lower-cased (seed §9.3).

Lookup (seed §5.11.1): C{sub2.sub1.tld}, C{.sub1.tld}, C{.tld}, then C{.}.

The file must exist (an empty file is valid).  It is a text file; a name
ending in C{.db} is read as a Berkeley DB hash map made by C{smx
createmap} (C{domain value} entries).  A line that does not parse raises
L{MapError} naming C{file:line}.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Dict, Iterable, List, NamedTuple, Optional, Tuple

from smx.maps import lookup
from smx.maps.errors import MapError, MapTemporaryError

MAILERS = ("esmtp", "lmtp")

_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*\.?$"
)


class Host(NamedTuple):
    """
    One host of a mailertable entry.

    @ivar name: a host name, or the address of a literal.
    @ivar literal: C{True} for C{[address]}.
    """

    name: str
    literal: bool


class MailertableEntry(NamedTuple):
    """
    A parsed right-hand side.

    @ivar mailer: C{"esmtp"} or C{"lmtp"}.
    @ivar port: the port, or C{None} for the default.
    @ivar hosts: the hosts, in order.
    """

    mailer: str
    port: Optional[int]
    hosts: Tuple[Host, ...]

    @property
    def local(self) -> bool:
        """
        Is this a local domain (C{lmtp:} to the LMTP socket)?
        """
        return self.mailer == "lmtp" and not self.hosts


def parseHost(text: str) -> Host:
    """
    Parse one host of a host list.

    @raise ValueError: with the reason.
    """
    if text.startswith("["):
        if not text.endswith("]"):
            raise ValueError("unterminated address literal %r" % (text,))
        inner = text[1:-1]
        if inner[:5].lower() == "ipv6:":
            try:
                return Host(str(ipaddress.IPv6Address(inner[5:])), True)
            except ValueError:
                raise ValueError("bad IPv6 address literal %r" % (text,))
        try:
            return Host(str(ipaddress.IPv4Address(inner)), True)
        except ValueError:
            raise ValueError("bad IPv4 address literal %r" % (text,))
    name = text.lower()
    if not _HOSTNAME.match(name):
        raise ValueError("bad host name %r" % (text,))
    return Host(name.rstrip("."), False)


def parseRHS(rhs: str) -> MailertableEntry:
    """
    Parse a mailertable right-hand side.

    @raise ValueError: with the reason.
    """
    words = rhs.split()
    if not words:
        raise ValueError("missing right-hand side")
    first = words[0]
    port = None  # type: Optional[int]
    if "^" in first:
        p, _, first = first.partition("^")
        if not p.isdigit() or not 0 < int(p) < 65536:
            raise ValueError("bad port %r" % (p,))
        port = int(p)
    mailer = "esmtp"
    if ":" in first and not first.startswith("["):
        m, _, first = first.partition(":")
        if m.lower() not in MAILERS:
            raise ValueError("unknown mailer %r (use esmtp or lmtp)" % (m,))
        mailer = m.lower()
    hostWords = ([first] if first else []) + words[1:]
    hosts = tuple(parseHost(h) for h in hostWords)
    if not hosts and not (mailer == "lmtp" or mailer == "esmtp" and ":" in words[0]):
        raise ValueError("no host in %r" % (rhs,))
    return MailertableEntry(mailer, port, hosts)


def parseMailertable(
    lines: Iterable[str], filename: str = "mt"
) -> Dict[str, MailertableEntry]:
    """
    Parse mailertable text.

    @raise MapError: naming C{filename:line} for a line that does not parse.
    """
    table = {}  # type: Dict[str, MailertableEntry]
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        parts = text.split(None, 1)
        if len(parts) < 2:
            raise MapError(
                "%s:%d: mailertable entry %r has no right-hand side"
                % (filename, number, text)
            )
        lhs = parts[0].lower()
        if lhs != "." and not _HOSTNAME.match(lookup.asciiDomain(lhs.lstrip("."))):
            raise MapError("%s:%d: bad domain %r" % (filename, number, parts[0]))
        try:
            entry = parseRHS(parts[1])
        except ValueError as e:
            raise MapError("%s:%d: %s" % (filename, number, e))
        if lhs != ".":
            lhs = lhs.rstrip(".") if not lhs.startswith(".") else lhs
        table.setdefault(lhs, entry)
    return table


def loadMailertable(path: str) -> Dict[str, MailertableEntry]:
    """
    Read the mailertable file C{path} (text, or a hash map for C{*.db}).

    @raise MapError: if it does not exist, cannot be read or does not
        parse.
    """
    if path.endswith(".db"):
        return _loadHash(path)
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.readlines()
    except OSError as e:
        raise MapError("%s: cannot read mailertable: %s" % (path, e.strerror))
    return parseMailertable(lines, path)


def _loadHash(path: str) -> Dict[str, MailertableEntry]:
    from smx.maps.hashmap import openHashFile

    try:
        handle = openHashFile(path)
    except MapTemporaryError as e:
        raise MapError(str(e))
    try:
        lines = []
        cursor = handle.cursor()
        rec = cursor.first()
        while rec:
            key = rec[0].rstrip(b"\0").decode("utf-8", "replace")
            value = rec[1].rstrip(b"\0").decode("utf-8", "replace")
            lines.append("%s %s" % (key, value))
            rec = cursor.next()
        cursor.close()
    finally:
        handle.close()
    return parseMailertable(lines, path)


class Mailertable:
    """
    A loaded mailertable.

    @ivar path: its file name (C{None} for one built from text).
    @ivar entries: lower-case left-hand side -> L{MailertableEntry}.
    """

    def __init__(
        self, entries: Dict[str, MailertableEntry], path: Optional[str] = None
    ):
        self.entries = entries
        self.path = path

    @classmethod
    def fromFile(cls, path: str) -> "Mailertable":
        """
        @raise MapError: as L{loadMailertable}.
        """
        return cls(loadMailertable(path), path)

    @classmethod
    def fromText(cls, text: str, filename: str = "mt") -> "Mailertable":
        """
        @raise MapError: as L{parseMailertable}.
        """
        return cls(parseMailertable(text.splitlines(), filename))

    def reopen(self) -> None:
        """
        Read the file again; on error the old table stays in force.

        @raise MapError: if the new file is bad.
        """
        if self.path is not None:
            self.entries = loadMailertable(self.path)

    def find(self, domain: str) -> Optional[Tuple[str, MailertableEntry]]:
        """
        The entry for C{domain} by the domain lookup order with C{.}.

        @return: C{(key, entry)} or C{None}.
        """
        for key in lookup.domainKeys(domain, withDefault=True):
            entry = self.entries.get(key)
            if entry is not None:
                return key, entry
        return None

    def isLocal(self, domain: str) -> bool:
        """
        Is C{domain} a local domain (its entry is C{lmtp:} without hosts)?
        """
        found = self.find(domain)
        return found is not None and found[1].local

    def localDomains(self) -> List[str]:
        """
        The left-hand sides of the local entries.
        """
        return sorted(k for k, e in self.entries.items() if e.local)

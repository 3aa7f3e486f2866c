# -*- test-case-name: smx.maps.test.test_lookup -*-
"""
The lookup orders of seed §5.11.1: which keys are tried, in which order,
when an item is looked up in a map.

These are pure functions of their input (no map, no I/O); the access map,
the aliases and the mailertable use them.  They are table-tested with the
input/expected-output files C{smx/maps/test/data/*.in} and C{*.ref}.

Domains::

    sub2.sub1.tld -> sub2.sub1.tld, .sub1.tld, .tld [, .]

IPv4 addresses::

    A.B.C.D -> A.B.C.D, A.B.C, A.B, A

IPv6 addresses (the analogous scheme, an smx extension): the compressed
form (RFC 5952), then the eight groups of the full address without leading
zeros, then the first seven, six, ..., one groups joined by C{:}::

    2001:db8::1 -> 2001:db8::1, 2001:db8:0:0:0:0:0:1, 2001:db8:0:0:0:0:0,
                   ..., 2001:db8, 2001

An IPv4-mapped IPv6 address (C{::ffff:A.B.C.D}) is looked up as IPv4.

Internationalised domains (RFC 6531, IDNA 2008 with the UTS #46
mapping): a domain with U-labels or A-labels is tried as given, in A-labels
and in U-labels, at each level (C{bücher.example}, C{xn--bcher-kva.
example}, C{.example}), so that a map key written either way matches an
address written either way; the same holds for the domain part of
address keys.  A domain that is not valid IDNA is tried as given only.

Addresses C{user+detail@host} (C{+} is the C{address_delimiter}): for
every domain key of C{host} (without C{.}), the keys C{user+detail@d}
(if a detail exists), C{user++@d} (if the detail is not empty),
C{user+*@d} (if a detail exists), C{user*@d}, C{user@d} (if no detail
exists), C{@d}; then, if asked for, the local part alone: C{user+detail},
C{user++}, C{user+*}, C{user*}, C{user}, with the same conditions.  The
second C{+} of C{user++} and the C{*} are fixed metacharacters; the first
C{+} is the delimiter.  The detail starts at the first delimiter that is
not the first character of the local part.
"""

from __future__ import annotations

import functools
import ipaddress
from typing import List, NamedTuple, Optional, Tuple

import idna


class AddressKey(NamedTuple):
    """
    One key of the address lookup order, with what it matched (for the
    macro replacement of seed §5.11.3).

    @ivar key: the key to look up.
    @ivar user: the user part of the local part (before the delimiter).
    @ivar detail: the detail (after the delimiter) or C{None} if there is
        no delimiter.
    @ivar domain: the domain of the address (C{""} if it had none).
    @ivar pattern: the domain part of the key (C{"host"}, C{".domain"}) or
        C{None} for a local-part-only key.
    @ivar subdomain: the part of C{domain} before C{pattern} when the
        pattern starts with a dot (C{"host"} for C{host.domain} matched by
        C{.domain}), else C{""}.
    """

    key: str
    user: str
    detail: Optional[str]
    domain: str
    pattern: Optional[str]
    subdomain: str


def domainKeys(domain: str, withDefault: bool = False) -> List[str]:
    """
    The lookup order of a domain name (seed §5.11.1).

    @param domain: a host or domain name; a trailing dot is ignored.
    @param withDefault: also try C{"."} last (the mailertable does).
    @return: the keys, most specific first.
    """
    domain = domain.lower().rstrip(".")
    keys = []  # type: List[str]
    if domain:
        forms = [f.split(".") for f in _domainForms(domain)]
        for i in range(len(forms[0])):
            for labels in forms:
                key = ".".join(labels[i:])
                key = "." + key if i else key
                if i < len(labels) and key not in keys:
                    keys.append(key)
    if withDefault:
        keys.append(".")
    return keys


def asciiDomain(domain: str) -> str:
    """
    C{domain} in A-labels if it has U-labels and is valid IDNA, else as
    it is (for syntax checks of map keys).
    """
    if domain.isascii():
        return domain
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError):
        return domain


@functools.lru_cache(maxsize=4096)
def _domainForms(domain: str) -> Tuple[str, ...]:
    """
    C{domain} (lower case) and, if it is internationalised, its forms in
    A-labels and in U-labels.
    """
    if domain.isascii() and "xn--" not in domain:
        return (domain,)
    try:
        ascii = idna.encode(domain, uts46=True).decode("ascii").lower()
        unicode = idna.decode(ascii).lower()
    except (idna.IDNAError, UnicodeError):
        return (domain,)
    forms = [domain]
    for form in (ascii, unicode):
        if form not in forms and form.count(".") == domain.count("."):
            forms.append(form)
    return tuple(forms)


def ipKeys(address: str) -> List[str]:
    """
    The lookup order of an IPv4 or IPv6 address (seed §5.11.1).

    @param address: the address as text; anything that is not an IP
        address yields just itself.
    """
    return list(_ipKeys(address))


@functools.lru_cache(maxsize=4096)
def _ipKeys(address: str) -> Tuple[str, ...]:
    # clients come back: parsing an address is the costly part
    return tuple(_computeIPKeys(address))


def _computeIPKeys(address: str) -> List[str]:
    text = address.strip().lower()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if text.startswith("ipv6:"):
        text = text[5:]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return [text] if text else []
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if isinstance(ip, ipaddress.IPv4Address):
        parts = str(ip).split(".")
        return [".".join(parts[:n]) for n in range(4, 0, -1)]
    groups = ["%x" % (int(g, 16),) for g in ip.exploded.split(":")]
    keys = [ip.compressed]
    full = ":".join(groups)
    if full != ip.compressed:
        keys.append(full)
    keys.extend(":".join(groups[:n]) for n in range(7, 0, -1))
    return keys


def splitAddress(address: str, delimiter: str = "+") -> Tuple[str, Optional[str], str]:
    """
    Split an address into user, detail and domain.

    @param address: C{local@domain} or C{local}, angle brackets allowed.
    @param delimiter: the C{address_delimiter}, one character.
    @return: C{(user, detail, domain)}; C{detail} is C{None} when the local
        part has no delimiter (after its first character).
    """
    address = address.strip()
    if address.startswith("<") and address.endswith(">"):
        address = address[1:-1]
    local, at, domain = address.rpartition("@")
    if not at:
        local, domain = address, ""
    detail = None  # type: Optional[str]
    user = local
    if delimiter:
        pos = local.find(delimiter, 1)
        if pos > 0:
            user, detail = local[:pos], local[pos + len(delimiter) :]
    return user, detail, domain.rstrip(".")


def _localKeys(user: str, detail: Optional[str], delimiter: str) -> List[str]:
    keys = []
    if detail is not None:
        keys.append(user + delimiter + detail)
        if detail:
            keys.append(user + delimiter + "+")
        keys.append(user + delimiter + "*")
    keys.append(user + "*")
    if detail is None:
        keys.append(user)
    return keys


def addressLookupKeys(
    address: str,
    delimiter: str = "+",
    localPart: bool = True,
    domains: bool = True,
) -> List[AddressKey]:
    """
    The lookup order of an RFC 5321 address (seed §5.11.1), with what each
    key matched.

    @param address: the address, lower-cased by the caller or not (keys are
        lower-cased here).
    @param delimiter: the C{address_delimiter}.
    @param localPart: add the local-part-only keys (step 2).
    @param domains: add the keys with a domain (step 1).
    """
    return list(_addressLookupKeys(address.lower(), delimiter, localPart, domains))


@functools.lru_cache(maxsize=4096)
def _addressLookupKeys(
    address: str, delimiter: str, localPart: bool, domains: bool
) -> Tuple[AddressKey, ...]:
    # senders and recipients repeat: building the keys is the costly part
    return tuple(_computeAddressKeys(address, delimiter, localPart, domains))


def _computeAddressKeys(
    address: str, delimiter: str, localPart: bool, domains: bool
) -> List[AddressKey]:
    user, detail, domain = splitAddress(address, delimiter)
    local = _localKeys(user, detail, delimiter)
    keys = []  # type: List[AddressKey]
    if domains and domain:
        forms = _domainForms(domain.rstrip("."))
        for pattern in domainKeys(domain):
            sub = ""
            if pattern.startswith("."):
                form = next((f for f in forms if f.endswith(pattern)), domain)
                sub = form[: len(form) - len(pattern)]
            for lk in local:
                keys.append(
                    AddressKey(lk + "@" + pattern, user, detail, domain, pattern, sub)
                )
            keys.append(AddressKey("@" + pattern, user, detail, domain, pattern, sub))
    if localPart:
        for lk in local:
            keys.append(AddressKey(lk, user, detail, domain, None, ""))
    return keys


def addressKeys(
    address: str, delimiter: str = "+", localPart: bool = True, domains: bool = True
) -> List[str]:
    """
    The keys of L{addressLookupKeys} alone.
    """
    return [k.key for k in addressLookupKeys(address, delimiter, localPart, domains)]

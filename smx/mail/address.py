# -*- test-case-name: smx.mail.test.test_address -*-
"""
RFC 5321 paths: strict parsing of the argument of C{MAIL FROM:} and
C{RCPT TO:} (seed §9.1) and the normalisation SMTPS applies before a relay
decision (seed §5.8.3, issue 3).

A path must be in angle brackets, directly after the colon; the mailbox is
C{Local-part "@" Domain} where the local part is a dot-string or a quoted
string and the domain a host name or an address literal.  A source route
(C{<@a,@b:user@c>}) is accepted and dropped, as RFC 5321 §4.1.1.3 and
App. C say.

L{effectiveAddress} resolves the old tricks that would let a recipient
name a different destination than its domain says: the percent hack
(C{user%other@here}), bang paths (C{other!user@here}) and quoted local
parts containing C{@} (C{"user@other"@here}).  The relay decision is made
on the address they really name, so none of them opens a relay.

Internationalised addresses (RFC 6531 §3.3): a local part may contain
UTF-8 characters and a domain U-labels; L{parsePath} accepts them (the
server core allows them only with C{MAIL ... SMTPUTF8}).  A domain with
U-labels or A-labels must be valid IDNA 2008 (with the UTS #46 mapping);
L{domainKey} gives one form of a domain, its A-labels in lower case, so
that C{bücher.example} and C{xn--bcher-kva.example} compare and look up
as equal while the address keeps its original form for display.
"""

from __future__ import annotations

import re
from typing import List, Optional, Tuple

import idna

# UTF8-non-ascii (RFC 6531 §3.3): the server core passes non-ASCII text
# only for MAIL and RCPT, and lets it through only with SMTPUTF8
_U = "\u0080-\U0010ffff"
# RFC 5321 §4.1.2 atext (RFC 5322), RFC 6531 §3.3
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~" + _U + "-]"
_DOT_STRING = r"%s+(?:\.%s+)*" % (_ATEXT, _ATEXT)
# qtextSMTP is %d32-33 / %d35-91 / %d93-126; quoted-pairSMTP is %d92 %d32-126
_QUOTED = r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e' + _U + r']|\\[\x20-\x7e])*"'
# an LDH label or a U-label (checked with IDNA by parsePath)
_LABEL = r"[A-Za-z0-9%s](?:[A-Za-z0-9%s-]*[A-Za-z0-9%s])?" % (_U, _U, _U)
_DOMAIN = r"%s(?:\.%s)*" % (_LABEL, _LABEL)
_IPV4 = r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}"
_LITERAL = r"\[(?:%s|IPv6:[0-9A-Fa-f:.]+|%s:[\x21-\x5a\x5e-\x7e]+)\]" % (
    _IPV4,
    r"[A-Za-z0-9-]*[A-Za-z0-9]",
)
_MAILBOX = r"(?:%s|%s)@(?:%s|%s)" % (_DOT_STRING, _QUOTED, _DOMAIN, _LITERAL)
_ADL = r"@%s(?:,@%s)*:" % (_DOMAIN, _DOMAIN)

_PATH = re.compile(r"<(%s)?(%s)>" % (_ADL, _MAILBOX))
_POSTMASTER = re.compile(r"<(postmaster)>", re.IGNORECASE)
_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*\Z")
#: RFC 6531 §3.3 adds UTF8-non-ascii (taken only with SMTPUTF8)
_VALUE = re.compile(r"[\x21-\x3c\x3e-\x7e\x80-\U0010ffff]+\Z")

#: longest path (RFC 5321 §4.5.3.1.3)
MAX_PATH = 256
#: longest local part and domain (RFC 5321 §4.5.3.1.1-2)
MAX_LOCAL = 64
MAX_DOMAIN = 255


class PathSyntaxError(ValueError):
    """
    The argument of MAIL or RCPT is not an RFC 5321 path with valid
    parameters.

    @ivar code: the reply code, 501 (path) or 555 (parameters).
    @ivar dsn: the enhanced status code.
    """

    def __init__(self, text: str, code: int = 501, dsn: str = "5.5.2") -> None:
        ValueError.__init__(self, text)
        self.text = text
        self.code = code
        self.dsn = dsn


def parsePath(
    argument: str, allowNull: bool, allowPostmaster: bool = False
) -> Tuple[str, List[Tuple[str, Optional[str]]]]:
    """
    Parse the text after C{FROM:} or C{TO:}.

    @param argument: everything after the colon, e.g.
        C{"<a@b.example> SIZE=100"}.
    @param allowNull: accept C{<>} (the reverse path of MAIL).
    @param allowPostmaster: accept C{<postmaster>} without a domain (RCPT).
    @return: C{(mailbox, parameters)}: the mailbox without angle brackets
        and without a source route (C{""} for C{<>}), and the
        C{(KEYWORD, value-or-None)} pairs, keywords upper-cased.
    @raise PathSyntaxError: for anything else.
    """
    if allowNull and argument.startswith("<>"):
        mailbox = ""
        rest = argument[2:]
    else:
        m = _PATH.match(argument)
        if m is not None:
            mailbox = m.group(2)
            local, _, domain = mailbox.rpartition("@")
            if (
                len(local.encode("utf-8")) > MAX_LOCAL
                or len(domain.encode("utf-8")) > MAX_DOMAIN
            ):
                raise PathSyntaxError("path too long", 501, "5.5.2")
            if not domain.isascii() or "xn--" in domain.lower():
                try:
                    domainKey(domain)
                except ValueError:
                    raise PathSyntaxError("bad internationalised domain", 553, "5.1.3")
        else:
            m = _POSTMASTER.match(argument) if allowPostmaster else None
            if m is None:
                raise PathSyntaxError("path", 501, "5.5.2")
            mailbox = m.group(1)
        if len(argument[: m.end()].encode("utf-8")) > MAX_PATH:
            raise PathSyntaxError("path too long", 501, "5.5.2")
        rest = argument[m.end() :]
    return mailbox, parseParameters(rest)


def parseParameters(rest: str) -> List[Tuple[str, Optional[str]]]:
    """
    Parse C{Mail-parameters} / C{Rcpt-parameters}: C{SP esmtp-param}*.

    @raise PathSyntaxError: (501) for a malformed list.
    """
    if not rest:
        return []
    if not rest.startswith(" "):
        raise PathSyntaxError("Syntax error after path", 501, "5.5.2")
    params = []  # type: List[Tuple[str, Optional[str]]]
    for word in rest[1:].split(" "):
        keyword, eq, value = word.partition("=")
        if not _KEYWORD.match(keyword) or (eq and not _VALUE.match(value)):
            raise PathSyntaxError("Syntax error in parameters", 501, "5.5.4")
        params.append((keyword.upper(), value if eq else None))
    return params


def domainKey(domain: str) -> str:
    """
    The form of C{domain} to compare and look up: its A-labels, lower
    case (C{"Bücher.Example"} and C{"xn--bcher-kva.example"} both give
    C{"xn--bcher-kva.example"}).  ASCII domains without A-labels and
    address literals are only lower-cased.

    @raise ValueError: a U-label or A-label that is not valid IDNA 2008
        (after the UTS #46 mapping).
    """
    if domain.startswith("["):
        return domain.lower()
    if domain.isascii() and "xn--" not in domain.lower():
        return domain.lower()
    try:
        return idna.encode(domain, uts46=True).decode("ascii").lower()
    except (idna.IDNAError, UnicodeError) as e:
        raise ValueError("bad internationalised domain %r: %s" % (domain, e))


def addressKey(address: str) -> str:
    """
    C{address} with its domain in the form of L{domainKey} (the local
    part as it is); an address whose domain is not valid IDNA is given
    back unchanged.
    """
    local, at, domain = address.rpartition("@")
    if not at:
        return address
    try:
        return "%s@%s" % (local, domainKey(domain))
    except ValueError:
        return address


def unquoteLocal(local: str) -> str:
    """
    The local part without its quotes and quoted-pair backslashes.
    """
    if len(local) >= 2 and local[0] == '"' and local[-1] == '"':
        return re.sub(r"\\(.)", r"\1", local[1:-1])
    return local


def splitMailbox(mailbox: str) -> Tuple[str, str]:
    """
    @return: C{(localPart, domain)}; the local part as written (quoted if it
        was), the domain as written (C{""} for C{postmaster}).
    """
    local, at, domain = mailbox.rpartition("@")
    if not at:
        return mailbox, ""
    return local, domain


def effectiveAddress(mailbox: str) -> str:
    """
    The address a recipient really names, for the relay decision.

    C{"a@b"@here}, C{a%b@here} and C{b!a@here} all name C{a@b}; this is
    applied repeatedly (C{a%b%c@here} names C{a%b@c} names C{a@b}... by the
    rightmost C{%}, like sendmail).  The domain is lower-cased, an
    internationalised one in A-labels (L{domainKey}).

    @param mailbox: a mailbox as returned by L{parsePath}.
    @return: C{local@domain}, or the mailbox unchanged if it has no domain.
    """
    local, domain = splitMailbox(mailbox)
    if not domain:
        return mailbox
    for _ in range(16):
        plain = unquoteLocal(local)
        if "@" in plain:
            local, _, domain = plain.rpartition("@")
        elif "%" in plain:
            local, _, domain = plain.rpartition("%")
        elif "!" in plain:
            domain, _, local = plain.partition("!")
        else:
            break
    else:
        # more nesting than any legitimate address has: name nothing
        return "@"
    if local and (local != unquoteLocal(local) or _needsQuotes(local)):
        local = local if local.startswith('"') else _quote(local)
    try:
        domain = domainKey(domain)
    except ValueError:
        domain = domain.lower()
    return "%s@%s" % (local, domain)


def isRoutingTrick(mailbox: str) -> bool:
    """
    Does C{mailbox} use a percent hack, bang path or a quoted local part
    containing C{@}?
    """
    local, domain = splitMailbox(mailbox)
    plain = unquoteLocal(local)
    return bool(domain) and ("@" in plain or "%" in plain or "!" in plain)


def _needsQuotes(local: str) -> bool:
    return re.fullmatch(_DOT_STRING, local) is None


def _quote(local: str) -> str:
    return '"%s"' % (local.replace("\\", "\\\\").replace('"', '\\"'),)

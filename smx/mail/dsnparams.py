# -*- test-case-name: smx.mail.test.test_dsnparams -*-
"""
The DSN parameters of MAIL and RCPT (RFC 3461 §4, RFC 6533 §3): C{RET=},
C{ENVID=}, C{NOTIFY=} and C{ORCPT=}, their xtext decoded and checked.

Each C{parse*} function returns the value smx keeps in the envelope or
raises L{DSNParameterError} with the reply to give:

    - C{RET}: C{"FULL"} or C{"HDRS"};
    - C{ENVID}: the decoded envelope id (printable ASCII, at most 100
      characters);
    - C{NOTIFY}: C{"NEVER"} or some of C{SUCCESS,FAILURE,DELAY}, upper
      case, in that order;
    - C{ORCPT}: C{"rfc822;address"} with the address decoded, or (RFC
      6533) C{"utf-8;address"} where the address may be UTF-8.
"""

from __future__ import annotations

import re
from typing import Optional

#: RFC 3461 §4: xchar is "!".."~" except "+" and "="; hexchar is "+" HEX HEX
_XTEXT = re.compile(r"(?:[!-*,-<>-~]|\+[0-9A-F]{2})*\Z")
_HEXCHAR = re.compile(r"\+([0-9A-F]{2})")
#: RFC 6533 §3: EmbeddedUnicodeChar
_UNICHAR = re.compile(r"\\x\{([0-9A-F]{2,6})\}")
_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+\Z")
_NOTIFY_ORDER = ("SUCCESS", "FAILURE", "DELAY")


class DSNParameterError(ValueError):
    """A malformed DSN parameter; C{code}, C{dsn}, C{text} are the reply."""

    def __init__(self, text: str, code: int = 501, dsn: str = "5.5.4") -> None:
        ValueError.__init__(self, text)
        self.code = code
        self.dsn = dsn
        self.text = text


def decodeXtext(value: str) -> str:
    """
    Decode RFC 3461 xtext (C{+HH} with upper-case hex).  The octets are
    read as UTF-8: Postfix sends a UTF-8 ORCPT that way (C{+C3+B6}).

    @raise DSNParameterError: not xtext, or not UTF-8 once decoded.
    """
    if not _XTEXT.match(value):
        raise DSNParameterError("Malformed xtext")
    octets = _HEXCHAR.sub(lambda m: chr(int(m.group(1), 16)), value)
    try:
        return octets.encode("latin-1").decode("utf-8")
    except UnicodeDecodeError:
        raise DSNParameterError("Malformed xtext")


def _decodeUtf8Addr(value: str) -> str:
    """
    Decode RFC 6533's utf-8-addr-xtext or utf-8-addr-unitext: xtext with
    C{\\x{HEX}} for any Unicode character, and (unitext) raw non-ASCII
    UTF-8.
    """
    out = []
    i = 0
    while i < len(value):
        c = value[i]
        m = _UNICHAR.match(value, i)
        if m is not None:
            point = int(m.group(1), 16)
            # RFC 6533: only for characters that cannot be written plainly
            if point > 0x10FFFF or 0xD800 <= point <= 0xDFFF:
                raise DSNParameterError("Malformed ORCPT")
            out.append(chr(point))
            i = m.end()
        elif c == "+":
            h = _HEXCHAR.match(value, i)
            if h is None:
                raise DSNParameterError("Malformed ORCPT")
            out.append(chr(int(h.group(1), 16)))
            i = h.end()
        elif c in "=\\" or c <= " " or c == "\x7f" or not c.isprintable():
            raise DSNParameterError("Malformed ORCPT")
        else:
            out.append(c)
            i += 1
    return "".join(out)


_XTEXT_PLAIN = re.compile(r"[!-*,-<>-~]")


def encodeXtext(text: str) -> str:
    """Encode C{text} as xtext: C{+HH} for C{+}, C{=}, and octets outside
    C{!}..C{~}."""
    out = []
    for c in text:
        if _XTEXT_PLAIN.match(c):
            out.append(c)
        else:
            out.extend("+%02X" % (b,) for b in c.encode("utf-8"))
    return "".join(out)


def encodeOrcpt(orcpt: str) -> str:
    """
    The C{ORCPT=} value for a stored C{"type;address"}: xtext, or (an
    address that is not ASCII) RFC 6533's utf-8-addr-xtext with the
    C{utf-8} type, which is ASCII.
    """
    addrType, _, address = orcpt.partition(";")
    if address.isascii() and addrType.lower() != "utf-8":
        return "%s;%s" % (addrType, encodeXtext(address))
    out = []
    for c in address:
        # QCHAR, else EmbeddedUnicodeChar (also for "+", "=", "\\")
        if c.isascii() and " " < c < "\x7f" and c not in "+=\\":
            out.append(c)
        else:
            out.append("\\x{%02X}" % (ord(c),))
    return "utf-8;" + "".join(out)


def parseRet(value: Optional[str]) -> str:
    """C{RET=FULL|HDRS}."""
    ret = (value or "").upper()
    if ret not in ("FULL", "HDRS"):
        raise DSNParameterError("RET must be FULL or HDRS")
    return ret


def parseEnvid(value: Optional[str]) -> str:
    """C{ENVID=xtext}: printable ASCII, at most 100 characters decoded."""
    if not value:
        raise DSNParameterError("Malformed ENVID")
    envid = decodeXtext(value)
    if not (0 < len(envid) <= 100) or not all(" " < c <= "~" for c in envid):
        raise DSNParameterError("Malformed ENVID")
    return envid


def parseNotify(value: Optional[str]) -> str:
    """C{NOTIFY=NEVER} or a list of C{SUCCESS}, C{FAILURE}, C{DELAY}."""
    words = (value or "").upper().split(",")
    if words == ["NEVER"]:
        return "NEVER"
    if (
        not words
        or any(w not in _NOTIFY_ORDER for w in words)
        or len(set(words)) != len(words)
    ):
        raise DSNParameterError(
            "NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY"
        )
    return ",".join(w for w in _NOTIFY_ORDER if w in words)


def parseOrcpt(value: Optional[str], utf8: bool = False) -> str:
    """
    C{ORCPT=addr-type;xtext}; with C{utf8} (SMTPUTF8 given at MAIL) the
    C{utf-8} address type also takes raw UTF-8 (RFC 6533 §3).
    """
    addrType, semi, encoded = (value or "").partition(";")
    if not semi or not _ATOM.match(addrType) or not encoded or len(value or "") > 500:
        raise DSNParameterError("Malformed ORCPT")
    addrType = addrType.lower()
    if addrType == "utf-8":
        if not utf8 and not encoded.isascii():
            raise DSNParameterError("Malformed ORCPT")
        address = _decodeUtf8Addr(encoded)
    else:
        if not encoded.isascii():
            raise DSNParameterError("Malformed ORCPT")
        address = decodeXtext(encoded)
    if not address or not address.isprintable():
        raise DSNParameterError("Malformed ORCPT")
    return "%s;%s" % (addrType, address)


__all__ = [
    "DSNParameterError",
    "decodeXtext",
    "encodeXtext",
    "encodeOrcpt",
    "parseRet",
    "parseEnvid",
    "parseNotify",
    "parseOrcpt",
]

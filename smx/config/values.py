# -*- test-case-name: smx.config.test.test_values -*-
"""
The types of option values: how the text of a value in smx.conf becomes
a typed Python value, and how that value is written back.

Times (seed §5.1.1) are a sequence of numbers with units C{w d h m s} (and
smx's C{ms} and C{us}), e.g. C{1h 5m 12s}, and become C{float} seconds.
Sizes are a sequence of numbers with units C{B KB MB GB} (1 KB = 1024 B)
and become C{int} bytes.  A number without a unit is in the option's
default unit: C{s} and C{B} unless the table says otherwise (C{KB} for
C{max_message_size}, C{us} for C{max_commit_delay}).

Every type raises L{ValueProblem} with the token at fault; the caller
(L{smx.config.build}) turns it into a L{ConfigError} naming the option.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Sequence, Tuple

from smx.config.grammar import SPECIAL, ListValue, Scalar, Token, Value


class ValueProblem(Exception):
    """
    A value does not fit its type.

    @ivar message: what is wrong, e.g. C{"'abc' is not a number"}.
    @ivar token: the token at fault, or C{None} for the whole value.
    """

    def __init__(self, message: str, token: Optional[Token] = None) -> None:
        Exception.__init__(self, message, token)
        self.message = message
        self.token = token


def quoteValue(text: str) -> str:
    """
    Write a string as an smx.conf value: unquoted if it is one plain word,
    otherwise quoted with C-style escapes.
    """
    if text and not any(
        c in SPECIAL or c.isspace() or not c.isprintable() for c in text
    ):
        return text
    out = []
    for c in text:
        if c == "\\":
            out.append("\\\\")
        elif c == '"':
            out.append('\\"')
        elif c == "\n":
            out.append("\\n")
        elif c == "\t":
            out.append("\\t")
        elif c == "\r":
            out.append("\\r")
        elif not c.isprintable() and ord(c) < 256:
            out.append("\\%03o" % (ord(c),))
        else:
            out.append(c)
    return '"%s"' % ("".join(out),)


def shown(text: str) -> str:
    """
    Quote text for an error message.
    """
    if len(text) > 60:
        text = text[:57] + "..."
    return "'%s'" % (text.encode("unicode_escape").decode("ascii"),)


def _short(text: str) -> str:
    """
    Shorten a value for a message about its range.
    """
    return text if len(text) <= 40 else text[:37] + "..."


def closest(word: str, choices: Sequence[str]) -> Optional[str]:
    """
    @return: the choice most like C{word} (compared case-insensitively),
        or C{None} if none is close.
    """
    byLower = {c.lower(): c for c in choices}
    found = difflib.get_close_matches(word.lower(), list(byLower), n=1, cutoff=0.6)
    return byLower[found[0]] if found else None


class ValueType:
    """
    The base of all value types.

    @cvar typeName: the name shown in the reference documentation.
    @cvar isList: whether values are lists (a single value is accepted as a
        list of one).
    @ivar unit: the unit of a bare number, for the documentation.
    """

    typeName = "string"
    isList = False
    unit: Optional[str] = None

    def convert(self, value: Value) -> Any:
        """
        Convert a parsed value.

        @raise ValueProblem: if it does not fit.
        """
        if isinstance(value, ListValue):
            raise ValueProblem(
                "expected a single value, not a list",
                Token("{", "{", value.line, value.column),
            )
        return self.convertText(self.scalarText(value), value.tokens[0])

    def scalarText(self, value: Scalar) -> str:
        """
        The text of a single value that must be one word or quoted string(s).
        """
        if not value.quoted and len(value.tokens) > 1:
            raise ValueProblem(
                "expected ';' after %s (quote a value that contains spaces)"
                % (shown(value.tokens[0].text),),
                value.tokens[1],
            )
        return value.text

    def convertText(self, text: str, token: Token) -> Any:
        return text

    def resolve(self, value: Any, configDirectory: str, queueDirectory: str) -> Any:
        """
        Finish a converted value that depends on where the configuration
        is used (paths, seed §5.6).  The default returns it unchanged.
        """
        return value

    def render(self, value: Any) -> str:
        """
        @return: the value as smx.conf text (the right-hand side).
        """
        return quoteValue(str(value))

    def bounds(self) -> str:
        """
        @return: a description of the allowed range, or C{""}.
        """
        return ""


class String(ValueType):
    """
    Any text, optionally with a check.

    @ivar check: C{None} or a callable that raises L{ValueProblem}
        (with C{None} as token) for text it does not accept.
    """

    def __init__(
        self,
        check: Optional[Callable[[str], None]] = None,
        typeName: str = "string",
        empty: bool = True,
    ) -> None:
        self.check = check
        self.typeName = typeName
        self.empty = empty

    def convertText(self, text: str, token: Token) -> Any:
        if not text and not self.empty:
            raise ValueProblem("the value must not be empty", token)
        if self.check is not None:
            try:
                self.check(text)
            except ValueProblem as e:
                raise ValueProblem(e.message, token)
        return text


def _checkChar(text: str) -> None:
    if len(text) != 1 or text.isspace() or text in '@<>"\\':
        raise ValueProblem(
            "%s is not a single character (other than space, '@', '<', '>', "
            "'\"' and '\\\\')" % (shown(text),)
        )


def Character() -> String:
    """
    Exactly one printable character, e.g. C{address_delimiter}.
    """
    return String(_checkChar, "character", empty=False)


_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")


def _checkName(text: str) -> None:
    if not _NAME.match(text):
        raise ValueProblem(
            "%s is not a name (letters, digits, '_', '-', '.', '+')" % (shown(text),)
        )


def Name() -> String:
    """
    A name such as a section or map name.
    """
    return String(_checkName, "name", empty=False)


class Boolean(ValueType):
    """
    C{yes}/C{no}, C{true}/C{false}, C{on}/C{off}, C{1}/C{0}.
    """

    typeName = "boolean"
    _values = {
        "yes": True,
        "true": True,
        "on": True,
        "1": True,
        "no": False,
        "false": False,
        "off": False,
        "0": False,
    }

    def convertText(self, text: str, token: Token) -> Any:
        try:
            return self._values[text.lower()]
        except KeyError:
            raise ValueProblem(
                "%s is not a boolean (use yes or no)" % (shown(text),), token
            )

    def render(self, value: Any) -> str:
        return "yes" if value else "no"


class Integer(ValueType):
    """
    A decimal integer within bounds.

    @ivar minimum: the smallest allowed value, or C{None}.
    @ivar maximum: the largest allowed value, or C{None}.
    @ivar base: 10, or 8 for modes such as a umask.
    """

    typeName = "integer"

    def __init__(
        self,
        minimum: Optional[int] = 0,
        maximum: Optional[int] = None,
        unit: Optional[str] = None,
        base: int = 10,
    ) -> None:
        self.minimum = minimum
        self.maximum = maximum
        self.unit = unit
        self.base = base
        if base == 8:
            self.typeName = "octal"

    def convertText(self, text: str, token: Token) -> Any:
        digits = "0-7" if self.base == 8 else "0-9"
        if not re.match(r"^[+-]?[%s]+$" % (digits,), text):
            raise ValueProblem(
                "%s is not %s"
                % (
                    shown(text),
                    "an octal number" if self.base == 8 else "an integer",
                ),
                token,
            )
        if len(text.lstrip("+-0")) > 30:
            raise ValueProblem(
                "%s is out of range (%s)" % (_short(text), self.bounds()), token
            )
        value = int(text, self.base)
        self.checkBounds(value, text, token)
        return value

    def checkBounds(self, value: Any, text: str, token: Token) -> None:
        low, high = self.minimum, self.maximum
        if (low is not None and value < low) or (high is not None and value > high):
            raise ValueProblem("%s is out of range (%s)" % (text, self.bounds()), token)

    def render(self, value: Any) -> str:
        if self.base == 8:
            return "0%03o" % (value,)
        return str(value)

    def bounds(self) -> str:
        def fmt(v: Any) -> str:
            return self.render(v)

        if self.minimum is not None and self.maximum is not None:
            return "%s..%s" % (fmt(self.minimum), fmt(self.maximum))
        if self.minimum is not None:
            return ">= %s" % (fmt(self.minimum),)
        if self.maximum is not None:
            return "<= %s" % (fmt(self.maximum),)
        return ""


def Port() -> Integer:
    """
    A TCP port number, 1 to 65535.
    """
    return Integer(1, 65535)


_NUMBER_UNIT = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z\u00b5]*)\s*")


def _amounts(text: str) -> List[Tuple[str, str]]:
    """
    Split C{"1h 5m 12s"} into C{[("1", "h"), ("5", "m"), ("12", "s")]}.

    @raise ValueError: if the text is not such a sequence.
    """
    pos, result = 0, []
    while pos < len(text):
        m = _NUMBER_UNIT.match(text, pos)
        if m is None or m.end() == pos:
            raise ValueError(text)
        result.append((m.group(1), m.group(2)))
        pos = m.end()
    if not result:
        raise ValueError(text)
    return result


class _Quantity(ValueType):
    """
    A number with units; the base of L{Time} and L{Size}.
    """

    units: Dict[str, float] = {}
    example = ""

    def __init__(
        self,
        unit: str,
        minimum: Optional[float] = 0,
        maximum: Optional[float] = None,
        zero: bool = False,
    ) -> None:
        """
        @param zero: whether 0 is allowed too, below C{minimum} (it means
            "no limit" to the option).
        """
        self.unit = unit
        self.minimum = minimum
        self.maximum = maximum
        self.zero = zero

    def convert(self, value: Value) -> Any:
        if isinstance(value, ListValue):
            return ValueType.convert(self, value)
        # unquoted words are joined: "1h 5m 12s" is one time
        return self.convertText(value.text, value.tokens[0])

    def amount(self, text: str, token: Token) -> float:
        try:
            parts = _amounts(text)
        except ValueError:
            raise ValueProblem(
                "%s is not a %s (e.g. %s)" % (shown(text), self.typeName, self.example),
                token,
            )
        total = 0.0
        for number, unit in parts:
            key = unit or self.unit or ""
            factor: Optional[float] = self.units.get(key)
            if factor is None:
                factor = self.units.get(key.lower(), self.units.get(key.upper()))
            if factor is None:
                raise ValueProblem(
                    "unknown %s unit %s in %s (valid: %s)"
                    % (
                        self.typeName,
                        shown(unit),
                        shown(text),
                        ", ".join(self.unitNames),
                    ),
                    token,
                )
            total += float(number) * factor
        if not math.isfinite(total):
            raise ValueProblem("%s is too large" % (shown(text),), token)
        return total

    unitNames: Tuple[str, ...] = ()

    def checkRange(self, value: float, text: str, token: Token) -> None:
        if self.zero and value == 0:
            return
        low, high = self.minimum, self.maximum
        if (low is not None and value < low) or (high is not None and value > high):
            raise ValueProblem("%s is out of range (%s)" % (text, self.bounds()), token)

    def bounds(self) -> str:
        text = ""
        if self.minimum is not None and self.maximum is not None:
            text = "%s..%s" % (self.render(self.minimum), self.render(self.maximum))
        elif self.minimum:
            text = ">= %s" % (self.render(self.minimum),)
        elif self.maximum is not None:
            text = "<= %s" % (self.render(self.maximum),)
        if text and self.zero and self.minimum:
            text = "0 or " + text
        return text


_TIME_UNITS = {
    "w": 7 * 86400.0,
    "d": 86400.0,
    "h": 3600.0,
    "m": 60.0,
    "s": 1.0,
    "ms": 0.001,
    "us": 0.000001,
    "\u00b5s": 0.000001,
}


class Time(_Quantity):
    """
    A duration, stored as C{float} seconds.
    """

    typeName = "time"
    units = _TIME_UNITS
    unitNames = ("w", "d", "h", "m", "s", "ms", "us")
    example = "1h 5m 12s"

    def __init__(
        self,
        unit: str = "s",
        minimum: Optional[float] = 0,
        maximum: Optional[float] = None,
    ) -> None:
        _Quantity.__init__(self, unit, minimum, maximum)

    def convertText(self, text: str, token: Token) -> Any:
        value = self.amount(text, token)
        self.checkRange(value, text, token)
        return value

    def render(self, value: Any) -> str:
        return formatTime(value)


def formatTime(seconds: float) -> str:
    """
    Write a time in the largest unit that divides it: C{432000.0} is
    C{"5d"}, C{3725.0} is C{"3725s"}, C{0.01} is C{"10ms"}.
    """
    if seconds == int(seconds):
        whole = int(seconds)
        if whole == 0:
            return "0s"
        for name in ("w", "d", "h", "m", "s"):
            size = int(_TIME_UNITS[name])
            if whole % size == 0:
                return "%d%s" % (whole // size, name)
    micro = seconds * 1000000
    if abs(micro - round(micro)) < 1e-6:
        micro = round(micro)
        whole = int(seconds)
        if micro % 1000 == 0 and whole == 0:
            return "%dms" % (micro // 1000,)
        if whole == 0:
            return "%dus" % (micro,)
    return "%ss" % (repr(seconds),)


_SIZE_UNITS = {
    "B": 1,
    "KB": 1024,
    "MB": 1024**2,
    "GB": 1024**3,
    "K": 1024,
    "M": 1024**2,
    "G": 1024**3,
}


class Size(_Quantity):
    """
    An amount of data, stored as C{int} bytes.
    """

    typeName = "size"
    units = {k: float(v) for k, v in _SIZE_UNITS.items()}
    unitNames = ("B", "KB", "MB", "GB")
    example = "8MB"

    def __init__(
        self,
        unit: str = "B",
        minimum: Optional[float] = 0,
        maximum: Optional[float] = None,
        zero: bool = False,
    ) -> None:
        _Quantity.__init__(self, unit, minimum, maximum, zero)

    def convertText(self, text: str, token: Token) -> Any:
        value = self.amount(text, token)
        if value > 2**62:
            raise ValueProblem("%s is too large" % (shown(text),), token)
        self.checkRange(value, text, token)
        return int(round(value))

    def render(self, value: Any) -> str:
        return formatSize(value)


def formatSize(size: int) -> str:
    """
    Write a size with the largest unit that divides it: C{8388608} is
    C{"8MB"}.
    """
    size = int(size)
    for name in ("GB", "MB", "KB"):
        factor = _SIZE_UNITS[name]
        if size and size % factor == 0:
            return "%d%s" % (size // factor, name)
    return "%dB" % (size,)


class Enum(ValueType):
    """
    One of a fixed set of words, matched case-insensitively; the value is
    the canonical (table) spelling.
    """

    typeName = "enum"

    def __init__(
        self, choices: Sequence[str], aliases: Optional[Dict[str, str]] = None
    ):
        self.choices = tuple(choices)
        self._byLower = {c.lower(): c for c in self.choices}
        for alias, target in (aliases or {}).items():
            self._byLower[alias.lower()] = target

    def convertText(self, text: str, token: Token) -> Any:
        try:
            return self._byLower[text.lower()]
        except KeyError:
            pass
        guess = closest(text, self.choices)
        hint = "; did you mean %s?" % (shown(guess),) if guess else ""
        raise ValueProblem(
            "%s is not one of %s%s" % (shown(text), ", ".join(self.choices), hint),
            token,
        )

    def bounds(self) -> str:
        return "one of " + ", ".join(self.choices)


def _flagKey(text: str) -> str:
    return re.sub(r"[\s-]+", "_", text.strip()).lower()


class Flags(ValueType):
    """
    A set of flags from a fixed list, written as C{{a, b}} or as one word;
    the value is a C{frozenset} of lower-case names.  Spaces and hyphens
    in a flag count as underscores (the seed writes C{forward secrecy}).
    """

    typeName = "flags"
    isList = True

    def __init__(
        self, choices: Sequence[str], aliases: Optional[Dict[str, str]] = None
    ) -> None:
        self.choices = tuple(c.lower() for c in choices)
        self.spelling = {c.lower(): c for c in choices}
        self._byKey = {c: c for c in self.choices}
        for alias, target in (aliases or {}).items():
            self._byKey[_flagKey(alias)] = target.lower()

    def convert(self, value: Value) -> Any:
        items = value.items if isinstance(value, ListValue) else [value]
        result = set()
        for item in items:
            text = item.text
            try:
                result.add(self._byKey[_flagKey(text)])
            except KeyError:
                guess = closest(_flagKey(text), self.choices)
                hint = "; did you mean %s?" % (shown(guess),) if guess else ""
                raise ValueProblem(
                    "unknown flag %s (valid: %s)%s"
                    % (shown(text), ", ".join(self.choices), hint),
                    item.tokens[0],
                )
        return frozenset(result)

    def render(self, value: Any) -> str:
        names = [self.spelling[c] for c in self.choices if c in value]
        return "{%s}" % (", ".join(names),)

    def bounds(self) -> str:
        return "any of " + ", ".join(self.spelling[c] for c in self.choices)


class ListOf(ValueType):
    """
    A list of strings, C{{a, b}} (a single value is a list of one).

    @ivar item: the type of each element; its C{convertText} checks them.
    @ivar maxItems: the most elements allowed, or C{None}.
    """

    typeName = "list"
    isList = True

    def __init__(
        self,
        item: Optional[ValueType] = None,
        maxItems: Optional[int] = None,
        typeName: str = "list",
    ) -> None:
        self.item = item if item is not None else String(empty=False)
        self.maxItems = maxItems
        self.typeName = typeName

    def convert(self, value: Value) -> Any:
        items = value.items if isinstance(value, ListValue) else [value]
        if self.maxItems is not None and len(items) > self.maxItems:
            raise ValueProblem(
                "at most %d values are allowed, not %d" % (self.maxItems, len(items)),
                items[self.maxItems].tokens[0],
            )
        return [self.item.convert(item) for item in items]

    def render(self, value: Any) -> str:
        return "{%s}" % (", ".join(self.item.render(v) for v in value),)

    def bounds(self) -> str:
        if self.maxItems is not None:
            return "at most %d" % (self.maxItems,)
        return ""


#: where relative paths are resolved from (seed §5.6)
CONFIG_RELATIVE = "configuration directory"
QUEUE_RELATIVE = "queue directory"


class Path(ValueType):
    """
    A file or directory name; relative names are resolved against the
    configuration directory or the queue directory (seed §5.6).

    @ivar base: L{CONFIG_RELATIVE} or L{QUEUE_RELATIVE}.
    @ivar empty: whether the empty string is allowed (it then means the
        base directory itself).
    """

    typeName = "path"

    def __init__(self, base: str, empty: bool = False) -> None:
        self.base = base
        self.empty = empty

    def convertText(self, text: str, token: Token) -> Any:
        if not text and not self.empty:
            raise ValueProblem("the path must not be empty", token)
        if "\0" in text:
            raise ValueProblem("a path cannot contain a NUL character", token)
        return text

    def resolve(self, value: Any, configDirectory: str, queueDirectory: str) -> Any:
        if value is None:
            return None
        base = configDirectory if self.base == CONFIG_RELATIVE else queueDirectory
        return os.path.join(base, value)

    def bounds(self) -> str:
        return "relative to the " + self.base


def _hostPort(text: str, defaultPort: int, hostnames: bool) -> Tuple[str, int]:
    """
    Split C{host:port}, C{:port}, C{host}, C{[v6]:port}, C{[v6]} or a bare
    IPv6 address; check both parts.

    @raise ValueProblem: (without a token) if the text is not acceptable.
    """
    host, port = text, ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueProblem("missing ']' in %s" % (shown(text),))
        host, rest = text[1:end], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueProblem("expected ':port' after ']' in %s" % (shown(text),))
        port = rest[1:]
        if rest and not port:
            raise ValueProblem("missing port after ':' in %s" % (shown(text),))
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueProblem("%s is not an IPv6 address" % (shown(host),))
    elif text.count(":") > 1:
        try:
            ipaddress.IPv6Address(text)
        except ValueError:
            raise ValueProblem(
                "%s is not an address (write IPv6 addresses in brackets, "
                "e.g. [::1]:25)" % (shown(text),)
            )
    else:
        if ":" in text:
            host, port = text.split(":", 1)
            if not port:
                raise ValueProblem("missing port after ':' in %s" % (shown(text),))
        if host:
            _checkHost(host, hostnames)
    number = defaultPort
    if port:
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueProblem("%s is not a port number (1..65535)" % (shown(port),))
        number = int(port)
    if not host:
        host = "0.0.0.0"
    return host, number


_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")


def _checkHost(host: str, hostnames: bool) -> None:
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    if re.match(r"^[0-9.]+$", host) or not hostnames:
        raise ValueProblem("%s is not an IP address" % (shown(host),))
    labels = host.rstrip(".").split(".")
    if len(host) > 253 or not all(_LABEL.match(label) for label in labels):
        raise ValueProblem("%s is not a host name or address" % (shown(host),))


class Address(ValueType):
    """
    An endpoint, C{host:port} and its variants (kept as written; see
    L{splitAddress}).

    @ivar defaultPort: the port when none is written.
    @ivar hostnames: whether host names are allowed (else IP addresses).
    """

    def __init__(self, defaultPort: int, hostnames: bool, typeName: str) -> None:
        self.defaultPort = defaultPort
        self.hostnames = hostnames
        self.typeName = typeName

    def convertText(self, text: str, token: Token) -> Any:
        try:
            _hostPort(text, self.defaultPort, self.hostnames)
        except ValueProblem as e:
            raise ValueProblem(e.message, token)
        return text


def splitAddress(text: str, defaultPort: int) -> Tuple[str, int]:
    """
    Split an address as written for C{daemon_address} or C{nameserver}:
    C{"host:port"}, C{":port"} (host C{0.0.0.0}), C{"host"} (port
    C{defaultPort}), C{"[::1]:25"} or a bare IPv6 address.

    @return: C{(host, port)}; an IPv6 host is returned without brackets.
    @raise ValueError: if C{text} is not such an address.
    """
    try:
        return _hostPort(text, defaultPort, True)
    except ValueProblem as e:
        raise ValueError(e.message)


class IPAddress(ValueType):
    """
    An IPv4 or IPv6 address literal.
    """

    typeName = "IP address"

    def convertText(self, text: str, token: Token) -> Any:
        try:
            ipaddress.ip_address(text)
        except ValueError:
            raise ValueProblem("%s is not an IP address" % (shown(text),), token)
        return text


def flagSet(*names: str) -> FrozenSet[str]:
    """
    @return: a frozenset of lower-case flag names, as L{Flags} values are.
    """
    return frozenset(n.lower() for n in names)

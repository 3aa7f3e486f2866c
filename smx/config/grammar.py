# -*- test-case-name: smx.config.test.test_grammar -*-
"""
The smx.conf grammar of seed §5.1, without any knowledge of the options::

    conf      ::=  entries
    entries   ::=  entry *
    entry     ::=  option | section
    section   ::=  keyword [name ] "{" entries "}" [";"]
    option    ::=  option-name "=" rhs
    rhs       ::=  value ";" | "{" value-list "}" [";"]

A value is one or more quoted strings (adjacent strings are concatenated
as in ANSI C: C{"a" "b"} is C{"ab"}, also over several lines) or one or
more unquoted words on one line (kept apart, so that C{1h 5m 12s} can be
read as a time by the option table).
Unquoted words are runs of characters other than white space and
C{{ } ; , = " #}.  C{#} starts a comment that ends at the end of the line.
Quoted strings may not span lines and know the escapes C{\\n \\t \\r \\\\
\\" \\a \\b \\f \\v}, C{\\ooo} (octal) and C{\\xHH} (hexadecimal).
A line ends with LF, CR LF or a lone CR (files written on Unix, Windows or
old Macs mean the same, and errors name the same lines).

L{parseEntries} turns text into a list of L{OptionEntry} and
L{SectionEntry}; the option table (L{smx.config.build}) gives them meaning.
Every error is a L{ConfigError} naming the file, line and column.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import List, NamedTuple, Optional, Sequence, Tuple, Union

from smx.config.errors import ConfigError

WORD = "word"
STRING = "string"
LBRACE = "{"
RBRACE = "}"
SEMI = ";"
COMMA = ","
EQUALS = "="
EOF = "end of file"

#: characters that end an unquoted word
SPECIAL = frozenset('{};,="#')
#: characters that end a line (C{"\\r\\n"} is one line end)
LINE_ENDS = frozenset("\r\n")
_COMMENT = re.compile(r"#[^\r\n]*")
_PUNCTUATION = {"{": LBRACE, "}": RBRACE, ";": SEMI, ",": COMMA, "=": EQUALS}
_SIMPLE_ESCAPES = {
    "n": "\n",
    "t": "\t",
    "r": "\r",
    "\\": "\\",
    '"': '"',
    "'": "'",
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "v": "\v",
}
_OCTAL = frozenset("01234567")
_HEX = frozenset("0123456789abcdefABCDEF")

#: sections may not be nested deeper than this
MAX_DEPTH = 32


class Token(NamedTuple):
    """
    One lexical token.

    @ivar kind: L{WORD}, L{STRING}, L{EOF} or a punctuation character.
    @ivar text: the word, the string after escape processing, or the
        punctuation character.
    @ivar line: 1-based line of its first character.
    @ivar column: 1-based column of its first character.
    """

    kind: str
    text: str
    line: int
    column: int


@dataclass
class Scalar:
    """
    A single value: one or more tokens of the same kind.

    @ivar tokens: the L{WORD} or L{STRING} tokens, at least one.
    """

    tokens: Tuple[Token, ...]

    @property
    def quoted(self) -> bool:
        """
        Whether the value was written as quoted string(s).
        """
        return self.tokens[0].kind == STRING

    @property
    def text(self) -> str:
        """
        The strings concatenated, or the words joined by one space.
        """
        if self.quoted:
            return "".join(t.text for t in self.tokens)
        return " ".join(t.text for t in self.tokens)

    @property
    def line(self) -> int:
        return self.tokens[0].line

    @property
    def column(self) -> int:
        return self.tokens[0].column


@dataclass
class ListValue:
    """
    A bracketed list of values, C{{ v1, v2 }}.

    @ivar items: the values, possibly none.
    @ivar line: the line of the C{{}.
    @ivar column: the column of the C{{}.
    """

    items: List[Scalar]
    line: int
    column: int


Value = Union[Scalar, ListValue]


@dataclass
class OptionEntry:
    """
    C{name = value;} or C{name = { values };}.

    @ivar equals: the C{=} token (for errors about what should be there).
    """

    name: Token
    value: Value
    equals: Optional[Token] = None


@dataclass
class SectionEntry:
    """
    C{keyword [name] { entries }}.
    """

    keyword: Token
    name: Optional[Token]
    entries: List[Union[OptionEntry, "SectionEntry"]] = field(default_factory=list)
    brace: Optional[Token] = None


Entry = Union[OptionEntry, SectionEntry]


def tokenize(text: str, filename: str = "smx.conf") -> List[Token]:
    """
    Split configuration text into tokens.

    @param text: the whole file.
    @param filename: used in error messages.
    @return: the tokens, ending with an L{EOF} token.
    @raise ConfigError: for an unterminated string, a bad escape or a
        control character outside a string.
    """
    tokens: List[Token] = []
    i, n, line, lineStart = 0, len(text), 1, 0

    def fail(message: str, at: int, atLine: int, atStart: int) -> ConfigError:
        return ConfigError(message, filename, atLine, at - atStart + 1)

    while i < n:
        c = text[i]
        if c in LINE_ENDS:
            i += 2 if text.startswith("\r\n", i) else 1
            line, lineStart = line + 1, i
        elif c.isspace():
            i += 1
        elif c == "#":
            i = _COMMENT.match(text, i).end()  # type: ignore[union-attr]
        elif c in _PUNCTUATION:
            tokens.append(Token(_PUNCTUATION[c], c, line, i - lineStart + 1))
            i += 1
        elif c == '"':
            start = i
            chars: List[str] = []
            i += 1
            while True:
                if i >= n or text[i] in LINE_ENDS:
                    raise fail(
                        "unterminated string (a string cannot span lines; "
                        'write "a" "b" to continue it)',
                        start,
                        line,
                        lineStart,
                    )
                c = text[i]
                if c == '"':
                    i += 1
                    break
                if c != "\\":
                    chars.append(c)
                    i += 1
                    continue
                escape = text[i + 1 : i + 2]
                if escape in _SIMPLE_ESCAPES:
                    chars.append(_SIMPLE_ESCAPES[escape])
                    i += 2
                elif escape and escape in _OCTAL:
                    j = i + 1
                    while j < n and j < i + 4 and text[j] in _OCTAL:
                        j += 1
                    chars.append(chr(int(text[i + 1 : j], 8)))
                    i = j
                elif escape == "x":
                    j = i + 2
                    while j < n and j < i + 4 and text[j] in _HEX:
                        j += 1
                    if j == i + 2:
                        raise fail(
                            "\\x escape without hexadecimal digits in string",
                            i,
                            line,
                            lineStart,
                        )
                    chars.append(chr(int(text[i + 2 : j], 16)))
                    i = j
                elif escape == "" or escape in LINE_ENDS:
                    raise fail(
                        "unterminated string (a string cannot span lines; "
                        'write "a" "b" to continue it)',
                        start,
                        line,
                        lineStart,
                    )
                else:
                    raise fail(
                        "unknown escape sequence %s in string"
                        % (_quote("\\" + escape),),
                        i,
                        line,
                        lineStart,
                    )
            tokens.append(Token(STRING, "".join(chars), line, start - lineStart + 1))
        elif c.isprintable():
            start = i
            while i < n:
                c = text[i]
                if c in SPECIAL or c.isspace() or not c.isprintable():
                    break
                i += 1
            tokens.append(Token(WORD, text[start:i], line, start - lineStart + 1))
        else:
            raise fail(
                "unexpected control character U+%04X" % (ord(c),),
                i,
                line,
                lineStart,
            )
    tokens.append(Token(EOF, "", line, i - lineStart + 1))
    return tokens


def _quote(text: str) -> str:
    """
    Quote a piece of the input for an error message: C{'text'}, with
    non-printable characters escaped and very long text shortened.
    """
    if len(text) > 40:
        text = text[:37] + "..."
    shown = "".join(
        (
            c
            if c.isprintable()
            else "\\x%02x" % ord(c) if ord(c) < 256 else "\\u%04x" % ord(c)
        )
        for c in text
    )
    return "'%s'" % (shown,)


def describe(token: Token) -> str:
    """
    @return: how a token is named in an error message.
    """
    if token.kind == EOF:
        return "end of file"
    if token.kind == STRING:
        return "string " + _quote(token.text)
    return _quote(token.text)


class _Parser:
    """
    A recursive-descent parser over the token list of one file.
    """

    def __init__(self, tokens: Sequence[Token], filename: str) -> None:
        self.tokens = tokens
        self.filename = filename
        self.pos = 0

    def peek(self) -> Token:
        return self.tokens[self.pos]

    def take(self) -> Token:
        token = self.tokens[self.pos]
        if token.kind != EOF:
            self.pos += 1
        return token

    def error(self, message: str, token: Token) -> ConfigError:
        return ConfigError(message, self.filename, token.line, token.column)

    def entries(self, opened: Optional[SectionEntry], depth: int) -> List[Entry]:
        """
        Parse entries up to the end of the file (top level) or up to and
        including the C{}} that closes C{opened}.
        """
        result: List[Entry] = []
        while True:
            token = self.peek()
            if token.kind == EOF:
                if opened is None:
                    return result
                raise self.error(
                    "expected '}' to close section %s opened at line %d"
                    % (_quote(_title(opened)), opened.keyword.line),
                    token,
                )
            if token.kind == RBRACE:
                if opened is None:
                    raise self.error("unexpected '}' (no section is open)", token)
                self.take()
                return result
            if token.kind != WORD:
                raise self.error(
                    "expected an option name or a section keyword, found %s"
                    % (describe(token),),
                    token,
                )
            result.append(self.entry(depth))

    def entry(self, depth: int) -> Entry:
        name = self.take()
        token = self.take()
        if token.kind == EQUALS:
            return self.option(name, token)
        sectionName: Optional[Token] = None
        brace = token
        if token.kind in (WORD, STRING):
            sectionName = token
            after = self.take()
            if after.kind in (WORD, STRING):
                # "smtps MTA port = 25;": the '{' after the name is missing
                raise self.error(
                    "expected '{' after %s"
                    % (_quote("%s %s" % (name.text, sectionName.text)),),
                    after,
                )
            if after.kind != LBRACE:
                # "port 25;" or "qmgr AQ_max_entries = 1;": not a named
                # section, but an option without '=' or a section without '{'
                raise self.error(
                    "expected '=' or '{' after %s" % (_quote(name.text),), token
                )
            brace = after
        elif token.kind != LBRACE:
            raise self.error(
                "expected '=' or '{' after %s" % (_quote(name.text),), token
            )
        if depth >= MAX_DEPTH:
            raise self.error(
                "sections nested too deeply (more than %d levels)" % (MAX_DEPTH,),
                name,
            )
        section = SectionEntry(name, sectionName, brace=brace)
        section.entries = self.entries(section, depth + 1)
        if self.peek().kind == SEMI:
            self.take()
        return section

    def option(self, name: Token, equals: Token) -> OptionEntry:
        token = self.peek()
        if token.kind == LBRACE:
            value: Value = self.valueList(name)
            if self.peek().kind == SEMI:
                self.take()
            return OptionEntry(name, value, equals)
        if token.kind not in (WORD, STRING):
            raise self.error(
                "expected a value after '=' for %s" % (_quote(name.text),), token
            )
        value = self.scalar()
        token = self.take()
        if token.kind != SEMI:
            raise self.error(
                "expected ';' after the value of %s" % (_quote(name.text),), token
            )
        return OptionEntry(name, value, equals)

    def scalar(self) -> Scalar:
        first = self.take()
        tokens = [first]
        while self.peek().kind in (WORD, STRING):
            token = self.peek()
            if token.kind == WORD and token.line != tokens[-1].line:
                # words of one value are on one line: "a = 1\n b = 2;"
                # misses a ';' rather than setting a to "1 b"
                break
            if token.kind != first.kind:
                raise self.error(
                    "cannot mix quoted and unquoted text in one value", token
                )
            tokens.append(self.take())
        return Scalar(tuple(tokens))

    def valueList(self, name: Token) -> ListValue:
        brace = self.take()
        items: List[Scalar] = []
        if self.peek().kind == RBRACE:
            self.take()
            return ListValue(items, brace.line, brace.column)
        while True:
            token = self.peek()
            if token.kind not in (WORD, STRING):
                raise self.error(
                    "expected a value in the list of %s" % (_quote(name.text),),
                    token,
                )
            items.append(self.scalar())
            token = self.take()
            if token.kind == RBRACE:
                return ListValue(items, brace.line, brace.column)
            if token.kind != COMMA:
                raise self.error(
                    "expected ',' or '}' in the list of %s" % (_quote(name.text),),
                    token,
                )


def _title(section: SectionEntry) -> str:
    if section.name is None:
        return section.keyword.text
    return "%s %s" % (section.keyword.text, section.name.text)


def parseEntries(text: str, filename: str = "smx.conf") -> List[Entry]:
    """
    Parse the text of a configuration file.

    @param text: the whole file.
    @param filename: used in error messages.
    @return: the top-level entries in file order.
    @raise ConfigError: for any syntax error.
    """
    return _Parser(tokenize(text, filename), filename).entries(None, 0)


def parseValueText(text: str, filename: str = "<default>") -> Value:
    """
    Parse the right-hand side of an option on its own, e.g. C{"5d"} or
    C{"{a, b}"}, as the option table writes its defaults.

    @raise ConfigError: if C{text} is not one value or one list.
    """
    entries = parseEntries("x = %s;" % (text,), filename)
    if len(entries) != 1 or not isinstance(entries[0], OptionEntry):
        raise ConfigError("not a single value: %r" % (text,), filename)
    return entries[0].value

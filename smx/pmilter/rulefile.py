# -*- test-case-name: smx.pmilter.test.test_rules -*-
"""
NAME
    smx.pmilter.rulefile - the rules file of the rules pmilter

SYNOPSIS
    rules = parseRules(text, "local.rules")       # raises RulesError
    rules = loadRules("/etc/smx/pmilter.rules")

DESCRIPTION
    The rules file is that of milter-regex: actions, each followed by the
    rules that trigger it, one rule per line.  C{#} begins a comment.

        reject "550 5.7.1 No mail from there"
            connect /\\.spammer\\.example$/i //
            mail /@spammer\\.example>$/i
        tempfail "Try again later"
            helo /^localhost$/ and not connect // /^127\\./
        discard
            rcpt /^<spamtrap@/i
        accept
            mail /^<>$/ and rcpt /^<postmaster@/i

    Actions: C{reject [TEXT]} (a 5xx reply: TEXT is a full reply C{"550
    5.7.1 text"} or just its text, C{550 5.7.1} is then put before it),
    C{tempfail [TEXT]} (4xx, C{451 4.7.1} by default), C{discard},
    C{accept} (no further rule is looked at for the transaction, or the
    session when it is decided at connect or HELO).

    Terms, each with one regular expression per value it looks at:
    C{connect /HOSTNAME/ /ADDRESS/}, C{helo /NAME/}, C{mail /SENDER/}
    (also C{envfrom}), C{rcpt /RECIPIENT/} (also C{envrcpt}), C{header
    /NAME/ /VALUE/}, C{body /LINE/}.  Addresses are matched as written in
    the command, with angle brackets.  Terms combine with C{and}, C{or},
    C{not} and parentheses (C{not} binds closest, then C{and}; they nest
    at most C{MAX_DEPTH} deep).

    A regular expression is delimited by C{/} (or any of C{|%#!,}; a
    delimiter inside is written with a backslash) and followed by flags:
    C{i} ignores case, C{n} negates the match, C{e} (extended syntax) is
    accepted and needs nothing.  C{//} matches anything.  The syntax is
    Python's C{re}.

DIAGNOSTICS
    L{RulesError} names the file, the line and the column of the mistake.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional, Tuple

from smx.pmilter.api import parseReply

ACTIONS = ("reject", "tempfail", "discard", "accept")
#: term keyword -> (canonical name, number of expressions)
TERMS = {
    "connect": ("connect", 2),
    "helo": ("helo", 1),
    "mail": ("mail", 1),
    "envfrom": ("mail", 1),
    "rcpt": ("rcpt", 1),
    "envrcpt": ("rcpt", 1),
    "header": ("header", 2),
    "body": ("body", 1),
}
DELIMITERS = "/|%#!,"
#: how deeply C{not} and parentheses may nest in one rule
MAX_DEPTH = 50


class RulesError(ValueError):
    """
    A mistake in a rules file; the message names file, line and column.
    """


@dataclass
class Pattern:
    """
    One regular expression with its flags.
    """

    regex: Any
    negate: bool = False
    text: str = ""

    def matches(self, value: str) -> bool:
        return (self.regex.search(value) is not None) != self.negate


@dataclass
class Term:
    """
    One term: a kind (C{connect}, C{helo}, ...) and its patterns.

    @ivar index: its number in the file (header and body terms are
        remembered by it once they matched).
    """

    kind: str
    patterns: Tuple[Pattern, ...]
    index: int = 0

    def evaluate(self, facts: Any) -> Optional[bool]:
        return facts.evaluate(self)


@dataclass
class Not:
    operand: Any

    def evaluate(self, facts: Any) -> Optional[bool]:
        v = self.operand.evaluate(facts)
        return None if v is None else not v


@dataclass
class And:
    operands: List[Any]

    def evaluate(self, facts: Any) -> Optional[bool]:
        result = True  # type: Optional[bool]
        for o in self.operands:
            v = o.evaluate(facts)
            if v is False:
                return False
            if v is None:
                result = None
        return result


@dataclass
class Or:
    operands: List[Any]

    def evaluate(self, facts: Any) -> Optional[bool]:
        result = False  # type: Optional[bool]
        for o in self.operands:
            v = o.evaluate(facts)
            if v is True:
                return True
            if v is None:
                result = None
        return result


@dataclass
class Action:
    """
    An action and the rules (expressions) that trigger it.

    @ivar kind: C{reject}, C{tempfail}, C{discard} or C{accept}.
    @ivar reply: the full reply of C{reject}/C{tempfail}.
    @ivar line: where it is in the file.
    """

    kind: str
    reply: Optional[str]
    line: int
    rules: List[Any] = field(default_factory=list)


@dataclass
class RuleSet:
    """
    A parsed rules file.

    @ivar actions: the actions in file order.
    @ivar terms: every term, by L{Term.index}.
    """

    actions: List[Action]
    terms: List[Term]

    def kinds(self) -> frozenset:
        """
        @return: the kinds of terms used.
        """
        return frozenset(t.kind for t in self.terms)


class _Parser:
    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.terms = []  # type: List[Term]
        self.depth = 0

    def error(self, line: int, column: int, message: str) -> RulesError:
        return RulesError("%s:%d:%d: %s" % (self.filename, line, column, message))

    def parse(self, text: str) -> RuleSet:
        actions = []  # type: List[Action]
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.rstrip()
            stripped = line.lstrip()
            if not stripped or stripped.startswith("#"):
                continue
            column = len(line) - len(stripped) + 1
            word = re.match(r"[A-Za-z_]+", stripped)
            keyword = word.group(0).lower() if word else ""
            if keyword in ACTIONS:
                actions.append(self.action(keyword, stripped, number, column))
                continue
            if not actions:
                raise self.error(
                    number,
                    column,
                    "a rule before the first action (reject, tempfail, discard, "
                    "accept)",
                )
            tokens = _Tokens(self, line, number)
            expr = self.orExpr(tokens)
            tokens.expectEnd()
            actions[-1].rules.append(expr)
        for a in actions:
            if not a.rules:
                raise self.error(a.line, 1, "action %r has no rules" % (a.kind,))
        return RuleSet(actions, self.terms)

    def action(self, keyword: str, text: str, number: int, column: int) -> Action:
        rest = text[len(keyword) :].strip()
        if "#" in rest and not rest.startswith('"'):
            rest = rest.split("#", 1)[0].strip()
        reply = None
        if keyword in ("discard", "accept"):
            if rest and not rest.startswith("#"):
                raise self.error(
                    number, column + len(keyword) + 1, "%s takes no text" % (keyword,)
                )
            return Action(keyword, None, number)
        message = ""
        if rest:
            m = re.match(r'"((?:[^"\\]|\\.)*)"\s*(#.*)?$', rest)
            if m is None:
                raise self.error(
                    number,
                    column + len(keyword) + 1,
                    "the text of %s must be in double quotes" % (keyword,),
                )
            message = re.sub(r"\\(.)", r"\1", m.group(1))
        first = 5 if keyword == "reject" else 4
        if re.match(r"[0-9]{3} ", message):
            try:
                code = parseReply(message)[0]
            except ValueError as e:
                raise self.error(number, column, str(e))
            if code // 100 != first:
                raise self.error(
                    number,
                    column,
                    "%s needs a %dxx reply, not %d" % (keyword, first, code),
                )
            reply = message
        else:
            if not message:
                message = (
                    "Command rejected" if keyword == "reject" else "Try again later"
                )
            reply = "%s %s %s" % (
                "550" if first == 5 else "451",
                "%d.7.1" % first,
                message,
            )
            try:
                parseReply(reply)
            except ValueError as e:
                raise self.error(number, column, str(e))
        return Action(keyword, reply, number)

    def orExpr(self, tokens: "_Tokens") -> Any:
        operands = [self.andExpr(tokens)]
        while tokens.peekWord() == "or":
            tokens.next()
            operands.append(self.andExpr(tokens))
        return operands[0] if len(operands) == 1 else Or(operands)

    def andExpr(self, tokens: "_Tokens") -> Any:
        operands = [self.notExpr(tokens)]
        while tokens.peekWord() == "and":
            tokens.next()
            operands.append(self.notExpr(tokens))
        return operands[0] if len(operands) == 1 else And(operands)

    def notExpr(self, tokens: "_Tokens") -> Any:
        self.depth += 1
        try:
            return self._notExpr(tokens)
        finally:
            self.depth -= 1

    def _notExpr(self, tokens: "_Tokens") -> Any:
        if self.depth > MAX_DEPTH:
            tokens._skip()
            raise tokens.error(
                tokens.pos + 1,
                "'not' and parentheses nest more than %d deep" % (MAX_DEPTH,),
            )
        if tokens.peekWord() == "not":
            tokens.next()
            return Not(self.notExpr(tokens))
        kind, value, column = tokens.next()
        if kind == "(":
            expr = self.orExpr(tokens)
            kind, value, column = tokens.next()
            if kind != ")":
                raise tokens.error(column, "expected ')'")
            return expr
        if kind != "word" or value.lower() not in TERMS:
            raise tokens.error(
                column,
                "expected a term (%s), 'not' or '(', not %r"
                % (", ".join(sorted(set(TERMS))), value or "end of line"),
            )
        name, count = TERMS[value.lower()]
        patterns = tuple(tokens.pattern() for _ in range(count))
        term = Term(name, patterns, len(self.terms))
        self.terms.append(term)
        return term


class _Tokens:
    """
    The tokens of one rule line; regular expressions are read on demand.
    """

    def __init__(self, parser: _Parser, line: str, number: int) -> None:
        self.parser = parser
        self.line = line
        self.number = number
        self.pos = 0

    def error(self, column: int, message: str) -> RulesError:
        return self.parser.error(self.number, column, message)

    def _skip(self) -> None:
        while self.pos < len(self.line) and self.line[self.pos].isspace():
            self.pos += 1
        if self.pos < len(self.line) and self.line[self.pos] == "#":
            self.pos = len(self.line)

    def peekWord(self) -> Optional[str]:
        self._skip()
        m = re.match(r"[A-Za-z_]+", self.line[self.pos :])
        return m.group(0).lower() if m else None

    def next(self) -> Tuple[str, str, int]:
        self._skip()
        column = self.pos + 1
        if self.pos >= len(self.line):
            return "end", "", column
        c = self.line[self.pos]
        if c in "()":
            self.pos += 1
            return c, c, column
        m = re.match(r"[A-Za-z_]+", self.line[self.pos :])
        if m:
            self.pos += len(m.group(0))
            return "word", m.group(0), column
        self.pos += 1
        return "char", c, column

    def pattern(self) -> Pattern:
        self._skip()
        column = self.pos + 1
        if self.pos >= len(self.line) or self.line[self.pos] not in DELIMITERS:
            raise self.error(
                column, "expected a regular expression, e.g. /text/ (or |text|)"
            )
        delimiter = self.line[self.pos]
        i = self.pos + 1
        chars = []
        while i < len(self.line) and self.line[i] != delimiter:
            if self.line[i] == "\\" and i + 1 < len(self.line):
                if self.line[i + 1] == delimiter:
                    chars.append(delimiter)
                else:
                    chars.append(self.line[i : i + 2])
                i += 2
                continue
            chars.append(self.line[i])
            i += 1
        if i >= len(self.line):
            raise self.error(
                column, "the regular expression has no closing %s" % (delimiter,)
            )
        source = "".join(chars)
        i += 1
        flags = 0
        negate = False
        while i < len(self.line) and self.line[i].isalpha():
            flag = self.line[i]
            if flag == "i":
                flags |= re.IGNORECASE
            elif flag == "n":
                negate = True
            elif flag != "e":
                raise self.error(i + 1, "unknown flag %r (valid: e, i, n)" % (flag,))
            i += 1
        try:
            regex = re.compile(source, flags)
        except (re.error, OverflowError, RecursionError) as e:
            raise self.error(column, "bad regular expression %r: %s" % (source, e))
        self.pos = i
        return Pattern(regex, negate, self.line[column - 1 : i])

    def expectEnd(self) -> None:
        kind, value, column = self.next()
        if kind != "end":
            raise self.error(
                column, "expected 'and', 'or' or the end of the line, not %r" % (value,)
            )


def parseRules(text: str, filename: str = "rules") -> RuleSet:
    """
    Parse a rules file.

    @raise RulesError: with file, line and column of the first mistake.
    """
    return _Parser(filename).parse(text)


def loadRules(path: str, opener: Callable[..., Any] = open) -> RuleSet:
    """
    Read and parse the rules file C{path}.

    @raise RulesError: it cannot be read or has a mistake.
    """
    try:
        with opener(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError as e:
        raise RulesError("%s: cannot read the rules file: %s" % (path, e.strerror or e))
    return parseRules(text, path)


__all__ = ["RuleSet", "RulesError", "parseRules", "loadRules", "ACTIONS"]

# -*- test-case-name: smx.pmilter.test.test_rules -*-
"""
NAME
    smx.pmilter.rules - the rules pmilter (like milter-regex)

SYNOPSIS
    smtps { pmilter { plugins = { rules }; rules { file = pmilter.rules; } } }
    smx pmilter-server --socket pm.sock rules      (out of process)
    kill -USR1 PID                                 (read the file again)

DESCRIPTION
    Rejects, tempfails, discards or accepts by regular expressions on
    what the client sends: its name and address, HELO, MAIL, RCPT, the
    header fields and the body lines (the file's syntax is in
    L{smx.pmilter.rulefile}).  The first rule, in file order, that is
    true decides, as soon as what it looks at is known: a rule on the
    client address at connect, on a header field when the field has been
    received (the decision is then given to the final dot).  A rule that
    also needs something not yet received waits for it.

    At RCPT a rule's C{rcpt} terms look at that recipient: its action
    applies to it alone.  After DATA they look at every accepted
    recipient (a rule C{rcpt /x/ and header /Subject/ /y/}).

    The plugin is also found by the name C{regex}.  C{reload()} (SIGUSR1
    of twistd smx or of smx pmilter-server) reads the file again; a file
    with a mistake is reported and the rules in force stay.  Rules on the
    header or body added by a reload take effect for the SMTP servers
    that negotiate afterwards (a new connection, a restart).

CONFIGURATION PARAMETERS
    smtps { pmilter { rules { file } } }

DIAGNOSTICS
    A rules file that cannot be read or has a mistake makes the
    negotiation fail with file:line:column (the pmilter is down: SMTPS's
    C{on_failure} applies); at reload it is logged with C{sev=ERR}.
    Each rule that fires is logged at level 9 with its file and line.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from twisted.plugin import IPlugin
from zope.interface import implementer

from smx.interfaces import IPolicyMilter
from smx.pmilter.api import (
    CONT,
    DISCARD,
    OK,
    PERM,
    SMST_CONNECT,
    SMST_DATA,
    SMST_DOT,
    SMST_EHLO,
    SMST_MAIL,
    SMST_RCPT,
    TEMP,
    Negotiation,
    NegotiationError,
)
from smx.pmilter.content import BODY, END_OF_HEADERS, HEADER, ContentScanner
from smx.pmilter.rulefile import Action, RuleSet, RulesError, Term, loadRules
from smx.pmilter.settings import settingsOf

#: the value each action returns
VALUES = {"reject": PERM, "tempfail": TEMP, "discard": DISCARD, "accept": OK}


class Facts:
    """
    What is known of a session so far, for evaluating rules.
    """

    def __init__(self) -> None:
        self.connect = None  # type: Optional[Tuple[str, str]]
        self.helo = None  # type: Optional[str]
        self.resetTransaction()

    def resetTransaction(self) -> None:
        self.mail = None  # type: Optional[str]
        self.rcpt = None  # type: Optional[str]
        self.rcpts = []  # type: List[str]
        self.rcptsFinal = False
        self.matched = set()  # type: set
        self.headersDone = False
        self.bodyDone = False

    def evaluate(self, term: Term) -> Optional[bool]:
        """
        Is C{term} true (C{None}: not known yet)?
        """
        kind, p = term.kind, term.patterns
        if kind == "connect":
            if self.connect is None:
                return None
            return p[0].matches(self.connect[0]) and p[1].matches(self.connect[1])
        if kind == "helo":
            return None if self.helo is None else p[0].matches(self.helo)
        if kind == "mail":
            return None if self.mail is None else p[0].matches(self.mail)
        if kind == "rcpt":
            if self.rcpt is not None:
                return p[0].matches(self.rcpt)
            if self.rcptsFinal:
                return any(p[0].matches(r) for r in self.rcpts)
            return None
        if term.index in self.matched:
            return True
        done = self.headersDone if kind == "header" else self.bodyDone
        return False if done else None


class RulesSession:
    """
    The rules pmilter's context for one SMTP session.

    @ivar decided: C{"session"} or C{"transaction"} once an action ended
        the evaluation for that scope.
    """

    def __init__(self) -> None:
        self.facts = Facts()
        self.decided = None  # type: Optional[str]
        self.scanner = None  # type: Optional[ContentScanner]

    def resetTransaction(self) -> None:
        self.facts.resetTransaction()
        self.scanner = None
        if self.decided == "transaction":
            self.decided = None


@implementer(IPlugin, IPolicyMilter)
class Rules:
    """
    The rules pmilter (see the module docstring).
    """

    name = "rules"
    aliases = ("regex",)

    def __init__(self) -> None:
        #: rules file -> its rules in force
        self.rulesets = {}  # type: Dict[str, RuleSet]
        self._logs = {}  # type: Dict[str, Any]

    def negotiate(self, server: Any) -> Negotiation:
        path = settingsOf(server, self.name)["file"]
        ruleset = self.rulesets.get(path)
        if ruleset is None:
            try:
                ruleset = loadRules(path)
            except RulesError as e:
                raise NegotiationError(str(e))
            self.rulesets[path] = ruleset
        self._logs[path] = server.log
        server.context = path
        return Negotiation(stages=self._stages(ruleset))

    @staticmethod
    def _stages(ruleset: RuleSet) -> frozenset:
        stages = {SMST_CONNECT, SMST_EHLO, SMST_MAIL, SMST_RCPT, SMST_DATA}
        if ruleset.kinds() & {"header", "body"}:
            stages.add(SMST_DOT)
        return frozenset(stages)

    def reload(self) -> None:
        """
        Read every rules file in use again; one with a mistake is logged
        and its rules in force stay.
        """
        for path in list(self.rulesets):
            log = self._logs.get(path)
            try:
                ruleset = loadRules(path)
            except RulesError as e:
                if log is not None:
                    log.error("Rules.reload", pmilter=self.name, error=str(e))
                continue
            old = self.rulesets[path]
            self.rulesets[path] = ruleset
            if log is not None:
                log.notice(
                    pmilter=self.name,
                    file=path,
                    reloaded=sum(len(a.rules) for a in ruleset.actions),
                )
                if self._stages(ruleset) - self._stages(old):
                    log.warn(
                        "Rules.reload",
                        pmilter=self.name,
                        file=path,
                        warning="header and body rules take effect for SMTP "
                        "servers that connect from now on",
                    )

    # -- evaluation ---------------------------------------------------------

    def _state(self, session: Any) -> RulesSession:
        if session.context is None:
            session.context = RulesSession()
        return session.context

    def _evaluate(self, session: Any, stage: str) -> Any:
        state = self._state(session)
        if state.decided is not None:
            return CONT
        path = session.server.context
        ruleset = self.rulesets[path]
        for action in ruleset.actions:
            for rule in action.rules:
                if rule.evaluate(state.facts) is True:
                    return self._fire(session, state, action, stage, path)
        return CONT

    def _fire(
        self, session: Any, state: RulesSession, action: Action, stage: str, path: str
    ) -> Any:
        session.server.log.info(
            level=9,
            pmilter=self.name,
            rule="%s:%d" % (path, action.line),
            action=action.kind,
            stage=stage,
        )
        if stage != SMST_RCPT and action.kind in ("accept", "discard"):
            state.decided = (
                "session" if stage in (SMST_CONNECT, SMST_EHLO) else "transaction"
            )
        elif stage == SMST_DOT:
            state.decided = "transaction"
        if action.reply is not None:
            session.setreply(action.reply)
        return VALUES[action.kind]

    # -- the callbacks ------------------------------------------------------

    def connect(self, session: Any, hostname: Optional[str], address: Any) -> Any:
        state = self._state(session)
        host = getattr(address, "host", None)
        state.facts.connect = (hostname or "", host if isinstance(host, str) else "")
        return self._evaluate(session, SMST_CONNECT)

    def helo(self, session: Any, helohost: str) -> Any:
        state = self._state(session)
        state.resetTransaction()
        state.facts.helo = helohost
        return self._evaluate(session, SMST_EHLO)

    def mail(self, session: Any, address: str, args: Any) -> Any:
        state = self._state(session)
        state.resetTransaction()
        state.facts.mail = address
        return self._evaluate(session, SMST_MAIL)

    def rcpt(self, session: Any, address: str, args: Any) -> Any:
        state = self._state(session)
        state.facts.rcpt = address
        try:
            value = self._evaluate(session, SMST_RCPT)
        finally:
            state.facts.rcpt = None
        if value not in (PERM, TEMP, DISCARD):
            state.facts.rcpts.append(address)
        return value

    def data(self, session: Any) -> Any:
        state = self._state(session)
        state.facts.rcptsFinal = True
        return self._evaluate(session, SMST_DATA)

    def body(self, session: Any, chunk: bytes) -> Any:
        state = self._state(session)
        if state.decided is not None:
            return CONT
        if state.scanner is None:
            state.scanner = ContentScanner()
            state.facts.rcptsFinal = True
        return self._scan(session, state, state.scanner.feed(chunk))

    def eom(self, session: Any) -> Any:
        state = self._state(session)
        if state.decided is not None:
            return CONT
        events = state.scanner.finish() if state.scanner is not None else []
        value = self._scan(session, state, events)
        if value is not CONT:
            return value
        state.facts.rcptsFinal = True
        state.facts.headersDone = state.facts.bodyDone = True
        return self._evaluate(session, SMST_DOT)

    def abort(self, session: Any) -> None:
        self._state(session).resetTransaction()

    def _scan(self, session: Any, state: RulesSession, events: List[Any]) -> Any:
        """
        Match the header and body terms against the new events; decide as
        soon as a rule is true.
        """
        ruleset = self.rulesets[session.server.context]
        facts = state.facts
        changed = False
        for event in events:
            if event[0] == HEADER:
                for term in ruleset.terms:
                    if term.kind == "header" and term.index not in facts.matched:
                        if term.patterns[0].matches(event[1]) and term.patterns[
                            1
                        ].matches(event[2]):
                            facts.matched.add(term.index)
                            changed = True
            elif event[0] == END_OF_HEADERS:
                facts.headersDone = True
                changed = True
            elif event[0] == BODY:
                for term in ruleset.terms:
                    if term.kind == "body" and term.index not in facts.matched:
                        if term.patterns[0].matches(event[1]):
                            facts.matched.add(term.index)
                            changed = True
            if changed:
                changed = False
                value = self._evaluate(session, SMST_DOT)
                if value is not CONT:
                    return value
        return CONT

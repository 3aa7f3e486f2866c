# -*- test-case-name: smx.pmilter.test.test_decision -*-
"""
NAME
    smx.pmilter.decision - what the pmilters decided about one SMTP command

SYNOPSIS
    d = decide(TEMP, "451 4.7.1 greylisted", "greylist")
    d.code, d.enhanced, d.text      # 451, "4.7.1", "greylisted"
    d.reply()                       # {"code": 451, "dsn": "4.7.1", "text": ...}

DESCRIPTION
    A L{Decision} is the typed value the host (L{smx.pmilter.host}) gives
    SMTPS for a command: a reply to send, or none (SMTPS goes on with its
    own checks and reply), and the flags C{accept} (L{smx.pmilter.OK}),
    C{discard} (seed §5.8.3), C{ssd} (421: close the session), C{quick}
    (§5.8.3) and C{failed} (a pmilter failed and the failure policy made
    the decision).

    L{decide} turns what a callback returned (and the reply it set) into
    a L{Decision}, or raises L{Nonsense} when they do not fit together
    (App. B.8: the reply code must match the return value and carry an
    enhanced status code).

DIAGNOSTICS
    L{Nonsense} names what was wrong; the host logs it with the pmilter's
    name and applies its failure policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from smx.pmilter.api import (
    CONT,
    DISCARD,
    OK,
    PERM,
    SSD,
    SYNTAX,
    TEMP,
    Status,
    isReplyCode,
    parseReply,
    unwrap,
)

#: the reply of a value returned without C{setreply}
DEFAULT_REPLIES = {
    TEMP: (451, "4.7.1", "Temporary rejection by policy, try again later"),
    PERM: (550, "5.7.1", "Rejected by policy"),
    SYNTAX: (500, "5.5.2", "Syntax error"),
    SSD: (421, "4.7.0", "Closing connection"),
}  # type: Dict[Status, Tuple[int, str, str]]

#: the reply when a pmilter failed and C{on_failure = tempfail}
FAILURE_REPLY = (451, "4.3.0", "Temporary failure of a policy check, try again later")

#: the values of C{on_failure}
TEMPFAIL = "tempfail"
ACCEPT = "accept"
FAILURE_POLICIES = (TEMPFAIL, ACCEPT)


class Nonsense(ValueError):
    """
    A pmilter's answer that is not one of App. B.9 or whose reply does
    not fit it (App. B.8).
    """


@dataclass(frozen=True)
class Decision:
    """
    What the pmilters decided about one SMTP command.

    @ivar code: the reply code to send, or C{None}: SMTPS gives its own
        reply (after its own checks unless C{accept}).
    @ivar enhanced: the enhanced status code (RFC 3463) with C{code}.
    @ivar text: the text of the reply with C{code}.
    @ivar accept: a pmilter accepted the command (L{smx.pmilter.OK}):
        SMTPS need not make its own policy checks of it.
    @ivar discard: accept the command but discard its effect (seed
        §5.8.3: the session's transactions at connect, the transaction at
        MAIL, the recipient at RCPT, or the transaction with C{quick}).
    @ivar ssd: close the session after the reply (421).
    @ivar quick: the C{quick:} modifier of seed §5.8.3: a rejection is not
        delayed, an acceptance overrides the other checks.
    @ivar failed: a pmilter failed (down, slow, raised, answered
        nonsense) and the failure policy made this decision.
    @ivar pmilter: the name of the pmilter that decided, if one did.
    """

    code: Optional[int] = None
    enhanced: Optional[str] = None
    text: Optional[str] = None
    accept: bool = False
    discard: bool = False
    ssd: bool = False
    quick: bool = False
    failed: bool = False
    pmilter: Optional[str] = None

    @property
    def rejected(self) -> bool:
        """
        Is the command rejected (a 4xx or 5xx reply)?
        """
        return self.code is not None and self.code >= 400

    @property
    def final(self) -> bool:
        """
        Does this decision end the chain of pmilters for the command (a
        rejection, a discard, a closed session, a quick acceptance)?
        """
        return self.rejected or self.discard or self.ssd or (self.quick and self.accept)

    def reply(self) -> Optional[Dict[str, Any]]:
        """
        @return: C{{"code", "dsn", "text"}} as SMTPS's own policy checks
            give it (L{smx.mail.policy}), or C{None} without a reply.
        """
        if self.code is None:
            return None
        return {"code": self.code, "dsn": self.enhanced, "text": self.text}

    def toFields(self) -> Dict[str, Any]:
        """
        @return: the decision as plain values (for AMP).
        """
        return {
            "code": self.code,
            "enhanced": self.enhanced,
            "text": self.text,
            "accept": self.accept,
            "discard": self.discard,
            "ssd": self.ssd,
            "quick": self.quick,
            "failed": self.failed,
            "pmilter": self.pmilter,
        }

    @classmethod
    def fromFields(cls, fields: Dict[str, Any]) -> "Decision":
        """
        The inverse of L{toFields}.

        @raise Nonsense: the fields do not make a valid decision.
        """
        d = cls(
            code=fields.get("code"),
            enhanced=fields.get("enhanced"),
            text=fields.get("text"),
            accept=bool(fields.get("accept")),
            discard=bool(fields.get("discard")),
            ssd=bool(fields.get("ssd")),
            quick=bool(fields.get("quick")),
            failed=bool(fields.get("failed")),
            pmilter=fields.get("pmilter"),
        )
        if d.code is not None:
            try:
                parseReply("%d %s %s" % (d.code, d.enhanced, d.text))
            except ValueError as e:
                raise Nonsense(str(e))
        return d


#: no objection, no reply: SMTPS goes on as without pmilters
CONTINUE = Decision()


def _reply(
    status: Any, code: Optional[int], reply: Optional[str]
) -> Tuple[int, str, str]:
    """
    The reply for a rejection: the one set with C{setreply} if it fits,
    else the default.
    """
    if reply is not None:
        return parseReply(reply)
    if code is not None:
        kind = TEMP if code < 500 else PERM
        default = DEFAULT_REPLIES[kind]
        return code, "%d.%s" % (code // 100, default[1][2:]), default[2]
    return DEFAULT_REPLIES[status]


def decide(value: Any, reply: Optional[str], name: Optional[str]) -> Decision:
    """
    The decision of one pmilter's callback.

    @param value: what the callback returned (App. B.9): a C{Status}, an
        C{int} SMTP reply code, either modified by C{quick}; C{None}
        counts as L{CONT}.
    @param reply: what it gave to C{setreply}, or C{None}.
    @param name: the pmilter's name, for the decision.
    @raise Nonsense: the value is not one of App. B.9, or the reply is
        malformed or does not match the value (App. B.8).
    """
    value, isQuick = unwrap(value)
    if value is None:
        value = CONT
    if isinstance(value, Status):
        status, code = value, None  # type: Tuple[Status, Optional[int]]
    elif isReplyCode(value):
        status, code = (OK if value < 300 else TEMP if value < 500 else PERM), value
    else:
        raise Nonsense("returned %r, which is not a value of App. B.9" % (value,))
    if reply is not None:
        try:
            replyCode = parseReply(reply)[0]
        except ValueError as problem:
            raise Nonsense(str(problem))
        if status is CONT:
            raise Nonsense("set the reply %r but returned CONT" % (reply,))
        if (code is not None and replyCode != code) or not status.allows(replyCode):
            raise Nonsense(
                "set the reply %r, whose code does not match the value %r returned"
                % (reply, code if code is not None else status)
            )
    if status is CONT:
        return CONTINUE
    if status in (OK, DISCARD):
        c = enhanced = t = None  # type: Any
        if reply is not None:
            c, enhanced, t = parseReply(reply)
        return Decision(
            c,
            enhanced,
            t,
            accept=status is OK,
            discard=status is DISCARD,
            quick=isQuick,
            pmilter=name,
        )
    c, enhanced, t = _reply(status, code, reply)
    return Decision(c, enhanced, t, ssd=c == 421, quick=isQuick, pmilter=name)


def failureDecision(name: Optional[str], policy: str) -> Decision:
    """
    The decision when a pmilter failed.

    @param policy: L{TEMPFAIL} (a 451 reply) or L{ACCEPT} (no objection).
    """
    if policy == ACCEPT:
        return Decision(failed=True, pmilter=name)
    code, enhanced, text = FAILURE_REPLY
    return Decision(code, enhanced, text, failed=True, pmilter=name)


class Combination:
    """
    The decisions of a chain of pmilters for one command, in order: the
    first final one (L{Decision.final}) wins; otherwise the first
    acceptance, else L{CONTINUE}.
    """

    def __init__(self) -> None:
        self.result = CONTINUE
        self.done = False

    def add(self, decision: Decision) -> bool:
        """
        Take the next decision.

        @return: whether the chain ends here.
        """
        if self.done:
            return True
        if decision.final:
            self.result = decision
            self.done = True
        elif decision.accept and not self.result.accept:
            self.result = decision
        elif decision.failed and self.result is CONTINUE:
            self.result = decision
        return self.done

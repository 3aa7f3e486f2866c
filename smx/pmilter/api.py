# -*- test-case-name: smx.pmilter.test.test_api -*-
"""
NAME
    smx.pmilter.api - the values of the policy milter API (seed App. B)

SYNOPSIS
    from smx.pmilter import OK, TEMP, quick, SMST_RCPT, Negotiation

DESCRIPTION
    Everything a pmilter author needs except the session objects (in
    L{smx.pmilter.context}): the return values of App. B.9 (L{OK},
    L{DISCARD}, L{CONT}, L{SSD}, L{TEMP}, L{SYNTAX}, L{PERM}, an C{int}
    SMTP reply code, and L{quick} for the C{quick:} modifier of seed
    §5.8.3), the stages and macros of App. B.6, the capability
    L{CAP_RCPT_ST} of App. B.7, the L{Negotiation} a pmilter answers to
    C{negotiate} (App. B.3) and L{version} (App. B.8).

    Stages are short strings, macros and capabilities too, so that they
    print well in logs and travel unchanged between processes.

DIAGNOSTICS
    L{Negotiation.check} raises L{NegotiationError} with a sentence that
    says what is wrong (a macro requested too early, an unknown stage).
    L{parseReply} raises C{ValueError} for a reply that is not one line
    of the form C{XYZ D.S.N text}.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import (
    Any,
    Collection,
    Dict,
    FrozenSet,
    Iterable,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)

#: the version of the API (App. B.8): a pmilter written for another major
#: version does not run
VERSION = (1, 0, 0)


def version() -> Tuple[int, int, int]:
    """
    The version of the policy milter library (App. B.8
    C{sm_pmfi_version}).

    @return: C{(major, minor, patchlevel)}; the major numbers of the
        library and of the pmilter must be the same.
    """
    return VERSION


# -- return values (App. B.9) ----------------------------------------------


@dataclass(frozen=True)
class Status:
    """
    One of the symbolic return values of App. B.9.

    @ivar name: C{"OK"}, C{"CONT"}, ...
    @ivar codes: the reply codes a text given with
        L{smx.pmilter.context.SessionContext.setreply} may have with it
        (App. B.8: the code of the reply "must match the return code").
    """

    name: str
    codes: Tuple[int, int]

    def __repr__(self) -> str:
        return self.name

    def allows(self, code: int) -> bool:
        """
        May a reply with C{code} be given with this value?
        """
        return self.codes[0] <= code <= self.codes[1]


#: accept the command (SMTPS skips its other policy checks for it)
OK = Status("OK", (200, 299))
#: accept the command but discard its effect (seed §5.8.3)
DISCARD = Status("DISCARD", (200, 299))
#: no objection: SMTPS goes on with its other checks
CONT = Status("CONT", (0, -1))
#: shut the SMTP session down (421)
SSD = Status("SSD", (421, 421))
#: reject the command with a temporary error (4xx)
TEMP = Status("TEMP", (400, 499))
#: reject the command as a syntax error (5xx)
SYNTAX = Status("SYNTAX", (500, 599))
#: reject the command with a permanent error (5xx)
PERM = Status("PERM", (500, 599))

STATUSES = {s.name: s for s in (OK, DISCARD, CONT, SSD, TEMP, SYNTAX, PERM)}


@dataclass(frozen=True)
class Quick:
    """
    A return value with the C{quick:} modifier of seed §5.8.3
    (C{SMTP_R_SET_QUICK}): a rejection is immediate instead of delayed to
    RCPT, an acceptance overrides the other checks, a discard at RCPT
    discards the whole transaction.

    @ivar value: the value it modifies.
    """

    value: Union[Status, int]

    def __repr__(self) -> str:
        return "quick(%r)" % (self.value,)


def quick(value: Union[Status, int]) -> Quick:
    """
    The value C{value} with the C{quick:} modifier (seed §5.8.3).
    """
    if isinstance(value, Quick):
        return value
    return Quick(value)


def isReplyCode(value: Any) -> bool:
    """
    Is C{value} an C{int} that is a valid SMTP reply code for a policy
    decision: 2yz, 4yz or 5yz with y from 0 to 5 (RFC 5321 4.2)?
    """
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and 200 <= value <= 599
        and value // 100 in (2, 4, 5)
        and (value // 10) % 10 <= 5
    )


def unwrap(value: Any) -> Tuple[Any, bool]:
    """
    @return: C{(value without quick, whether it was quick)}.
    """
    if isinstance(value, Quick):
        return value.value, True
    return value, False


# -- stages, macros, capabilities (App. B.3, B.6, B.7) ---------------------

#: session start (C{connect})
SMST_CONNECT = "connect"
#: HELO or EHLO (C{helo})
SMST_EHLO = "ehlo"
#: MAIL (C{mail})
SMST_MAIL = "mail"
#: RCPT (C{rcpt})
SMST_RCPT = "rcpt"
#: DATA (C{data})
SMST_DATA = "data"
#: the content and the final dot (C{body} chunks, then C{eom})
SMST_DOT = "dot"
#: an unknown or unimplemented command (C{unknown}); an smx name, the
#: seed has no stage for it in App. B.6 and requests no macros there
SMST_UNKNOWN = "unknown"

#: the stages in the order of an SMTP session
STAGES = (
    SMST_CONNECT,
    SMST_EHLO,
    SMST_MAIL,
    SMST_RCPT,
    SMST_DATA,
    SMST_DOT,
    SMST_UNKNOWN,
)
#: the stages at which macros may be requested (App. B.6)
MACRO_STAGES = STAGES[:6]

#: the callbacks each stage makes
CALLBACKS = {
    SMST_CONNECT: ("connect",),
    SMST_EHLO: ("helo",),
    SMST_MAIL: ("mail",),
    SMST_RCPT: ("rcpt",),
    SMST_DATA: ("data",),
    SMST_DOT: ("body", "eom"),
    SMST_UNKNOWN: ("unknown",),
}
#: every callback of App. B.4, in the order of a session
CALLBACK_NAMES = (
    "connect",
    "helo",
    "mail",
    "rcpt",
    "data",
    "unknown",
    "body",
    "eom",
    "abort",
    "close",
)

#: host name of the SMTP server
PMM_SRVHOSTNAME = "srvhostname"
#: session id (App. C.1)
PMM_SEID = "seid"
#: transaction id (App. C.1); not before L{SMST_MAIL}
PMM_MAIL_TAID = "mail_taid"
#: the Message-Id of the message; only at L{SMST_DOT}
PMM_DOT_MSGID = "dot_msgid"

MACROS = (PMM_SRVHOSTNAME, PMM_SEID, PMM_MAIL_TAID, PMM_DOT_MSGID)
#: the first stage at which a macro may be requested
MACRO_FIRST_STAGE = {
    PMM_SRVHOSTNAME: SMST_CONNECT,
    PMM_SEID: SMST_CONNECT,
    PMM_MAIL_TAID: SMST_MAIL,
    PMM_DOT_MSGID: SMST_DOT,
}
#: the most macros one stage may request (App. B.6 C{PM.MAX_MACROS})
MAX_MACROS = 8

#: send RCPT also when SMTPS rejects it (App. B.7 C{SM_SCAP_PM_RCPT_ST})
CAP_RCPT_ST = "rcpt_st"
CAPABILITIES = (CAP_RCPT_ST,)


class PolicyMilterError(Exception):
    """
    Base of the errors of the policy milter API.
    """


class NegotiationError(PolicyMilterError):
    """
    A pmilter asked at negotiation for something it cannot have (App.
    B.3, B.6): the message says what.
    """


class MacroNotRequested(PolicyMilterError, LookupError):
    """
    C{getmac} of a macro that the pmilter did not request (App. B.6).
    """


class PolicyMilterUnavailable(PolicyMilterError):
    """
    A pmilter (or the server it runs in) cannot be reached: it is
    considered down until a new negotiation succeeds.
    """


def _frozen(items: Optional[Iterable[str]], what: str) -> Optional[FrozenSet[str]]:
    if items is None:
        return None
    if isinstance(items, str):
        raise NegotiationError(
            "%s must be a collection, not the string %r" % (what, items)
        )
    return frozenset(items)


@dataclass(frozen=True)
class Negotiation:
    """
    What a pmilter wants (App. B.3, B.6, B.7): its answer to
    C{negotiate(server)}.

    @ivar stages: the stages (C{SMST_*}) it wants; only those are sent.
        C{None} (the default) means every stage the SMTP server offers.
        Of each stage only the callbacks the pmilter defines are called.
    @ivar macros: C{{stage: [macro, ...]}}: which macros (C{PMM_*}) it
        wants to know from which stage on.
    @ivar capabilities: further capabilities (L{CAP_RCPT_ST}).
    """

    stages: Optional[Collection[str]] = None
    macros: Mapping[str, Sequence[str]] = field(default_factory=dict)
    capabilities: Collection[str] = frozenset()

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", _frozen(self.stages, "stages"))
        object.__setattr__(
            self, "capabilities", _frozen(self.capabilities, "capabilities")
        )
        macros = {}  # type: Dict[str, Tuple[str, ...]]
        if not isinstance(self.macros, Mapping):
            raise NegotiationError(
                "macros must be a mapping {stage: [macro, ...]}, not %r"
                % (self.macros,)
            )
        for stage, names in self.macros.items():
            if isinstance(names, str):
                names = (names,)
            macros[stage] = tuple(names)
        object.__setattr__(self, "macros", macros)

    def check(
        self,
        offeredStages: Iterable[str] = STAGES,
        offeredCapabilities: Iterable[str] = CAPABILITIES,
    ) -> "Negotiation":
        """
        Check the request against what the SMTP server offers.

        @return: the negotiation with C{stages} filled in (C{None}
            becomes every offered stage).
        @raise NegotiationError: an unknown or unoffered stage, macro or
            capability, a macro requested before its stage (App. B.6:
            L{PMM_MAIL_TAID} not before L{SMST_MAIL}, L{PMM_DOT_MSGID}
            only at L{SMST_DOT}), too many macros.
        """
        offered = frozenset(offeredStages)
        stages = offered if self.stages is None else self.stages
        for stage in sorted(stages):
            if stage not in STAGES:
                raise NegotiationError(
                    "unknown stage %r (valid: %s)" % (stage, ", ".join(STAGES))
                )
            if stage not in offered:
                raise NegotiationError(
                    "stage %r is not offered by the SMTP server" % (stage,)
                )
        for capability in sorted(self.capabilities):
            if capability not in CAPABILITIES:
                raise NegotiationError("unknown capability %r" % (capability,))
            if capability not in frozenset(offeredCapabilities):
                raise NegotiationError(
                    "capability %r is not offered by the SMTP server" % (capability,)
                )
        for stage, names in self.macros.items():
            if stage not in MACRO_STAGES:
                raise NegotiationError(
                    "macros cannot be requested at stage %r (valid: %s)"
                    % (stage, ", ".join(MACRO_STAGES))
                )
            if len(names) > MAX_MACROS:
                raise NegotiationError(
                    "at most %d macros per stage, not %d at %r"
                    % (MAX_MACROS, len(names), stage)
                )
            for name in names:
                if name not in MACROS:
                    raise NegotiationError(
                        "unknown macro %r (valid: %s)" % (name, ", ".join(MACROS))
                    )
                first = MACRO_FIRST_STAGE[name]
                if MACRO_STAGES.index(stage) < MACRO_STAGES.index(first):
                    raise NegotiationError(
                        "macro %r cannot be requested before stage %r (asked at %r)"
                        % (name, first, stage)
                    )
        return Negotiation(frozenset(stages), self.macros, self.capabilities)

    def requested(self) -> Dict[str, str]:
        """
        @return: C{{macro: the first stage it was requested at}}.
        """
        out = {}  # type: Dict[str, str]
        for stage in MACRO_STAGES:
            for name in self.macros.get(stage, ()):
                out.setdefault(name, stage)
        return out


# -- replies (App. B.8) ------------------------------------------------------

_REPLY = re.compile(r"([245][0-5][0-9]) ([245])\.([0-9]{1,3})\.([0-9]{1,3}) (.*)\Z")
#: the longest reply line (RFC 5321 4.5.3.1.5: 512 octets with CRLF)
MAX_REPLY = 510


def parseReply(reply: str) -> Tuple[int, str, str]:
    """
    Split a reply given to C{setreply} (App. B.8): C{"XYZ D.S.N text"},
    with or without the trailing CRLF.

    @return: C{(code, enhanced status code, text)}.
    @raise ValueError: it is not one printable line of that form, the
        class of the enhanced status code is not that of the reply code,
        or it is longer than an SMTP reply line may be.
    """
    if not isinstance(reply, str):
        raise ValueError("the reply must be a str, not %s" % (type(reply).__name__,))
    line = reply[:-2] if reply.endswith("\r\n") else reply
    if len(line) > MAX_REPLY:
        raise ValueError("the reply is longer than %d characters" % (MAX_REPLY,))
    if not line.isprintable() or not line.isascii():
        raise ValueError("the reply %r is not one line of printable ASCII" % (line,))
    m = _REPLY.match(line)
    if m is None:
        raise ValueError(
            "the reply %r is not of the form 'XYZ D.S.N text' with an "
            "enhanced status code (App. B.8)" % (line,)
        )
    code = int(m.group(1))
    if int(m.group(2)) != code // 100:
        raise ValueError(
            "the enhanced status code of %r is not of the class of its reply code"
            % (line,)
        )
    return code, "%s.%s.%s" % (m.group(2), m.group(3), m.group(4)), m.group(5)

# -*- test-case-name: smx.config.test.test_policyoptions,smx.mail.test.test_milterhooks -*-
"""
The options of the filters smx asks that other MTAs' administrators
already run (doc/policy.md): the top-level C{policy NAME { }} sections
(Postfix SMTP access policy servers) and the C{smtps} options that name
which of them are asked at which stage, and their cross-checks (a name
that is not declared is an error at the option that names it); and
the sendmail milters (doc/milter.md): the top-level C{milter NAME { }}
sections and the C{milters} lists of C{smtps} and C{qmgr}.

L{smx.config.options} adds these to its table; L{smx.config.reconcile}
calls L{checkFilters} and L{checkMilters}.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any, Dict, List, Tuple

from smx.config.commonoptions import opt
from smx.config.schema import REQUIRED_NAME, Member, section
from smx.config.values import ListOf, Name, String, Time, ValueProblem

if TYPE_CHECKING:  # pragma: no cover
    from smx.config.model import Configuration, Section


# -- policy: Postfix SMTP access policy servers -----------------------------


def _checkPolicySocket(text: str) -> None:
    from smx.milter.policyclient import parsePolicySocket

    try:
        parsePolicySocket(text)
    except ValueError as e:
        raise ValueProblem(str(e))


def _checkDefaultAction(text: str) -> None:
    from smx.milter.policy import defaultDecision

    try:
        defaultDecision(text)
    except ValueError as e:
        raise ValueProblem(str(e))


class PolicySocket(String):
    """
    C{unix:/path} or C{inet:host:port} (Postfix's C{check_policy_service}
    forms); a relative Unix socket path is relative to the queue
    directory, as Postfix's C{unix:private/policy} is.
    """

    def __init__(self) -> None:
        String.__init__(self, _checkPolicySocket, "policy socket", empty=False)

    def resolve(self, value: Any, configDirectory: str, queueDirectory: str) -> Any:
        if isinstance(value, str):
            kind, sep, path = value.strip().partition(":")
            if sep and kind.lower() == "unix" and not os.path.isabs(path):
                return "unix:" + os.path.join(queueDirectory, path)
        return value


POLICY = section(
    "policy",
    "smx",
    "a Postfix SMTP access policy server (postgrey, policyd-spf, ...) that "
    "smtps sections ask (doc/policy.md)",
    [
        opt(
            "socket",
            PolicySocket(),
            None,
            "smx",
            "where the server listens: unix:/path (relative: to the queue "
            "directory) or inet:host:port (inet:[::1]:port)",
            required=True,
        ),
        opt(
            "timeout",
            Time(minimum=0.001),
            "10s",
            "smx",
            "the longest a request may take, waiting for the connection and "
            "earlier requests included; then default_action",
        ),
        opt(
            "default_action",
            String(_checkDefaultAction, "action", empty=False),
            "tempfail",
            "smx",
            "what a request gets when the server is down, slow or answers "
            "nonsense: tempfail (451 4.3.5), dunno (as if there were no "
            "server), reject (554 5.7.1) or an access(5) action such as "
            '"450 4.7.1 Try again later"',
        ),
        opt(
            "policy_context",
            String(),
            '""',
            "smx",
            "sent as the policy_context attribute of every request (as "
            "Postfix's check_policy_service { ..., policy_context=... }), "
            "so that one server can tell its callers apart",
        ),
    ],
    naming=REQUIRED_NAME,
    multiple=True,
)

#: smtps option -> the policy protocol_state it asks at, in session order
POLICY_STAGES = (
    ("connect_policies", "CONNECT"),
    ("helo_policies", "HELO"),
    ("mail_policies", "MAIL"),
    ("policies", "RCPT"),
    ("data_policies", "DATA"),
    ("end_of_data_policies", "END-OF-MESSAGE"),
)

_STAGE_DOC = {
    "CONNECT": "when a client connects (after smx's own connection checks; "
    "a rejection refuses the session)",
    "HELO": "at HELO and EHLO",
    "MAIL": "at MAIL",
    "RCPT": "at RCPT, after smx's own access and relay checks (as Postfix's "
    "check_policy_service after reject_unauth_destination)",
    "DATA": "at DATA and the first BDAT",
    "END-OF-MESSAGE": "at the end of the message, before it is queued",
}

#: the smtps options naming policies
SMTPS_POLICY_OPTIONS = [
    opt(
        name,
        ListOf(Name(), typeName="list of names"),
        "{}",
        "smx",
        "policy servers (policy NAME sections) asked %s, in this order "
        "(doc/policy.md)" % (_STAGE_DOC[state],),
    )
    for name, state in POLICY_STAGES
]  # type: List[Member]
SMTPS_POLICY_OPTIONS.append(
    opt(
        "rcpt_policies",
        ListOf(Name(), typeName="list of names"),
        None,
        "smx",
        "another spelling of policies, named like the other stages",
        aliasOf=("policies",),
    )
)


def checkFilters(configuration: "Configuration", servers: List["Section"]) -> None:
    """
    Every policy an smtps section names is declared (C{policy NAME { }}).

    @raise ConfigError: at the option that names an undeclared one.
    """
    declared = {
        p.name.lower() for p in configuration.sections("policy") if p.name is not None
    }
    for smtps in servers:
        for option, _ in POLICY_STAGES:
            for name in smtps[option]:
                if name.lower() not in declared:
                    spec = smtps.spec.option(option)
                    written = smtps.written(spec) if spec is not None else None
                    raise smtps.error(
                        "%s names policy '%s', which is not declared (declare "
                        "it with 'policy %s { socket = ...; }')"
                        % (written[1] if written else option, name, name),
                        option,
                    )


# -- milter: sendmail milters (doc/milter.md) -------------------------------

from smx.config.schema import Option  # noqa: E402
from smx.config.values import Enum  # noqa: E402


def _milterSocket(text: str) -> None:
    from smx.milter.client import parseSocket

    try:
        parseSocket(text)
    except ValueError as e:
        raise ValueProblem(str(e))


#: a macro name: one character, or a word of letters, digits and
#: underscores with or without braces (sendmail's macid_parse)
_MACRO_NAME = re.compile(r"[!-z|~]|\{[A-Za-z0-9_]+\}|[A-Za-z0-9_]+")


def _macroName(text: str) -> None:
    if _MACRO_NAME.fullmatch(text) is None:
        raise ValueProblem(
            "%r is not a macro name (one character, or letters, digits and "
            'underscores with or without braces: i, client_addr, "{client_addr}")'
            % (text,)
        )


def _macros(stage: str, when: str) -> Option:
    return opt(
        stage,
        ListOf(String(_macroName), typeName="list of macro names"),
        None,
        "smx",
        "macros sent before %s (a name longer than one character may be "
        'written with or without braces: client_addr or "{client_addr}")' % (when,),
        defaultDoc="smx's list, Postfix's milter_%s_macros (doc/milter.md)"
        % ("end_of_header" if stage == "eoh" else stage,),
    )


#: C{milter NAME { ... }}: one sendmail milter (top level)
MILTER = section(
    "milter",
    "smx",
    "a sendmail milter (libmilter protocol 6: opendkim, opendmarc, "
    "rspamd, clamav-milter, ...) that smtps sections and QMGR name in "
    "their 'milters' lists (doc/milter.md)",
    [
        opt(
            "socket",
            String(_milterSocket, typeName="milter socket", empty=False),
            None,
            "smx",
            "where the milter listens: unix:/path (local:/path), "
            "inet:port@host, inet6:port@host or inet:host:port",
            required=True,
        ),
        opt(
            "connect_timeout",
            Time(minimum=0.001),
            "30s",
            "smx",
            "the longest wait for the connection to the milter (Postfix's "
            "milter_connect_timeout)",
        ),
        opt(
            "command_timeout",
            Time(minimum=0.001),
            "30s",
            "smx",
            "the longest wait for a reply from connect to DATA (Postfix's "
            "milter_command_timeout)",
        ),
        opt(
            "content_timeout",
            Time(minimum=0.001),
            "300s",
            "smx",
            "the longest wait for a reply to the header, the body and the end "
            "of the message (Postfix's milter_content_timeout)",
        ),
        opt(
            "default_action",
            Enum(("tempfail", "accept", "reject")),
            "tempfail",
            "smx",
            "what happens when the milter is down, slow, closes the "
            "connection or breaks the protocol: tempfail (451 4.7.1), reject "
            "(550 5.5.0) or accept (the milter is ignored for the session)",
        ),
        section(
            "macros",
            "smx",
            "the macro names sent before each stage (Postfix's "
            "milter_*_macros); a stage not set here gets smx's default list",
            [
                _macros("connect", "the connection"),
                _macros("helo", "HELO/EHLO"),
                _macros("mail", "MAIL"),
                _macros("rcpt", "RCPT"),
                _macros("data", "DATA"),
                _macros("eoh", "the end of the header"),
                _macros("eom", "the end of the message"),
            ],
        ),
    ],
    naming=REQUIRED_NAME,
    multiple=True,
)

#: C{milters = { ... };} of an smtps section
SMTPS_MILTERS = opt(
    "milters",
    ListOf(Name(), typeName="list of names"),
    "{}",
    "smx",
    "the milter sections whose milters see the mail of this server, asked "
    "in this order, each seeing the changes of the ones before (Postfix's "
    "smtpd_milters); smx sendmail submits through SMTPS, so its mail sees "
    "the milters of the server it submits to (doc/milter.md)",
)

#: C{milters = { ... };} of the qmgr section
QMGR_MILTERS = opt(
    "milters",
    ListOf(Name(), typeName="list of names"),
    "{}",
    "smx",
    "the milter sections whose milters see the delivery status "
    "notifications (bounces, delay warnings, success notices) QMGR creates, "
    "in this order (Postfix's non_smtpd_milters with "
    "internal_mail_filter_classes = bounce, notify; doc/milter.md)",
)


def _checkMilterList(holder: "Section", declared: List[str]) -> None:
    for name in holder["milters"]:
        if name.lower() not in declared:
            hint = " (declared: %s)" % (", ".join(sorted(declared)),)
            raise holder.error(
                "milters names milter '%s', which is not declared (declare it "
                "with 'milter %s { socket = ...; }')%s"
                % (name, name, hint if declared else ""),
                "milters",
            )


def checkMilters(configuration: "Configuration") -> None:
    """
    Every C{milters} list (of an smtps section, of qmgr) names a declared
    C{milter} section.

    @raise ConfigError: at the list that names one that is not.
    """
    declared = [
        m.name.lower() for m in configuration.sections("milter") if m.name is not None
    ]
    servers = list(configuration.sections("smtps")) or [configuration.section("smtps")]
    for holder in servers + [configuration.section("qmgr")]:
        _checkMilterList(holder, declared)

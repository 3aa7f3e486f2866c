# -*- test-case-name: smx.pmilter.test.test_remote -*-
"""
NAME
    smx.pmilter.protocol - the AMP commands between SMTPS and a
    C{smx pmilter-server}

DESCRIPTION
    The seed's libpmilter talks to the SMTP servers over a Unix domain
    socket with an internal protocol (App. B: "this protocol can be
    changed without changing the visible API").  smx's is AMP: one
    connection per SMTP server (C{pmss_ctx}), opened with L{Negotiate}
    (App. B.3), then one command per call of the host API
    (L{smx.interfaces.IPolicyMilterSession}) with the session's number;
    the answer of each decision stage is a
    L{smx.pmilter.decision.Decision} as fields.

    A body chunk is at most L{MAX_CHUNK} bytes (an AMP value holds at most
    65,535); longer chunks are sent as several.
"""

from __future__ import annotations

from typing import Any, Dict

from twisted.protocols import amp

#: the version of this protocol; a server of another one refuses
PROTOCOL_VERSION = 1
#: the most bytes of content in one L{Body} command
MAX_CHUNK = 60000


class VersionMismatch(Exception):
    """
    The two sides speak different versions of the protocol.
    """


class UnknownSession(Exception):
    """
    A command names a session the server does not know.
    """


class NotNegotiated(Exception):
    """
    A command came before L{Negotiate}.
    """


_ERRORS = {
    UnknownSession: b"UNKNOWN_SESSION",
    NotNegotiated: b"NOT_NEGOTIATED",
}

#: the fields of a decision
DECISION = [
    (b"code", amp.Integer(optional=True)),
    (b"enhanced", amp.Unicode(optional=True)),
    (b"text", amp.Unicode(optional=True)),
    (b"accept", amp.Boolean()),
    (b"discard", amp.Boolean()),
    (b"ssd", amp.Boolean()),
    (b"quick", amp.Boolean()),
    (b"failed", amp.Boolean()),
    (b"pmilter", amp.Unicode(optional=True)),
]


class Negotiate(amp.Command):
    """
    An SMTP server begins to use the pmilter server (App. B.3): what it
    offers, and its failure policy, which the server applies to its
    pmilters.  The answer names the pmilters and the callbacks they want
    (C{"rcpt_st"} for rejected recipients, C{"dot_msgid"} when the
    Message-Id is wanted).
    """

    arguments = [
        (b"version", amp.Integer()),
        (b"hostname", amp.Unicode()),
        (b"stages", amp.ListOf(amp.Unicode())),
        (b"capabilities", amp.ListOf(amp.Unicode())),
        (b"onFailure", amp.Unicode()),
    ]
    response = [
        (b"version", amp.Integer()),
        (b"pmilters", amp.ListOf(amp.Unicode())),
        (b"wants", amp.ListOf(amp.Unicode())),
    ]
    errors = {VersionMismatch: b"VERSION"}


class _SessionCommand(amp.Command):
    response = DECISION
    errors = _ERRORS


class Connect(_SessionCommand):
    arguments = [
        (b"session", amp.Integer()),
        (b"sessionId", amp.Unicode()),
        (b"hostname", amp.Unicode(optional=True)),
        (b"family", amp.Unicode()),
        (b"host", amp.Unicode(optional=True)),
        (b"port", amp.Integer(optional=True)),
    ]
    response = DECISION + [(b"wants", amp.ListOf(amp.Unicode()))]


class Helo(_SessionCommand):
    arguments = [(b"session", amp.Integer()), (b"helohost", amp.Unicode())]


class Mail(_SessionCommand):
    arguments = [
        (b"session", amp.Integer()),
        (b"address", amp.Unicode()),
        (b"args", amp.ListOf(amp.Unicode())),
        (b"transactionId", amp.Unicode(optional=True)),
    ]


class Rcpt(_SessionCommand):
    arguments = [
        (b"session", amp.Integer()),
        (b"address", amp.Unicode()),
        (b"args", amp.ListOf(amp.Unicode())),
        (b"status", amp.Integer()),
    ]


class Data(_SessionCommand):
    arguments = [(b"session", amp.Integer())]


class Unknown(_SessionCommand):
    arguments = [(b"session", amp.Integer()), (b"command", amp.Unicode())]


class Eom(_SessionCommand):
    arguments = [
        (b"session", amp.Integer()),
        (b"messageId", amp.Unicode(optional=True)),
    ]


class Body(amp.Command):
    arguments = [(b"session", amp.Integer()), (b"chunk", amp.String())]
    response = []  # type: ignore[var-annotated]
    errors = _ERRORS


class Abort(amp.Command):
    arguments = [(b"session", amp.Integer())]
    response = []  # type: ignore[var-annotated]
    errors = _ERRORS


class Close(amp.Command):
    arguments = [(b"session", amp.Integer())]
    response = []  # type: ignore[var-annotated]
    errors = _ERRORS


class Reload(amp.Command):
    """
    SIGUSR1 of the SMTP server: the pmilters read their files again.
    """

    arguments = []  # type: ignore[var-annotated]
    response = []  # type: ignore[var-annotated]


def decisionFields(decision: Any) -> Dict[str, Any]:
    """
    The AMP fields of a decision (optional fields left out when C{None}).
    """
    return {k: v for k, v in decision.toFields().items() if v is not None}


def clip(text: str, limit: int = 16000) -> str:
    """
    A string short enough for an AMP value (at most 65,535 bytes UTF-8).
    """
    return text if len(text) <= limit else text[:limit]

# -*- test-case-name: smx.mail.test.test_serverstates -*-
"""
The states of the sans-I/O SMTP/LMTP server machine (L{smx.mail.server})
and the one table of which command is allowed in which state.

L{SMTP_COMMANDS} and L{LMTP_COMMANDS} map C{(state, VERB)} to either
L{Allow} (the command's C{do_VERB} checks its syntax and limits; when the
event it returns is accepted, the session goes to C{Allow.next}) or
L{Refuse} (the reply sent instead, nothing else happens).  C{(state,
None)} is the answer to every verb a state has no row for; a verb
without either row is unknown (500 5.5.1, a bad command).  Commands the
machine answers itself (NOOP, HELP, VRFY, EXPN) stay in their state.

The transitions that are not commands are fixed in the machine::

    CONNECTED --greet--> GREETED            --refuse 4xx--> CLOSED
    CONNECTED --refuse 5xx--> REFUSED
    DATA --final dot--> END_OF_DATA --reply(ies) to it--> READY
    TLS --handshake done--> GREETED
    (AUTH accepted:) READY --334 challenge--> AUTH --response line--> READY
    any --timeout, shutdown, 421, too many bad commands--> CLOSED

A rejected event leaves the state as it was (a rejected QUIT and any 421
close the session).  LMTP (RFC 2033) differs from SMTP in three rows per
state: LHLO takes the place of HELO and EHLO, which are refused with
500, and DATA without an accepted recipient is 503 (RFC 2033 §4.2).

BDAT (RFC 3030 CHUNKING) is allowed where DATA is and leads to L{State.
BDAT}, where only more BDAT (and RSET, HELO/EHLO, NOOP, QUIT, ...) is
allowed: DATA there is 503, BDAT and DATA are never mixed in one
transaction.  The machine reads the declared octets of every BDAT, even of
a refused one, before it reads the next command::

    RCPT/BDAT --BDAT n--> CHUNK --n octets--> BDAT (250 n octets received)
    RCPT/BDAT --BDAT n LAST--> CHUNK --n octets--> END_OF_DATA
    any --refused BDAT n--> CHUNK (skipping n octets) --> the same state
"""

from __future__ import annotations

import enum
from typing import Dict, NamedTuple, Optional, Tuple, Union


class State(enum.Enum):
    """Where a server session is."""

    # members are singletons compared by identity: the hash of the object
    # (a C slot) in place of Enum's, a Python call hashing the name, in
    # the command table's look-ups of every command line
    __hash__ = object.__hash__

    #: no greeting sent yet
    CONNECTED = "connected"
    #: greeting sent: HELO/EHLO (LHLO) expected
    GREETED = "greeted"
    #: the client said HELO: no mail transaction
    READY = "ready"
    #: MAIL accepted, no recipient yet
    MAIL = "mail"
    #: at least one recipient accepted
    RCPT = "rcpt"
    #: reading the message content (after 354)
    DATA = "data"
    #: between the chunks of a BDAT transaction (RFC 3030): more BDAT
    BDAT = "bdat"
    #: reading the octets of a BDAT chunk (or skipping those of a refused one)
    CHUNK = "chunk"
    #: the final dot was read; its reply (LMTP: one per recipient) is due
    END_OF_DATA = "end of data"
    #: a SASL response line is expected (after 334)
    AUTH = "auth"
    #: STARTTLS accepted: the handshake is under way
    TLS = "tls"
    #: the session was refused with 554: only QUIT is allowed
    REFUSED = "refused"
    #: the session is over
    CLOSED = "closed"


class Allow(NamedTuple):
    """The command is allowed; accepting its event goes to C{next}."""

    next: State


class Refuse(NamedTuple):
    """The command is out of sequence here: this reply is sent instead."""

    code: int
    dsn: str
    text: str


Rule = Union[Allow, Refuse]
Table = Dict[Tuple[State, Optional[str]], Rule]

#: the states in which command lines are read
COMMAND_STATES = (State.GREETED, State.READY, State.MAIL, State.RCPT, State.BDAT)

_NEED_MAIL = Refuse(503, "5.5.1", "Need MAIL command")


def _commands(lmtp: bool) -> Table:
    G, R, M, T = State.GREETED, State.READY, State.MAIL, State.RCPT
    B = State.BDAT
    table = {}  # type: Table
    hello = ("LHLO",) if lmtp else ("HELO", "EHLO")
    for state in COMMAND_STATES:
        for verb in hello:
            table[state, verb] = Allow(R)
        if lmtp:
            for verb in ("HELO", "EHLO"):
                table[state, verb] = Refuse(500, "5.5.1", "This is LMTP: use LHLO")
        for verb in ("NOOP", "HELP", "VRFY", "EXPN"):
            table[state, verb] = Allow(state)
        table[state, "RSET"] = Allow(G if state is G else R)
        table[state, "QUIT"] = Allow(State.CLOSED)
        table[state, "STARTTLS"] = Allow(State.TLS)
    table[G, "MAIL"] = Refuse(
        503, "5.5.1", "Polite people say %s first" % ("LHLO" if lmtp else "HELO",)
    )
    table[R, "MAIL"] = Allow(M)
    table[M, "MAIL"] = table[T, "MAIL"] = Refuse(
        503, "5.5.1", "Sender already specified"
    )
    table[G, "RCPT"] = table[R, "RCPT"] = Refuse(503, "5.5.1", "Need MAIL before RCPT")
    table[M, "RCPT"] = table[T, "RCPT"] = Allow(T)
    table[G, "DATA"] = table[R, "DATA"] = _NEED_MAIL
    # RFC 2033 §4.2: DATA without a successful RCPT MUST fail with 503
    table[M, "DATA"] = Refuse(503 if lmtp else 554, "5.5.1", "No valid recipients")
    table[T, "DATA"] = Allow(State.DATA)
    # RFC 3030: BDAT where DATA is allowed; no DATA, MAIL, RCPT or AUTH
    # between the chunks of a message (RSET, HELO/EHLO end it)
    table[G, "BDAT"] = table[R, "BDAT"] = _NEED_MAIL
    table[M, "BDAT"] = table[M, "DATA"]
    table[T, "BDAT"] = table[B, "BDAT"] = Allow(B)
    for verb in ("DATA", "MAIL", "RCPT", "AUTH"):
        table[B, verb] = Refuse(
            503, "5.5.1", "%s not allowed during a BDAT transfer" % (verb,)
        )
    table[G, "AUTH"] = Refuse(
        503, "5.5.1", "Send %s first" % ("LHLO" if lmtp else "EHLO",)
    )
    table[R, "AUTH"] = Allow(R)
    table[M, "AUTH"] = table[T, "AUTH"] = Refuse(
        503, "5.5.1", "AUTH not allowed during a mail transaction"
    )
    table[State.REFUSED, "QUIT"] = Allow(State.CLOSED)
    table[State.REFUSED, None] = Refuse(
        503, "5.5.1", "Bad sequence of commands: session refused"
    )
    return table


#: ESMTP (RFC 5321): C{(state, verb)} -> L{Allow} or L{Refuse}
SMTP_COMMANDS = _commands(lmtp=False)
#: LMTP (RFC 2033): the same with LHLO in place of HELO/EHLO
LMTP_COMMANDS = _commands(lmtp=True)


def rule(table: Table, state: State, verb: str) -> Optional[Rule]:
    """
    @return: what C{table} says about C{verb} in C{state}, or C{None} for
        an unknown command.
    """
    found = table.get((state, verb))
    if found is None:
        found = table.get((state, None))
    return found

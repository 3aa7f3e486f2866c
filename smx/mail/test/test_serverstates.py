# -*- test-case-name: smx.mail.test.test_serverstates -*-
"""
Tests for L{smx.mail.serverstates}: the table of which command is allowed
in which state, checked directly and through the machine
(L{smx.mail.server.ServerConnection}) in SMTP and in LMTP mode.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Tuple

from twisted.trial import unittest

from smx.mail import server as sm
from smx.mail.serverstates import (
    COMMAND_STATES,
    LMTP_COMMANDS,
    SMTP_COMMANDS,
    Allow,
    Refuse,
    State,
    rule,
)
from smx.mail.test.test_server import run
from smx.mail.testing import serverConnection

#: one well-formed line per command
LINES = {
    "HELO": b"HELO client.test",
    "EHLO": b"EHLO client.test",
    "LHLO": b"LHLO client.test",
    "MAIL": b"MAIL FROM:<a@b.test>",
    "RCPT": b"RCPT TO:<c@d.test>",
    "DATA": b"DATA",
    "RSET": b"RSET",
    "NOOP": b"NOOP",
    "QUIT": b"QUIT",
    "VRFY": b"VRFY someone",
    "EXPN": b"EXPN list",
    "HELP": b"HELP",
    "STARTTLS": b"STARTTLS",
    "AUTH": b"AUTH PLAIN",
    "BDAT": b"BDAT 0",
}

#: state, command: the reply code and the state after it (every event
#: accepted), in SMTP and in LMTP
TABLE = """
greeted  HELO      250 ready     500 greeted
greeted  EHLO      250 ready     500 greeted
greeted  LHLO      500 greeted   250 ready
greeted  MAIL      503 greeted   503 greeted
greeted  RCPT      503 greeted   503 greeted
greeted  DATA      503 greeted   503 greeted
greeted  RSET      250 greeted   250 greeted
greeted  NOOP      250 greeted   250 greeted
greeted  QUIT      221 closed    221 closed
greeted  VRFY      252 greeted   252 greeted
greeted  EXPN      502 greeted   502 greeted
greeted  HELP      214 greeted   214 greeted
greeted  STARTTLS  220 tls       220 tls
greeted  AUTH      503 greeted   503 greeted
greeted  BDAT      503 greeted   503 greeted
ready    HELO      250 ready     500 ready
ready    EHLO      250 ready     500 ready
ready    LHLO      500 ready     250 ready
ready    MAIL      250 mail      250 mail
ready    RCPT      503 ready     503 ready
ready    DATA      503 ready     503 ready
ready    RSET      250 ready     250 ready
ready    NOOP      250 ready     250 ready
ready    QUIT      221 closed    221 closed
ready    VRFY      252 ready     252 ready
ready    EXPN      502 ready     502 ready
ready    HELP      214 ready     214 ready
ready    STARTTLS  220 tls       220 tls
ready    AUTH      235 ready     235 ready
ready    BDAT      503 ready     503 ready
mail     HELO      250 ready     500 mail
mail     EHLO      250 ready     500 mail
mail     LHLO      500 mail      250 ready
mail     MAIL      503 mail      503 mail
mail     RCPT      250 rcpt      250 rcpt
mail     DATA      554 mail      503 mail
mail     RSET      250 ready     250 ready
mail     NOOP      250 mail      250 mail
mail     QUIT      221 closed    221 closed
mail     VRFY      252 mail      252 mail
mail     EXPN      502 mail      502 mail
mail     HELP      214 mail      214 mail
mail     STARTTLS  220 tls       220 tls
mail     AUTH      503 mail      503 mail
mail     BDAT      554 mail      503 mail
rcpt     HELO      250 ready     500 rcpt
rcpt     EHLO      250 ready     500 rcpt
rcpt     LHLO      500 rcpt      250 ready
rcpt     MAIL      503 rcpt      503 rcpt
rcpt     RCPT      250 rcpt      250 rcpt
rcpt     DATA      354 data      354 data
rcpt     RSET      250 ready     250 ready
rcpt     NOOP      250 rcpt      250 rcpt
rcpt     QUIT      221 closed    221 closed
rcpt     VRFY      252 rcpt      252 rcpt
rcpt     EXPN      502 rcpt      502 rcpt
rcpt     HELP      214 rcpt      214 rcpt
rcpt     STARTTLS  220 tls       220 tls
rcpt     AUTH      503 rcpt      503 rcpt
rcpt     BDAT      250 bdat      250 bdat
bdat     HELO      250 ready     500 bdat
bdat     EHLO      250 ready     500 bdat
bdat     LHLO      500 bdat      250 ready
bdat     MAIL      503 bdat      503 bdat
bdat     RCPT      503 bdat      503 bdat
bdat     DATA      503 bdat      503 bdat
bdat     RSET      250 ready     250 ready
bdat     NOOP      250 bdat      250 bdat
bdat     QUIT      221 closed    221 closed
bdat     VRFY      252 bdat      252 bdat
bdat     EXPN      502 bdat      502 bdat
bdat     HELP      214 bdat      214 bdat
bdat     STARTTLS  220 tls       220 tls
bdat     AUTH      503 bdat      503 bdat
bdat     BDAT      250 bdat      250 bdat
refused  HELO      503 refused   503 refused
refused  EHLO      503 refused   503 refused
refused  LHLO      503 refused   503 refused
refused  MAIL      503 refused   503 refused
refused  RCPT      503 refused   503 refused
refused  DATA      503 refused   503 refused
refused  RSET      503 refused   503 refused
refused  NOOP      503 refused   503 refused
refused  QUIT      221 closed    221 closed
refused  VRFY      503 refused   503 refused
refused  EXPN      503 refused   503 refused
refused  HELP      503 refused   503 refused
refused  STARTTLS  503 refused   503 refused
refused  AUTH      503 refused   503 refused
refused  BDAT      503 refused   503 refused
"""


def parseTable() -> List[Tuple[State, str, Tuple[int, State], Tuple[int, State]]]:
    rows = []
    for line in TABLE.strip().splitlines():
        state, verb, smtpCode, smtpNext, lmtpCode, lmtpNext = line.split()
        rows.append(
            (
                State(state),
                verb,
                (int(smtpCode), State(smtpNext)),
                (int(lmtpCode), State(lmtpNext)),
            )
        )
    return rows


def connectionIn(state: State, lmtp: bool) -> sm.ServerConnection:
    """
    A session in C{state}, offering STARTTLS and AUTH PLAIN, reached the
    way a client reaches it.
    """
    conn = serverConnection(
        "mx.test",
        tlsAvailable=True,
        authMechanisms=("PLAIN",),
        authRequiresTLS=False,
        lmtp=lmtp,
    )
    if state is State.REFUSED:
        conn.refuse(550, "5.7.1", "no")
    else:
        conn.greet()
        steps = {
            State.GREETED: [],
            State.READY: ["LHLO" if lmtp else "EHLO"],
            State.MAIL: ["LHLO" if lmtp else "EHLO", "MAIL"],
            State.RCPT: ["LHLO" if lmtp else "EHLO", "MAIL", "RCPT"],
            State.BDAT: ["LHLO" if lmtp else "EHLO", "MAIL", "RCPT", "BDAT"],
        }[state]
        run(conn, b"".join(LINES[verb] + b"\r\n" for verb in steps))
    conn.dataToSend()
    assert conn.state is state, (conn.state, state)
    return conn


class TableTests(unittest.TestCase):
    """The table itself."""

    def test_complete(self) -> None:
        """
        Every command state has a row for every command of its protocol
        (or one for every command); nothing else is known.
        """
        for table, unknown in ((SMTP_COMMANDS, "LHLO"), (LMTP_COMMANDS, None)):
            for state in COMMAND_STATES:
                for verb in LINES:
                    found = rule(table, state, verb)
                    if verb == unknown:
                        self.assertIsNone(found)
                    else:
                        self.assertIsInstance(found, (Allow, Refuse), (state, verb))
                self.assertIsNone(rule(table, state, "FOO"))
            self.assertIsInstance(rule(table, State.REFUSED, "FOO"), Refuse)
            for state in (
                State.DATA,
                State.CHUNK,
                State.END_OF_DATA,
                State.AUTH,
                State.TLS,
            ):
                self.assertFalse([k for k in table if k[0] is state])

    def test_refusalsAreSequenceErrors(self) -> None:
        """
        The table refuses with 503 (554 for DATA without a recipient in
        SMTP) and, in LMTP, 500 for HELO and EHLO only.
        """
        for lmtp, table in ((False, SMTP_COMMANDS), (True, LMTP_COMMANDS)):
            for (state, verb), found in table.items():
                if isinstance(found, Refuse):
                    if verb in ("HELO", "EHLO") and state is not State.REFUSED:
                        self.assertTrue(lmtp)
                        self.assertEqual(found.code, 500)
                    elif verb in ("DATA", "BDAT") and state is State.MAIL and not lmtp:
                        self.assertEqual(found.code, 554)
                    else:
                        self.assertEqual(found.code, 503, (state, verb))


class TransitionTests(unittest.TestCase):
    """
    Every command in every command state, through the machine: the reply
    code and the state the session is in after it (events accepted).
    """

    def check(self, lmtp: bool) -> None:
        results = {}  # type: Dict[Tuple[State, str], Tuple[int, State]]
        expected = {}  # type: Dict[Tuple[State, str], Tuple[int, State]]
        for state, verb, smtp, lmtpResult in parseTable():
            expected[state, verb] = lmtpResult if lmtp else smtp
            conn = connectionIn(state, lmtp)
            _, out = run(conn, LINES[verb] + b"\r\n")
            results[state, verb] = (int(out[:3]), conn.state)
        self.assertEqual(
            len(expected), len(COMMAND_STATES + (State.REFUSED,)) * len(LINES)
        )
        for key in sorted(expected, key=lambda k: (k[0].value, k[1])):
            self.assertEqual(results[key], expected[key], key)

    def test_smtp(self) -> None:
        """The SMTP column of L{TABLE}."""
        self.check(lmtp=False)

    def test_lmtp(self) -> None:
        """The LMTP column of L{TABLE}."""
        self.check(lmtp=True)

    def test_data(self) -> None:
        """
        DATA accepted reads content; the final dot waits in END_OF_DATA for
        its reply, which leads to READY, accepted or rejected.
        """
        answers = {
            "accept": lambda conn: conn.accept(),
            "reject": lambda conn: conn.reject(554, "5.6.0", "no"),
        }  # type: Dict[str, Callable[[sm.ServerConnection], None]]
        for name, answer in answers.items():
            conn = connectionIn(State.RCPT, lmtp=False)
            run(conn, b"DATA\r\n")
            self.assertIs(conn.state, State.DATA)
            self.assertTrue(conn.receivingData)
            conn.receiveData(b"x\r\n.\r\n")
            self.assertIsInstance(conn.nextEvent(), sm.DataChunk)
            self.assertIsInstance(conn.nextEvent(), sm.EndOfData)
            self.assertIs(conn.state, State.END_OF_DATA)
            self.assertTrue(conn.awaitingReply)
            self.assertFalse(conn.receivingData)
            answer(conn)
            self.assertIs(conn.state, State.READY, name)
            self.assertFalse(conn.awaitingReply)

    def test_tls(self) -> None:
        """After the TLS handshake the session starts over in GREETED."""
        conn = connectionIn(State.RCPT, lmtp=False)
        run(conn, b"STARTTLS\r\n")
        self.assertIs(conn.state, State.TLS)
        conn.tlsStarted()
        self.assertIs(conn.state, State.GREETED)

    def test_auth(self) -> None:
        """A 334 challenge reads a response line, then the session is READY."""
        conn = connectionIn(State.READY, lmtp=False)
        conn.receiveData(b"AUTH PLAIN\r\n")
        conn.nextEvent()
        conn.challenge("")
        self.assertIs(conn.state, State.AUTH)
        conn.receiveData(b"AGEAYg==\r\n")
        self.assertIsInstance(conn.nextEvent(), sm.AuthResponse)
        conn.reject(535, "5.7.8", "no")
        self.assertIs(conn.state, State.READY)

    def test_connected(self) -> None:
        """Before the greeting nothing is read; a 4xx refusal closes."""
        conn = serverConnection("mx.test")
        self.assertIs(conn.state, State.CONNECTED)
        conn.receiveData(b"NOOP\r\n")
        self.assertIs(conn.nextEvent(), sm.NEED_DATA)
        conn.refuse(421, "4.3.0", "later")
        self.assertIs(conn.state, State.CLOSED)
        self.assertTrue(conn.closed)

# -*- test-case-name: smx.milter.test.test_protocol -*-
"""
Tests of the milter protocol without I/O: the packet codec
(L{smx.milter.codec}), the macros (L{smx.milter.macros}), the message
modifications (L{smx.milter.modifications}) and the session state
machine (L{smx.milter.protocol}).  The tests play the milter: they read
the packets the machine wrote and feed it reply packets.
"""

from __future__ import annotations

import struct
from typing import Any, List, Sequence, Tuple

from twisted.trial import unittest

from smx.milter import codec
from smx.milter.codec import MilterProtocolError
from smx.milter.macros import (
    DEFAULT_MACROS,
    MacroLists,
    authMacros,
    connectMacros,
    rejectedRecipientMacros,
    select,
    tlsMacros,
)
from smx.milter.modifications import (
    AddHeader,
    AddRecipient,
    ChangeFrom,
    ChangeHeader,
    DeleteHeader,
    DeleteRecipient,
    EditedMessage,
    Envelope,
    HeaderError,
    InsertHeader,
    Quarantine,
    Recipient,
    ReplaceBody,
    applyModifications,
    asPlain,
    fromMilterValue,
    fromPlain,
    joinMessage,
    sameAddress,
    splitMessage,
    toMilterValue,
)
from smx.milter.protocol import (
    ACCEPT,
    CONTINUE,
    DISCARD,
    NEED_DATA,
    REJECT,
    SHUTDOWN,
    TEMPFAIL,
    ConnectInfo,
    Decision,
    Failed,
    MilterMachine,
    Negotiated,
    Progress,
    StageDone,
    failureDecision,
)

CLIENT = ConnectInfo("client.example", "inet", "192.0.2.1", 4711)


def reply(command: bytes, data: bytes = b"") -> bytes:
    """A packet from the milter (no length limit, unlike the encoders)."""
    return struct.pack("!I", len(data) + 1) + command + data


def negotiation(
    protocol: int = 0,
    actions: int = codec.SMFIF_ALL,
    version: int = 6,
    symlists: Sequence[Tuple[int, str]] = (),
) -> bytes:
    data = struct.pack("!III", version, actions, protocol)
    for stage, names in symlists:
        data += struct.pack("!I", stage) + names.encode() + b"\0"
    return reply(b"O", data)


def sent(machine: MilterMachine) -> List[Tuple[bytes, bytes]]:
    """The packets the machine wrote since last asked."""
    return codec.PacketParser(10**8).feed(machine.dataToSend())


def commands(machine: MilterMachine) -> List[bytes]:
    return [command for command, data in sent(machine)]


def events(machine: MilterMachine) -> List[Any]:
    out = []
    while True:
        event = machine.nextEvent()
        if event is NEED_DATA:
            return out
        out.append(event)


def opened(protocol: int = 0, **kwargs: Any) -> MilterMachine:
    """A machine past negotiation and connect, its output read."""
    machine = MilterMachine(**kwargs)
    machine.connect(CLIENT, {"j": "mx.example"})
    machine.receiveData(negotiation(protocol))
    if machine.awaiting == "connect":
        machine.receiveData(reply(b"c"))
    events(machine)
    machine.dataToSend()
    return machine


def inTransaction(protocol: int = 0, **kwargs: Any) -> MilterMachine:
    """A machine after MAIL, RCPT and DATA, each continued."""
    machine = opened(protocol, **kwargs)
    for call in (
        lambda: machine.mail("a@example.org"),
        lambda: machine.rcpt("b@example.net"),
        lambda: machine.data(),
    ):
        if call() is None:
            machine.receiveData(reply(b"c"))
    events(machine)
    machine.dataToSend()
    return machine


def strings(data: bytes) -> List[str]:
    return [s.decode() for s in data.split(b"\0")[:-1]]


class PacketTests(unittest.SynchronousTestCase):
    """
    The framing of packets and the encoding of commands.
    """

    def test_encodePacket(self) -> None:
        """
        A packet is a 4-byte big-endian length counting the command byte
        and the data, the command, the data.
        """
        self.assertEqual(codec.encodePacket(b"H", b"x\0"), b"\x00\x00\x00\x03Hx\x00")
        self.assertEqual(codec.encodePacket(b"Q"), b"\x00\x00\x00\x01Q")

    def test_commandLimit(self) -> None:
        """
        A command carries at most 65535 bytes of data: the most
        libmilter reads by default (MILTER_MAX_DATA_SIZE).
        """
        self.assertEqual(codec.MAX_COMMAND_DATA, 65535)
        codec.encodePacket(b"B", b"x" * 65535)
        self.assertRaises(ValueError, codec.encodePacket, b"B", b"x" * 65536)

    def test_strings(self) -> None:
        """
        Strings end with a NUL; bytes decoded with surrogateescape go out
        unchanged; a NUL inside a string cannot be sent.
        """
        self.assertEqual(codec.encodeString("abc"), b"abc\0")
        text = b"caf\xe9".decode("utf-8", "surrogateescape")
        self.assertEqual(codec.encodeString(text), b"caf\xe9\0")
        self.assertEqual(codec.decodeString(b"caf\xe9"), text)
        self.assertRaises(ValueError, codec.encodeString, "a\0b")

    def test_optionNegotiation(self) -> None:
        """
        C{SMFIC_OPTNEG} carries the version, the actions and the protocol
        flags, three 32-bit numbers.
        """
        self.assertEqual(
            codec.optionNegotiation(6, 0x1FF, 0x1FFFFF),
            b"\x00\x00\x00\x0dO" + struct.pack("!III", 6, 0x1FF, 0x1FFFFF),
        )

    def test_connect(self) -> None:
        """
        C{SMFIC_CONNECT}: host name, family, port (2 bytes), address; for
        an unknown family only the host name and the family.
        """
        [(command, data)] = codec.PacketParser().feed(
            codec.connect("host.example", codec.SMFIA_INET6, 25, "::1")
        )
        self.assertEqual(command, b"C")
        self.assertEqual(data, b"host.example\x006\x00\x19::1\x00")
        [(command, data)] = codec.PacketParser().feed(
            codec.connect("localhost", codec.SMFIA_UNKNOWN, 0, "")
        )
        self.assertEqual(data, b"localhost\x00U")

    def test_macros(self) -> None:
        """
        C{SMFIC_MACRO}: the command the macros are for, then name and
        value strings.
        """
        [(command, data)] = codec.PacketParser().feed(
            codec.macros(b"M", [("i", "ABC"), ("{mail_addr}", "a@b")])
        )
        self.assertEqual(command, b"D")
        self.assertEqual(data, b"Mi\0ABC\0{mail_addr}\0a@b\0")

    def test_simpleCommands(self) -> None:
        """
        Each command has the letter of libmilter's mfdef.h.
        """
        self.assertEqual(
            [
                codec.SMFIC_ABORT,
                codec.SMFIC_BODY,
                codec.SMFIC_CONNECT,
                codec.SMFIC_MACRO,
                codec.SMFIC_BODYEOB,
                codec.SMFIC_HELO,
                codec.SMFIC_QUIT_NC,
                codec.SMFIC_HEADER,
                codec.SMFIC_MAIL,
                codec.SMFIC_EOH,
                codec.SMFIC_OPTNEG,
                codec.SMFIC_QUIT,
                codec.SMFIC_RCPT,
                codec.SMFIC_DATA,
                codec.SMFIC_UNKNOWN,
            ],
            [c.encode() for c in "ABCDEHKLMNOQRTU"],
        )
        self.assertEqual(
            codec.PacketParser().feed(
                codec.helo("h")
                + codec.mail(["<a@b>", "SIZE=1"])
                + codec.rcpt(["<c@d>"])
                + codec.header("Subject", "hi")
                + codec.body(b"x\r\n")
                + codec.unknown("FOO bar")
                + codec.simple(codec.SMFIC_EOH)
            ),
            [
                (b"H", b"h\0"),
                (b"M", b"<a@b>\0SIZE=1\0"),
                (b"R", b"<c@d>\0"),
                (b"L", b"Subject\0hi\0"),
                (b"B", b"x\r\n"),
                (b"U", b"FOO bar\0"),
                (b"N", b""),
            ],
        )


class PacketParserTests(unittest.SynchronousTestCase):
    """
    L{codec.PacketParser} splits a byte stream into packets.
    """

    def test_anyBoundary(self) -> None:
        """
        Packets come out whole however the stream is cut.
        """
        stream = reply(b"c") + reply(b"h", b"X\0y\0") + reply(b"a")
        parser = codec.PacketParser()
        out = []
        for i in range(len(stream)):
            out += parser.feed(stream[i : i + 1])
        self.assertEqual(out, [(b"c", b""), (b"h", b"X\0y\0"), (b"a", b"")])
        self.assertEqual(parser.pending, 0)
        self.assertEqual(codec.PacketParser().feed(stream), out)

    def test_zeroLength(self) -> None:
        """
        A length of 0 (no command byte) is malformed.
        """
        self.assertRaises(MilterProtocolError, codec.PacketParser().feed, b"\0\0\0\0c")

    def test_oversize(self) -> None:
        """
        A packet longer than 1 MB (libmilter's largest data size, 1M-1
        bytes, and the command byte) is refused from its length field
        alone, before its data arrives.
        """
        self.assertEqual(codec.MAX_REPLY_DATA, 1048575)
        parser = codec.PacketParser()
        self.assertEqual(parser.feed(struct.pack("!I", 1048576) + b"b"), [])
        e = self.assertRaises(
            MilterProtocolError,
            codec.PacketParser().feed,
            struct.pack("!I", 1048577),
        )
        self.assertIn("1048577", str(e))
        self.assertRaises(
            MilterProtocolError,
            codec.PacketParser().feed,
            b"\xff\xff\xff\xff",
        )

    def test_limit(self) -> None:
        """
        The limit can be lowered.
        """
        parser = codec.PacketParser(maxData=3)
        self.assertEqual(parser.feed(reply(b"b", b"abc")), [(b"b", b"abc")])
        self.assertRaises(MilterProtocolError, parser.feed, reply(b"b", b"abcd"))


class ReplyParsingTests(unittest.SynchronousTestCase):
    """
    L{codec.parseReply} turns every reply into a typed value.
    """

    def test_verdicts(self) -> None:
        """
        The replies without data.
        """
        for command, kind in [
            (b"a", "accept"),
            (b"c", "continue"),
            (b"d", "discard"),
            (b"r", "reject"),
            (b"t", "tempfail"),
            (b"s", "skip"),
            (b"p", "progress"),
            (b"4", "shutdown"),
        ]:
            self.assertEqual(codec.parseReply(command, b""), codec.Verdict(kind))
            self.assertRaises(MilterProtocolError, codec.parseReply, command, b"x")

    def test_replyCode(self) -> None:
        """
        C{SMFIR_REPLYCODE}: a 4xx or 5xx reply, one line or several; C{%%}
        becomes C{%}, a lone C{%} is dropped.
        """
        self.assertEqual(
            codec.parseReply(b"y", b"550 5.7.1 Go away\0"),
            codec.ReplyCode(550, ("5.7.1 Go away",)),
        )
        self.assertEqual(
            codec.parseReply(b"y", b"451-4.7.1 one\r\n451-4.7.1 two\r\n451 4.7.1 3\0"),
            codec.ReplyCode(451, ("4.7.1 one", "4.7.1 two", "4.7.1 3")),
        )
        self.assertEqual(
            codec.parseReply(b"y", b"550 5.7.1 100%% spam, 5% off\0"),
            codec.ReplyCode(550, ("5.7.1 100% spam, 5off",)),
        )
        self.assertEqual(codec.parseReply(b"y", b"554\0"), codec.ReplyCode(554, ("",)))

    def test_badReplyCode(self) -> None:
        """
        Not 4xx or 5xx, lines with different codes, a continuation on the
        last line, or an enhanced status of another class: malformed.
        """
        for text in [
            b"250 ok\0",
            b"55x no\0",
            b"550-5.7.1 a\r\n551 5.7.1 b\0",
            b"550-5.7.1 last line continues\0",
            b"550 5.7.1 a\r\n550 5.7.1 b\0",
            b"550 4.7.1 wrong class\0",
            b"550_bad\0",
            b"\0",
            "4\u00b2\u00b2 superscript digits\0".encode(),
            "5\u0661\u0661 Arabic-Indic digits\0".encode(),
        ]:
            self.assertRaises(MilterProtocolError, codec.parseReply, b"y", text)

    def test_headers(self) -> None:
        """
        Add, insert and change header: an index (32 bits) for the last two,
        then name and value.
        """
        self.assertEqual(codec.parseReply(b"h", b"X-A\0one\0"), AddHeader("X-A", "one"))
        self.assertEqual(
            codec.parseReply(b"i", struct.pack("!I", 0) + b"X-I\0two\0"),
            InsertHeader(0, "X-I", "two"),
        )
        self.assertEqual(
            codec.parseReply(b"m", struct.pack("!I", 2) + b"Subject\0\0"),
            ChangeHeader(2, "Subject", ""),
        )
        for command, data in [
            (b"h", b"X-A\0"),
            (b"h", b"X-A\0one"),
            (b"i", b"\0\0"),
            (b"m", struct.pack("!I", 1) + b"X\0y\0z\0"),
        ]:
            self.assertRaises(MilterProtocolError, codec.parseReply, command, data)

    def test_envelope(self) -> None:
        """
        Change sender and add recipient, with or without ESMTP
        parameters; delete recipient; quarantine; replace body.
        """
        self.assertEqual(
            codec.parseReply(b"e", b"<new@example>\0"), ChangeFrom("<new@example>")
        )
        self.assertEqual(
            codec.parseReply(b"e", b"<new@example>\0SIZE=10 BODY=8BITMIME\0"),
            ChangeFrom("<new@example>", ("SIZE=10", "BODY=8BITMIME")),
        )
        self.assertEqual(codec.parseReply(b"+", b"<r@x>\0"), AddRecipient("<r@x>"))
        self.assertEqual(
            codec.parseReply(b"2", b"<r@x>\0NOTIFY=NEVER\0"),
            AddRecipient("<r@x>", ("NOTIFY=NEVER",)),
        )
        self.assertEqual(codec.parseReply(b"2", b"<r@x>\0"), AddRecipient("<r@x>"))
        self.assertEqual(codec.parseReply(b"-", b"<r@x>\0"), DeleteRecipient("<r@x>"))
        self.assertEqual(codec.parseReply(b"q", b"why\0"), Quarantine("why"))
        self.assertEqual(codec.parseReply(b"b", b"new\r\n"), ReplaceBody(b"new\r\n"))
        self.assertRaises(MilterProtocolError, codec.parseReply, b"+", b"a\0b\0")

    def test_unknown(self) -> None:
        """
        A reply letter the protocol does not define is an error, and so
        is C{SMFIR_CONN_FAIL}, which libmilter never sends.
        """
        self.assertRaises(MilterProtocolError, codec.parseReply, b"Z", b"")
        self.assertRaises(MilterProtocolError, codec.parseReply, b"f", b"")

    def test_negotiation(self) -> None:
        """
        The negotiation reply: three numbers, then C{SETSYMLIST} lists.
        """
        self.assertEqual(
            codec.parseNegotiation(struct.pack("!III", 6, 1, 2)),
            codec.Negotiation(6, 1, 2, ()),
        )
        data = (
            struct.pack("!III", 6, 0x1FF, 0)
            + struct.pack("!I", codec.SMFIM_ENVFROM)
            + b"{mail_addr} i\0"
            + struct.pack("!I", codec.SMFIM_CONNECT)
            + b"j,{client_addr}\0"
        )
        self.assertEqual(
            codec.parseNegotiation(data),
            codec.Negotiation(
                6,
                0x1FF,
                0,
                ((2, ("{mail_addr}", "i")), (0, ("j", "{client_addr}"))),
            ),
        )
        self.assertRaises(MilterProtocolError, codec.parseNegotiation, b"\0" * 11)
        self.assertRaises(
            MilterProtocolError,
            codec.parseNegotiation,
            struct.pack("!III", 6, 0, 0) + b"\0\0\0\0j",
        )


class MacroTests(unittest.SynchronousTestCase):
    """
    The macro lists and values.
    """

    def test_defaults(self) -> None:
        """
        The default lists are Postfix's, with the client macros at
        connect.
        """
        self.assertIn("j", DEFAULT_MACROS.connect)
        self.assertIn("{client_addr}", DEFAULT_MACROS.connect)
        self.assertIn("{cipher}", DEFAULT_MACROS.helo)
        self.assertIn("{auth_authen}", DEFAULT_MACROS.mail)
        self.assertEqual(
            DEFAULT_MACROS.rcpt, ("i", "{rcpt_addr}", "{rcpt_host}", "{rcpt_mailer}")
        )
        self.assertEqual(DEFAULT_MACROS.eom, ("i",))
        self.assertEqual(DEFAULT_MACROS.forStage("nothing"), ())

    def test_select(self) -> None:
        """
        Only macros with a value are sent; braces are optional in the
        values' names.
        """
        self.assertEqual(
            select(["j", "{auth_type}", "i", "v"], {"j": "h", "auth_type": "PLAIN"}),
            (("j", "h"), ("{auth_type}", "PLAIN")),
        )
        self.assertEqual(
            select(["daemon_name"], {"{daemon_name}": "d"}), (("daemon_name", "d"),)
        )

    def test_override(self) -> None:
        """
        C{SETSYMLIST} lists replace those of their stage; unknown stages
        are ignored.
        """
        lists = DEFAULT_MACROS.override(
            [(codec.SMFIM_EOM, ("{msg_id}",)), (99, ("x",))]
        )
        self.assertEqual(lists.eom, ("{msg_id}",))
        self.assertEqual(lists.connect, DEFAULT_MACROS.connect)
        self.assertEqual(MacroLists().override([(codec.SMFIM_EOH, ("i",))]).eoh, ("i",))

    def test_builders(self) -> None:
        """
        The helpers name the values as Postfix does.
        """
        values = connectMacros(
            "mx.example",
            "192.0.2.1",
            4711,
            None,
            "ptr.example",
            "OK",
            "smtps",
            "127.0.0.1",
            25,
            "smx 1",
        )
        self.assertEqual(values["_"], "unknown [192.0.2.1]")
        self.assertEqual(values["{client_name}"], "unknown")
        self.assertEqual(values["{client_port}"], "4711")
        self.assertEqual(values["{daemon_port}"], "25")
        self.assertEqual(values["{if_addr}"], "127.0.0.1")
        self.assertEqual(values["v"], "smx 1")
        self.assertEqual(
            connectMacros("h", "::1", clientName="c.example")["_"], "c.example [::1]"
        )
        self.assertEqual(
            tlsMacros("TLSv1.3", "TLS_AES_256_GCM_SHA384", 256),
            {
                "{tls_version}": "TLSv1.3",
                "{cipher}": "TLS_AES_256_GCM_SHA384",
                "{cipher_bits}": "256",
            },
        )
        self.assertEqual(
            authMacros("PLAIN", "u", "a"),
            {"{auth_type}": "PLAIN", "{auth_authen}": "u", "{auth_author}": "a"},
        )
        self.assertEqual(
            rejectedRecipientMacros("550 5.1.1 no", "5.1.1"),
            {
                "{rcpt_mailer}": "error",
                "{rcpt_host}": "5.1.1",
                "{rcpt_addr}": "550 5.1.1 no",
            },
        )


HEADERS = (
    ("Received", " from client by smx; date"),
    ("Received", " from earlier by other; date"),
    ("Subject", " hello"),
    ("X-Two", " 1"),
    ("X-Two", " 2"),
)

ENVELOPE = Envelope(
    "a@example.org",
    (Recipient("b@example.net"), Recipient("c@Example.NET", ("NOTIFY=NEVER",))),
    ("SIZE=100",),
)


class ApplyModificationsTests(unittest.SynchronousTestCase):
    """
    L{applyModifications} edits a message as sendmail and Postfix do.
    """

    def apply(self, *modifications: Any, ownHeaders: int = 1) -> EditedMessage:
        return applyModifications(
            HEADERS, b"body\r\n", ENVELOPE, modifications, ownHeaders
        )

    def test_nothing(self) -> None:
        """
        No modification: the same message.
        """
        self.assertEqual(
            self.apply(), EditedMessage(HEADERS, b"body\r\n", ENVELOPE, None)
        )

    def test_addHeader(self) -> None:
        """
        An added header goes last.
        """
        self.assertEqual(
            self.apply(AddHeader("X-New", " v")).headers, HEADERS + (("X-New", " v"),)
        )

    def test_insertHeader(self) -> None:
        """
        Insert index 0 is above smx's own Received:, 1 just below it; an
        index past the end appends.
        """
        self.assertEqual(
            self.apply(InsertHeader(0, "X-I", " v")).headers[:2],
            (("X-I", " v"), HEADERS[0]),
        )
        self.assertEqual(
            self.apply(InsertHeader(1, "X-I", " v")).headers[:3],
            (HEADERS[0], ("X-I", " v"), HEADERS[1]),
        )
        self.assertEqual(
            self.apply(InsertHeader(99, "X-I", " v")).headers[-1], ("X-I", " v")
        )

    def test_changeHeader(self) -> None:
        """
        Change index I is the I-th header of that name among those the
        milter saw: smx's own Received: cannot be changed; index 0 is 1;
        names are compared without case.
        """
        headers = self.apply(ChangeHeader(1, "received", " changed")).headers
        self.assertEqual(headers[0], HEADERS[0])
        self.assertEqual(headers[1], ("received", " changed"))
        headers = self.apply(ChangeHeader(0, "Subject", " new")).headers
        self.assertEqual(headers[2], ("Subject", " new"))
        headers = self.apply(ChangeHeader(2, "X-Two", " two")).headers
        self.assertEqual(headers[3:], (("X-Two", " 1"), ("X-Two", " two")))

    def test_changeMissing(self) -> None:
        """
        Changing a header that is not there adds it (Postfix).
        """
        self.assertEqual(
            self.apply(ChangeHeader(3, "X-Two", " 3")).headers,
            HEADERS + (("X-Two", " 3"),),
        )

    def test_deleteHeader(self) -> None:
        """
        A header is deleted by index; a missing one is nothing to delete;
        smx's own Received: stays.
        """
        self.assertEqual(
            self.apply(DeleteHeader(1, "X-Two")).headers,
            HEADERS[:3] + (("X-Two", " 2"),),
        )
        self.assertEqual(self.apply(DeleteHeader(5, "X-Two")).headers, HEADERS)
        headers = self.apply(
            DeleteHeader(1, "Received"), DeleteHeader(1, "Received")
        ).headers
        self.assertEqual(headers, (HEADERS[0],) + HEADERS[2:])

    def test_noOwnHeaders(self) -> None:
        """
        Without own headers, every header counts.
        """
        headers = self.apply(ChangeHeader(1, "Received", " x"), ownHeaders=0).headers
        self.assertEqual(headers[0], ("Received", " x"))

    def test_insertAboveOwn(self) -> None:
        """
        Once a header is inserted above smx's Received:, the first header
        is the inserted one (Postfix skips the first header, whatever it
        is).
        """
        headers = self.apply(
            InsertHeader(0, "Received", " milter"), ChangeHeader(1, "Received", " x")
        ).headers
        self.assertEqual(headers[:2], (("Received", " milter"), ("Received", " x")))

    def test_body(self) -> None:
        """
        The body is replaced.
        """
        self.assertEqual(self.apply(ReplaceBody(b"new\r\n")).body, b"new\r\n")

    def test_envelope(self) -> None:
        """
        The sender changes with its parameters; recipients are added
        (not twice) and deleted, brackets aside, the domain without case.
        """
        edited = self.apply(
            ChangeFrom("<new@example.org>", ("SIZE=5",)),
            AddRecipient("<d@example.com>", ("NOTIFY=NEVER",)),
            AddRecipient("B@EXAMPLE.NET"),
            AddRecipient("b@EXAMPLE.NET"),
            DeleteRecipient("<c@example.net>"),
        )
        self.assertEqual(
            edited.envelope,
            Envelope(
                "new@example.org",
                (
                    Recipient("b@example.net"),
                    Recipient("d@example.com", ("NOTIFY=NEVER",)),
                    Recipient("B@EXAMPLE.NET"),
                ),
                ("SIZE=5",),
            ),
        )
        self.assertEqual(self.apply(ChangeFrom("<>")).envelope.sender, "")

    def test_quarantine(self) -> None:
        """
        A quarantine is reported with its reason.
        """
        self.assertEqual(self.apply(Quarantine("spam")).quarantine, "spam")

    def test_notAModification(self) -> None:
        """
        Anything else is a programming error.
        """
        self.assertRaises(TypeError, self.apply, "nope")

    def test_sameAddress(self) -> None:
        """
        Addresses compare without brackets, the domain without case, the
        local part exactly.
        """
        self.assertTrue(sameAddress("<a@B.example>", "a@b.EXAMPLE"))
        self.assertFalse(sameAddress("A@b", "a@b"))
        self.assertTrue(sameAddress("<postmaster>", "postmaster"))

    def test_plain(self) -> None:
        """
        Every modification survives L{asPlain} and L{fromPlain}.
        """
        for m in [
            AddHeader("X", " y"),
            InsertHeader(0, "X", " y"),
            ChangeHeader(1, "X", " y"),
            DeleteHeader(1, "X"),
            ReplaceBody(b"b"),
            ChangeFrom("a@b", ("SIZE=1",)),
            AddRecipient("c@d", ()),
            DeleteRecipient("c@d"),
            Quarantine("q"),
        ]:
            self.assertEqual(fromPlain(asPlain(m)), m)
        self.assertEqual(asPlain(ChangeFrom("a", ("X",)))["parameters"], ["X"])
        self.assertRaises(ValueError, fromPlain, {"type": "nope"})
        self.assertRaises(ValueError, fromPlain, {"type": "add_header"})


class HeaderValueTests(unittest.SynchronousTestCase):
    """
    Header values between the message's form and the milter's.
    """

    def test_toMilter(self) -> None:
        """
        Without C{SMFIP_HDR_LEADSPC} one leading space goes; line breaks
        are LF.
        """
        self.assertEqual(toMilterValue(" a\r\n\tb", False), "a\n\tb")
        self.assertEqual(toMilterValue("  a", False), " a")
        self.assertEqual(toMilterValue("\ta", False), "\ta")
        self.assertEqual(toMilterValue(" a\r\n b", True), " a\n b")

    def test_fromMilter(self) -> None:
        """
        LF becomes CRLF, trailing line breaks go, a space is put back.
        """
        self.assertEqual(fromMilterValue("a\n\tb\n", False), " a\r\n\tb")
        self.assertEqual(fromMilterValue("a\r\n b", True), "a\r\n b")
        self.assertEqual(fromMilterValue("", False), " ")

    def test_refused(self) -> None:
        """
        A NUL, a lone CR or an unfolded line could forge headers or end
        the header: refused.
        """
        for value in ["a\nBcc: x", "a\n\nbody", "a\rb", "a\0"]:
            self.assertRaises(HeaderError, fromMilterValue, value, False)


class MessageTests(unittest.SynchronousTestCase):
    """
    L{splitMessage} and L{joinMessage}.
    """

    def test_roundTrip(self) -> None:
        """
        Header fields (folded ones joined) and the body.
        """
        content = b"A: 1\r\nB: two\r\n\tlines\r\nC:\r\n\r\nbody\r\n.x\r\n"
        headers, body = splitMessage(content)
        self.assertEqual(headers, (("A", " 1"), ("B", " two\r\n\tlines"), ("C", "")))
        self.assertEqual(body, b"body\r\n.x\r\n")
        self.assertEqual(joinMessage(headers, body), content)

    def test_noSeparator(self) -> None:
        """
        A line that is not a header field starts the body.
        """
        self.assertEqual(
            splitMessage(b"A: 1\r\nnot a header\r\n"),
            ((("A", " 1"),), b"not a header\r\n"),
        )
        self.assertEqual(splitMessage(b"A: 1"), ((("A", " 1"),), b""))

    def test_eightBit(self) -> None:
        """
        8-bit header text survives.
        """
        content = b"Subject: caf\xc3\xa9 \xff\r\n\r\n"
        headers, body = splitMessage(content)
        self.assertEqual(joinMessage(headers, body), content)


class DecisionTests(unittest.SynchronousTestCase):
    """
    L{Decision} and the default actions.
    """

    def test_reply(self) -> None:
        """
        The reply text of a decision, one line or several.
        """
        self.assertEqual(REJECT.reply(), "550 5.7.1 Command rejected")
        self.assertEqual(REJECT.status, "5.7.1")
        self.assertEqual(REJECT.text, "Command rejected")
        d = Decision("tempfail", 451, ("4.7.1 one", "4.7.1 two"))
        self.assertEqual(d.reply(), "451-4.7.1 one\r\n451 4.7.1 two")
        self.assertEqual(d.text, "one two")
        self.assertEqual(CONTINUE.reply(), "")
        self.assertEqual(Decision("reject", 550, ("go away",)).status, "")
        self.assertEqual(Decision("reject", 550, ("go away",)).text, "go away")

    def test_plain(self) -> None:
        """
        A decision survives L{Decision.asPlain} and L{Decision.fromPlain}.
        """
        d = Decision("accept", 0, (), (AddHeader("X", " y"),), None)
        self.assertEqual(Decision.fromPlain(d.asPlain()), d)
        self.assertEqual(Decision.fromPlain(TEMPFAIL.asPlain()), TEMPFAIL)

    def test_failure(self) -> None:
        """
        The default actions give Postfix's replies; another name is a
        mistake.
        """
        self.assertEqual(
            failureDecision("tempfail", "down").reply(),
            "451 4.7.1 Service unavailable - try again later",
        )
        self.assertEqual(
            failureDecision("reject", "down").reply(), "550 5.5.0 Service unavailable"
        )
        self.assertEqual(
            failureDecision("accept", "down"), Decision("continue", failure="down")
        )
        self.assertEqual(failureDecision("reject", "down").failure, "down")
        self.assertRaises(ValueError, failureDecision, "quarantine", "down")
        self.assertRaises(ValueError, MilterMachine, "bounce")

    def test_connectInfo(self) -> None:
        """
        A client without a verified name is sent as C{[address]}.
        """
        [(command, data)] = codec.PacketParser().feed(
            ConnectInfo(None, "inet", "192.0.2.1", 25).packet()
        )
        self.assertEqual(data, b"[192.0.2.1]\x004\x00\x19192.0.2.1\x00")
        [(command, data)] = codec.PacketParser().feed(
            ConnectInfo(None, "unknown", "").packet()
        )
        self.assertEqual(data, b"unknown\x00U")
        self.assertRaises(ValueError, ConnectInfo("h", "x25", "a").packet)


class NegotiationTests(unittest.SynchronousTestCase):
    """
    Option negotiation.
    """

    def test_offer(self) -> None:
        """
        smx offers version 6, every action and every protocol flag, then
        sends the connect macros and the connection.
        """
        machine = MilterMachine()
        self.assertIsNone(
            machine.connect(CLIENT, {"j": "mx.example", "{client_addr}": "192.0.2.1"})
        )
        [(command, data)] = sent(machine)
        self.assertEqual(command, b"O")
        self.assertEqual(struct.unpack("!III", data), (6, 0x1FF, 0x1FFFFF))
        self.assertEqual(machine.awaiting, "optneg")
        machine.receiveData(negotiation(0))
        self.assertEqual(
            events(machine), [Negotiated(codec.Negotiation(6, 0x1FF, 0, ()))]
        )
        self.assertEqual(
            sent(machine),
            [
                (b"D", b"Cj\0mx.example\0{client_addr}\x00192.0.2.1\0"),
                (b"C", b"client.example\x004\x12\x67192.0.2.1\0"),
            ],
        )
        self.assertEqual(machine.awaiting, "connect")
        machine.receiveData(reply(b"c"))
        self.assertEqual(events(machine), [StageDone(CONTINUE)])
        self.assertEqual(machine.state, "open")

    def test_noConnect(self) -> None:
        """
        A milter that does not want the connection gets its macros only,
        and the stage is decided at once.
        """
        machine = MilterMachine()
        machine.connect(CLIENT, {"j": "mx.example"})
        sent(machine)
        machine.receiveData(negotiation(codec.SMFIP_NOCONNECT))
        self.assertEqual(events(machine)[1:], [StageDone(CONTINUE)])
        self.assertEqual(commands(machine), [b"D"])

    def test_noReplyConnect(self) -> None:
        """
        C{SMFIP_NR_CONN}: the connection is sent, no reply waited for.
        """
        machine = MilterMachine()
        machine.connect(CLIENT)
        sent(machine)
        machine.receiveData(negotiation(codec.SMFIP_NR_CONN))
        self.assertEqual(events(machine)[1:], [StageDone(CONTINUE)])
        self.assertEqual(commands(machine), [b"C"])
        self.assertIsNone(machine.awaiting)

    def test_flagsNotOffered(self) -> None:
        """
        Protocol flags smx did not offer (libmilter's internal ones) are
        ignored.
        """
        machine = MilterMachine(protocol=codec.SMFIP_NOHELO)
        machine.connect(CLIENT)
        machine.receiveData(
            negotiation(0x10000000 | codec.SMFIP_NOHELO | codec.SMFIP_NR_CONN)
        )
        self.assertEqual(machine.protocol, codec.SMFIP_NOHELO)
        self.assertEqual(machine.awaiting, "connect")

    def test_versionTooHigh(self) -> None:
        """
        A milter of a later version than 6, or earlier than 2, is a
        failure.
        """
        for version in (7, 1):
            machine = MilterMachine()
            machine.connect(CLIENT)
            machine.receiveData(negotiation(version=version))
            [failed, done] = events(machine)
            self.assertIsInstance(failed, Failed)
            self.assertIn("version %d" % version, failed.reason)
            self.assertEqual(
                done, StageDone(failureDecision("tempfail", failed.reason))
            )
            self.assertTrue(machine.wantsClose)

    def test_actionNotOffered(self) -> None:
        """
        A milter asking for an action not offered is a failure.
        """
        machine = MilterMachine(actions=codec.SMFIF_ADDHDRS)
        machine.connect(CLIENT)
        machine.receiveData(
            negotiation(actions=codec.SMFIF_ADDHDRS | codec.SMFIF_CHGBODY)
        )
        self.assertIsInstance(events(machine)[0], Failed)

    def test_wrongReply(self) -> None:
        """
        Anything but C{SMFIC_OPTNEG} in answer to negotiation is a
        failure.
        """
        machine = MilterMachine()
        machine.connect(CLIENT)
        machine.receiveData(reply(b"c"))
        self.assertIn("option negotiation", events(machine)[0].reason)

    def test_olderVersion(self) -> None:
        """
        A version 2 milter is sent neither C{SMFIC_DATA} (version 4) nor
        C{SMFIC_UNKNOWN} (version 3).
        """
        machine = MilterMachine(macros=MacroLists())
        machine.connect(CLIENT)
        machine.receiveData(negotiation(version=2))
        machine.receiveData(reply(b"c"))
        events(machine)
        sent(machine)
        self.assertEqual(machine.unknown("FOO"), CONTINUE)
        self.assertIsNone(machine.mail("a@b"))
        machine.receiveData(reply(b"c"))
        self.assertEqual(machine.data(), CONTINUE)
        self.assertEqual(commands(machine), [b"M"])

    def test_symlist(self) -> None:
        """
        C{SETSYMLIST} lists replace smx's for their stages.
        """
        machine = MilterMachine()
        machine.connect(CLIENT, {"j": "mx", "{client_addr}": "192.0.2.1", "v": "smx"})
        sent(machine)
        machine.receiveData(
            negotiation(
                symlists=[
                    (codec.SMFIM_CONNECT, "{client_addr}"),
                    (codec.SMFIM_ENVFROM, "{mail_addr} {auth_type}"),
                ]
            )
        )
        self.assertEqual(sent(machine)[0], (b"D", b"C{client_addr}\x00192.0.2.1\0"))
        machine.receiveData(reply(b"c"))
        machine.mail("a@b", (), {"i": "T1", "{auth_type}": "PLAIN"})
        self.assertEqual(
            sent(machine)[0], (b"D", b"M{mail_addr}\0a@b\0{auth_type}\0PLAIN\0")
        )


class StageTests(unittest.SynchronousTestCase):
    """
    What each stage sends, and the steps a milter does not want or does
    not answer.
    """

    def test_session(self) -> None:
        """
        Every stage in SMTP order, each answered with continue.
        """
        machine = opened()
        self.assertIsNone(machine.helo("client.example"))
        self.assertEqual(sent(machine), [(b"H", b"client.example\0")])
        machine.receiveData(reply(b"c"))
        self.assertEqual(events(machine), [StageDone(CONTINUE)])

        self.assertIsNone(machine.mail("a@example.org", ["SIZE=10"], {"i": "T1"}))
        self.assertEqual(
            sent(machine),
            [
                (b"D", b"Mi\0T1\0{mail_addr}\0a@example.org\0"),
                (b"M", b"<a@example.org>\0SIZE=10\0"),
            ],
        )
        machine.receiveData(reply(b"c"))
        self.assertIsNone(machine.rcpt("b@example.net", ["NOTIFY=NEVER"]))
        self.assertEqual(
            sent(machine),
            [
                (b"D", b"Ri\0T1\0{rcpt_addr}\0b@example.net\0"),
                (b"R", b"<b@example.net>\0NOTIFY=NEVER\0"),
            ],
        )
        machine.receiveData(reply(b"c"))
        self.assertIsNone(machine.data())
        self.assertEqual(sent(machine), [(b"D", b"Ti\0T1\0"), (b"T", b"")])
        machine.receiveData(reply(b"c"))
        self.assertIsNone(
            machine.headers([("Subject", " hi\r\n there"), ("X-T", "\tx")])
        )
        self.assertEqual(
            sent(machine),
            [(b"D", b"Ni\0T1\0"), (b"L", b"Subject\0hi\n there\0")],
        )
        machine.receiveData(reply(b"c"))
        self.assertEqual(sent(machine), [(b"L", b"X-T\0\tx\0")])
        machine.receiveData(reply(b"c"))
        self.assertEqual(events(machine)[-1], StageDone(CONTINUE))
        self.assertIsNone(machine.eoh())
        self.assertEqual(sent(machine), [(b"N", b"")])
        machine.receiveData(reply(b"c"))
        self.assertEqual(machine.body(b"text\r\n"), CONTINUE)
        self.assertEqual(sent(machine), [])
        self.assertIsNone(machine.endOfMessage())
        self.assertEqual(sent(machine), [(b"B", b"text\r\n")])
        machine.receiveData(reply(b"c"))
        self.assertEqual(sent(machine), [(b"D", b"Ei\0T1\0"), (b"E", b"")])
        self.assertEqual(machine.awaiting, "eom")
        machine.receiveData(reply(b"a"))
        self.assertEqual(events(machine)[-1], StageDone(ACCEPT))
        self.assertIsNone(machine.unknown("XFOO bar"))
        self.assertEqual(sent(machine), [(b"U", b"XFOO bar\0")])
        machine.receiveData(reply(b"c"))
        machine.quit()
        self.assertEqual(sent(machine), [(b"Q", b"")])
        self.assertTrue(machine.wantsClose)
        self.assertEqual(machine.state, "closed")

    def test_bodyChunks(self) -> None:
        """
        Body pieces are gathered into packets of 65535 bytes; each is
        answered before the next is sent.
        """
        machine = inTransaction()
        self.assertIsNone(machine.body(b"x" * 100000 + b"y" * 40000))
        [(command, data)] = sent(machine)
        self.assertEqual((command, len(data)), (b"B", 65535))
        machine.receiveData(reply(b"c"))
        [(command, data)] = sent(machine)
        self.assertEqual(data, b"x" * 34465 + b"y" * 31070)
        self.assertEqual(events(machine), [])
        machine.receiveData(reply(b"c"))
        self.assertEqual(events(machine), [StageDone(CONTINUE)])
        self.assertIsNone(machine.endOfMessage())
        self.assertEqual([(c, len(d)) for c, d in sent(machine)], [(b"B", 8930)])
        machine.receiveData(reply(b"c"))
        self.assertEqual(commands(machine), [b"E"])
        self.assertEqual(machine.awaiting, "eom")

    def test_noReplySteps(self) -> None:
        """
        Steps the milter will not answer are sent and decided at once;
        several headers go in one write.
        """
        machine = inTransaction(
            codec.SMFIP_NR_HDR | codec.SMFIP_NR_EOH | codec.SMFIP_NR_BODY,
            macros=MacroLists(),
        )
        self.assertEqual(machine.headers([("A", " 1"), ("B", " 2")]), CONTINUE)
        self.assertEqual(commands(machine), [b"L", b"L"])
        self.assertEqual(machine.eoh(), CONTINUE)
        self.assertEqual(machine.body(b"z" * 70000), CONTINUE)
        self.assertEqual(commands(machine), [b"N", b"B"])
        self.assertIsNone(machine.endOfMessage())
        self.assertEqual(commands(machine), [b"B", b"E"])

    def test_noSendSteps(self) -> None:
        """
        Steps the milter does not want are not sent (their macros are).
        """
        everything = (
            codec.SMFIP_NOHELO
            | codec.SMFIP_NOMAIL
            | codec.SMFIP_NORCPT
            | codec.SMFIP_NODATA
            | codec.SMFIP_NOHDRS
            | codec.SMFIP_NOEOH
            | codec.SMFIP_NOBODY
            | codec.SMFIP_NOUNKNOWN
        )
        machine = opened(everything, macros=MacroLists(mail=("i",)))
        self.assertEqual(machine.helo("h"), CONTINUE)
        self.assertEqual(machine.mail("a@b", (), {"i": "T"}), CONTINUE)
        self.assertEqual(sent(machine), [(b"D", b"Mi\0T\0")])
        for call in [
            lambda: machine.rcpt("c@d"),
            machine.data,
            lambda: machine.headers([("A", " b")]),
            machine.eoh,
            lambda: machine.body(b"x"),
            lambda: machine.unknown("X"),
        ]:
            self.assertEqual(call(), CONTINUE)
        self.assertEqual(sent(machine), [])
        self.assertIsNone(machine.endOfMessage())
        self.assertEqual(commands(machine), [b"E"])
        self.assertFalse(machine.wants("body"))
        self.assertTrue(machine.wants("eom"))

    def test_leadingSpace(self) -> None:
        """
        With C{SMFIP_HDR_LEADSPC} header values go with their space.
        """
        machine = inTransaction(codec.SMFIP_HDR_LEADSPC, macros=MacroLists())
        self.assertTrue(machine.leadingSpace)
        machine.headers([("Subject", " hi")])
        self.assertEqual(sent(machine), [(b"L", b"Subject\0 hi\0")])

    def test_skip(self) -> None:
        """
        C{SMFIR_SKIP} to a body chunk: no more body is sent; the end of
        the message is.
        """
        machine = inTransaction(macros=MacroLists())
        machine.body(b"x" * 140000)
        self.assertEqual(commands(machine), [b"B"])
        machine.receiveData(reply(b"s"))
        self.assertEqual(events(machine), [StageDone(CONTINUE)])
        self.assertEqual(sent(machine), [])
        self.assertEqual(machine.body(b"more"), CONTINUE)
        self.assertIsNone(machine.endOfMessage())
        self.assertEqual(commands(machine), [b"E"])
        machine.receiveData(reply(b"c"))
        self.assertEqual(events(machine), [StageDone(CONTINUE)])

    def test_skipHeaders(self) -> None:
        """
        C{SMFIR_SKIP} to a header: the other headers are not sent.
        """
        machine = inTransaction(macros=MacroLists())
        machine.headers([("A", " 1"), ("B", " 2"), ("C", " 3")])
        self.assertEqual(commands(machine), [b"L"])
        machine.receiveData(reply(b"s"))
        self.assertEqual(sent(machine), [])
        self.assertEqual(events(machine), [StageDone(CONTINUE)])
        self.assertEqual(machine.headers([("D", " 4")]), CONTINUE)
        self.assertIsNone(machine.eoh())
        self.assertEqual(commands(machine), [b"N"])

    def test_progress(self) -> None:
        """
        C{SMFIR_PROGRESS} is an event; the stage still waits.
        """
        machine = inTransaction(macros=MacroLists())
        machine.endOfMessage()
        machine.receiveData(reply(b"p") + reply(b"p"))
        self.assertEqual(events(machine), [Progress(), Progress()])
        self.assertEqual(machine.awaiting, "eom")
        before = machine.repliesReceived
        machine.receiveData(reply(b"c"))
        self.assertEqual(machine.repliesReceived, before + 1)
        self.assertEqual(events(machine), [StageDone(CONTINUE)])

    def test_abort(self) -> None:
        """
        C{SMFIC_ABORT} is sent in a transaction only; MAIL and HELO in a
        transaction abort it first.
        """
        machine = opened(macros=MacroLists())
        machine.abort()
        self.assertEqual(sent(machine), [])
        machine.mail("a@b")
        machine.receiveData(reply(b"c"))
        machine.abort()
        self.assertEqual(commands(machine), [b"M", b"A"])
        machine.abort()
        self.assertEqual(sent(machine), [])
        machine.mail("a@b")
        machine.receiveData(reply(b"c"))
        machine.mail("c@d")
        self.assertEqual(commands(machine), [b"M", b"A", b"M"])
        machine.receiveData(reply(b"c"))
        machine.helo("again")
        self.assertEqual(commands(machine), [b"A", b"H"])

    def test_rejectedRecipientMacros(self) -> None:
        """
        Macros given for one recipient are not sent with the next.
        """
        machine = inTransaction(codec.SMFIP_RCPT_REJ)
        self.assertTrue(machine.wantsRejectedRecipients)
        machine.rcpt("x@y", (), rejectedRecipientMacros("550 5.1.1 no", "5.1.1"))
        self.assertEqual(
            strings(sent(machine)[0][1][1:]),
            [
                "{rcpt_addr}",
                "550 5.1.1 no",
                "{rcpt_host}",
                "5.1.1",
                "{rcpt_mailer}",
                "error",
            ],
        )
        machine.receiveData(reply(b"c"))
        machine.rcpt("z@y")
        self.assertEqual(strings(sent(machine)[0][1][1:]), ["{rcpt_addr}", "z@y"])

    def test_misuse(self) -> None:
        """
        A stage before C{connect}, or while another waits, is a bug of
        the caller.
        """
        machine = MilterMachine()
        self.assertRaises(RuntimeError, machine.helo, "h")
        machine.connect(CLIENT)
        self.assertRaises(RuntimeError, machine.connect, CLIENT)
        self.assertRaises(RuntimeError, machine.helo, "h")
        machine = inTransaction()
        machine.endOfMessage()
        self.assertRaises(RuntimeError, machine.abort)
        self.assertRaises(RuntimeError, machine.body, b"x")

    def test_badHeader(self) -> None:
        """
        A header that cannot be encoded (a NUL in it) is refused with
        C{ValueError}, before anything is sent.
        """
        machine = inTransaction(macros=MacroLists())
        self.assertRaises(ValueError, machine.headers, [("X", " a\0b")])
        self.assertEqual(sent(machine), [])


class DecisionFlowTests(unittest.SynchronousTestCase):
    """
    What the milter's answers mean for the session and the message.
    """

    def test_acceptConnect(self) -> None:
        """
        C{accept} at connect: the milter is done with the session; QUIT,
        close, and every later stage continues unsent.
        """
        machine = MilterMachine()
        machine.connect(CLIENT)
        machine.receiveData(negotiation())
        sent(machine)
        machine.receiveData(reply(b"a"))
        self.assertEqual(events(machine)[-1], StageDone(ACCEPT))
        self.assertEqual(commands(machine), [b"Q"])
        self.assertTrue(machine.wantsClose)
        self.assertEqual(machine.state, "accepted")
        self.assertEqual(machine.helo("h"), CONTINUE)
        self.assertEqual(machine.mail("a@b"), CONTINUE)
        self.assertEqual(machine.endOfMessage(), CONTINUE)
        self.assertEqual(sent(machine), [])

    def test_rejectHelo(self) -> None:
        """
        A rejection at HELO answers every later stage the same way.
        """
        machine = opened()
        machine.helo("bad")
        sent(machine)
        machine.receiveData(reply(b"y", b"554 5.7.1 You are not welcome\0"))
        decision = Decision("reject", 554, ("5.7.1 You are not welcome",))
        self.assertEqual(events(machine), [StageDone(decision)])
        self.assertEqual(commands(machine), [b"Q"])
        self.assertEqual(machine.state, "rejected")
        self.assertEqual(machine.mail("a@b"), decision)
        self.assertEqual(machine.rcpt("a@b"), decision)

    def test_tempfailConnect(self) -> None:
        """
        C{tempfail} at connect: 451 for the session.
        """
        machine = MilterMachine()
        machine.connect(CLIENT)
        machine.receiveData(negotiation() + reply(b"t"))
        self.assertEqual(events(machine)[-1], StageDone(TEMPFAIL))
        self.assertEqual(machine.helo("h"), TEMPFAIL)

    def test_discardConnect(self) -> None:
        """
        C{discard} at connect means nothing (there is no message): continue.
        """
        machine = MilterMachine()
        machine.connect(CLIENT)
        machine.receiveData(negotiation() + reply(b"d"))
        self.assertEqual(events(machine)[-1], StageDone(CONTINUE))
        self.assertEqual(machine.state, "open")

    def test_rejectRecipient(self) -> None:
        """
        A rejected recipient leaves the transaction open.
        """
        machine = opened(macros=MacroLists())
        machine.mail("a@b")
        machine.receiveData(reply(b"c"))
        machine.rcpt("x@y")
        machine.receiveData(reply(b"r"))
        self.assertEqual(events(machine)[-1], StageDone(REJECT))
        machine.rcpt("z@y")
        machine.receiveData(reply(b"c"))
        self.assertIsNone(machine.data())
        self.assertEqual(commands(machine), [b"M", b"R", b"R", b"T"])

    def test_rejectMail(self) -> None:
        """
        A rejected sender ends the transaction: nothing to abort, later
        message stages are not sent.
        """
        machine = opened(macros=MacroLists())
        machine.mail("a@b")
        machine.receiveData(reply(b"t"))
        self.assertEqual(events(machine)[-1], StageDone(TEMPFAIL))
        machine.abort()
        self.assertEqual(machine.data(), CONTINUE)
        self.assertEqual(commands(machine), [b"M"])

    def test_acceptMessage(self) -> None:
        """
        C{accept} at MAIL: the rest of the message is not sent.
        """
        machine = opened(macros=MacroLists())
        machine.mail("a@b")
        machine.receiveData(reply(b"a"))
        self.assertEqual(events(machine)[-1], StageDone(ACCEPT))
        self.assertEqual(machine.rcpt("c@d"), CONTINUE)
        self.assertEqual(machine.data(), CONTINUE)
        self.assertEqual(machine.headers([("A", " 1")]), CONTINUE)
        self.assertEqual(machine.eoh(), CONTINUE)
        self.assertEqual(machine.body(b"x"), CONTINUE)
        self.assertEqual(machine.unknown("X"), CONTINUE)
        self.assertEqual(machine.endOfMessage(), CONTINUE)
        self.assertEqual(commands(machine), [b"M"])
        self.assertIsNone(machine.mail("e@f"))
        self.assertEqual(commands(machine), [b"M"])

    def test_discardMessage(self) -> None:
        """
        C{discard} at RCPT discards the message; nothing more is sent.
        """
        machine = inTransaction(macros=MacroLists())
        machine.rcpt("c@d")
        machine.receiveData(reply(b"d"))
        self.assertEqual(events(machine)[-1], StageDone(DISCARD))
        self.assertEqual(machine.headers([("A", " 1")]), CONTINUE)
        self.assertEqual(machine.endOfMessage(), CONTINUE)
        self.assertEqual(commands(machine), [b"R"])

    def test_rejectContent(self) -> None:
        """
        A header rejected: the remaining headers are not sent, the
        transaction is over.
        """
        machine = inTransaction(macros=MacroLists())
        machine.headers([("A", " 1"), ("B", " 2")])
        machine.receiveData(reply(b"r"))
        self.assertEqual(events(machine), [StageDone(REJECT)])
        self.assertEqual(commands(machine), [b"L"])
        self.assertEqual(machine.eoh(), CONTINUE)
        machine.abort()
        self.assertEqual(sent(machine), [])

    def test_shutdown(self) -> None:
        """
        C{SMFIR_SHUTDOWN}: 421 and the session is over.
        """
        machine = inTransaction(macros=MacroLists())
        machine.rcpt("c@d")
        machine.receiveData(reply(b"4"))
        self.assertEqual(events(machine), [StageDone(SHUTDOWN)])
        self.assertEqual(SHUTDOWN.code, 421)
        self.assertEqual(machine.helo("x"), SHUTDOWN)

    def test_modifications(self) -> None:
        """
        The end of the message gathers every modification, in order,
        in the message's header form; body chunks are joined where the
        first came.
        """
        machine = inTransaction(macros=MacroLists())
        machine.endOfMessage()
        sent(machine)
        machine.receiveData(
            reply(b"h", b"X-Added\0yes\0")
            + reply(b"b", b"new ")
            + reply(b"i", struct.pack("!I", 0) + b"X-Top\0a\n\tb\0")
            + reply(b"b", b"body\r\n")
            + reply(b"m", struct.pack("!I", 0) + b"Subject\0changed\0")
            + reply(b"m", struct.pack("!I", 2) + b"X-Gone\0\0")
            + reply(b"e", b"<new@example>\0SIZE=5\0")
            + reply(b"+", b"<added@example>\0")
            + reply(b"2", b"<par@example>\0NOTIFY=NEVER\0")
            + reply(b"-", b"<b@example.net>\0")
            + reply(b"q", b"suspicious\0")
        )
        self.assertEqual(events(machine), [])
        machine.receiveData(reply(b"c"))
        [done] = events(machine)
        self.assertEqual(done.decision.action, "continue")
        self.assertEqual(
            done.decision.modifications,
            (
                AddHeader("X-Added", " yes"),
                ReplaceBody(b"new body\r\n"),
                InsertHeader(0, "X-Top", " a\r\n\tb"),
                ChangeHeader(1, "Subject", " changed"),
                DeleteHeader(2, "X-Gone"),
                ChangeFrom("new@example", ("SIZE=5",)),
                AddRecipient("added@example"),
                AddRecipient("par@example", ("NOTIFY=NEVER",)),
                DeleteRecipient("b@example.net"),
                Quarantine("suspicious"),
            ),
        )
        self.assertIsNone(machine.mail("a@b"))
        self.assertEqual(commands(machine), [b"M"])

    def test_modificationsLeadingSpace(self) -> None:
        """
        With C{SMFIP_HDR_LEADSPC}, header values are taken as they are.
        """
        machine = inTransaction(codec.SMFIP_HDR_LEADSPC, macros=MacroLists())
        machine.endOfMessage()
        machine.receiveData(reply(b"h", b"X\0\tv\0") + reply(b"a"))
        self.assertEqual(
            events(machine)[-1].decision.modifications, (AddHeader("X", "\tv"),)
        )

    def test_rejectAtEnd(self) -> None:
        """
        A reply code at the end of the message rejects it.
        """
        machine = inTransaction(macros=MacroLists())
        machine.endOfMessage()
        machine.receiveData(reply(b"y", b"550-5.7.1 Spam\r\n550 5.7.1 go\0"))
        decision = events(machine)[-1].decision
        self.assertEqual(decision.reply(), "550-5.7.1 Spam\r\n550 5.7.1 go")
        self.assertEqual(decision.action, "reject")


class FailureTests(unittest.SynchronousTestCase):
    """
    A milter that breaks the protocol gets its default action.
    """

    def assertFails(self, machine: MilterMachine, data: bytes, words: str) -> Failed:
        machine.receiveData(data)
        found = events(machine)
        self.assertIsInstance(found[0], Failed)
        self.assertIn(words, found[0].reason)
        self.assertEqual(
            found[1:],
            [StageDone(failureDecision(machine.defaultAction, found[0].reason))],
        )
        self.assertTrue(machine.wantsClose)
        self.assertEqual(machine.state, "failed")
        return found[0]

    def test_modificationTooEarly(self) -> None:
        """
        A modification before the end of the message is not allowed.
        """
        machine = inTransaction()
        machine.rcpt("x@y")
        self.assertFails(machine, reply(b"h", b"X\0y\0"), "not allowed after rcpt")

    def test_unsolicited(self) -> None:
        """
        A reply when none is awaited fails the session (no stage to
        decide).
        """
        machine = opened()
        machine.receiveData(reply(b"c"))
        [failed] = events(machine)
        self.assertIn("no reply is awaited", failed.reason)
        self.assertEqual(machine.helo("h"), failureDecision("tempfail", failed.reason))

    def test_malformed(self) -> None:
        """
        A packet of length 0, an oversize packet, an unknown reply, data
        after a verdict, a bad reply code: the default action.
        """
        for data, words in [
            (b"\0\0\0\0", "length 0"),
            (struct.pack("!I", 2000000), "longer than"),
            (reply(b"Z"), "unknown reply"),
            (reply(b"c", b"x"), "followed by 1 bytes"),
            (reply(b"y", b"250 fine\0"), "malformed reply code"),
            (reply(b"O", struct.pack("!III", 6, 0, 0)), "after negotiation"),
        ]:
            machine = inTransaction(defaultAction="reject")
            machine.rcpt("x@y")
            self.assertFails(machine, data, words)
            self.assertEqual(
                machine.mail("a@b").reply(), "550 5.5.0 Service unavailable"
            )

    def test_badHeaderFromMilter(self) -> None:
        """
        A header value that would forge a header line fails the session.
        """
        machine = inTransaction()
        machine.endOfMessage()
        self.assertFails(machine, reply(b"h", b"X\0a\nBcc: x@y\0"), "unfolded")
        machine = inTransaction()
        machine.endOfMessage()
        self.assertFails(machine, reply(b"h", b"Bad Name\0v\0"), "bad header name")

    def test_bodyTooLong(self) -> None:
        """
        A replacement body longer than the limit fails the session.
        """
        machine = inTransaction(maxBodySize=10)
        machine.endOfMessage()
        self.assertFails(
            machine, reply(b"b", b"x" * 6) + reply(b"b", b"y" * 6), "longer than 10"
        )

    def test_failOnce(self) -> None:
        """
        L{MilterMachine.fail}: one L{Failed} event, the waiting stage
        decided; later stages and failures change nothing.
        """
        machine = inTransaction(defaultAction="accept")
        machine.rcpt("x@y")
        decision = machine.fail("timeout")
        self.assertEqual(decision, Decision("continue", failure="timeout"))
        self.assertEqual(events(machine), [Failed("timeout"), StageDone(decision)])
        self.assertEqual(machine.fail("again"), decision)
        self.assertEqual(events(machine), [])
        self.assertEqual(machine.endOfMessage(), decision)
        machine.receiveData(reply(b"c"))
        self.assertEqual(events(machine), [])
        self.assertIsNone(machine.awaiting)

    def test_failIdle(self) -> None:
        """
        A failure between stages decides no stage; the next gets the
        default action.
        """
        machine = opened()
        machine.fail("connection closed")
        self.assertEqual(events(machine), [Failed("connection closed")])
        self.assertEqual(machine.helo("h").failure, "connection closed")

    def test_quitWhileWaiting(self) -> None:
        """
        C{quit} abandons a waiting stage; replies that come after are
        ignored.
        """
        machine = inTransaction()
        machine.endOfMessage()
        sent(machine)
        machine.quit()
        self.assertEqual(commands(machine), [b"Q"])
        self.assertIsNone(machine.awaiting)
        machine.receiveData(reply(b"a"))
        self.assertEqual(events(machine), [])
        self.assertEqual(machine.defaultDecision("gone").failure, "gone")

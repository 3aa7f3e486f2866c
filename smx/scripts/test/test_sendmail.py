# -*- test-case-name: smx.scripts.test.test_sendmail -*-
"""
Tests for L{smx.scripts.sendmail} and L{smx.scripts.sendmailmessage}: the
command line, the message prepared, and the exit statuses of mistakes
(no smx needed; see C{test_integration_sendmail} for submissions).
"""

from __future__ import annotations

import io
import os
from typing import List

from twisted.trial import unittest

from smx.scripts import sendmail
from smx.scripts.sendmail import (
    EX_CONFIG,
    EX_DATAERR,
    EX_OK,
    EX_TEMPFAIL,
    EX_USAGE,
    Failure,
    loadSubmissionConfiguration,
    parseArguments,
    parseNotify,
    recipientList,
    run,
)
from smx.scripts.sendmailmessage import (
    Identity,
    MessageError,
    breakLongLine,
    headerAddresses,
    prepareMessage,
    readMessage,
)

IDENTITY = Identity("alice@h.test", "Alice Liddell", "h.test", 1000)


def parseFails(argv: List[str], program: str = "sendmail") -> str:
    try:
        parseArguments(argv, program)
    except Failure as e:
        assert e.status == EX_USAGE, e.status
        return str(e)
    raise AssertionError("no usage error for %r" % (argv,))


class ArgumentTests(unittest.TestCase):
    """
    L{parseArguments}: the options programs pass to sendmail.
    """

    def test_plain(self) -> None:
        """
        Recipients alone: submit, a single dot ends the input.
        """
        o = parseArguments(["bob@x.test", "carol"])
        self.assertEqual(o.mode, "enqueue")
        self.assertEqual(o.recipients, ["bob@x.test", "carol"])
        self.assertTrue(o.dotEnds)
        self.assertFalse(o.extract)

    def test_mailxStyle(self) -> None:
        """
        C{-i -t -f addr} (how bsd-mailx calls sendmail), and the grouped
        and attached forms C{-ti}, C{-faddr}, C{-oi}.
        """
        for argv in (
            ["-i", "-t", "-f", "me@x.test"],
            ["-ti", "-fme@x.test"],
            ["-oi", "-t", "-r", "me@x.test"],
        ):
            o = parseArguments(argv)
            self.assertEqual(
                (o.dotEnds, o.extract, o.sender, o.recipients),
                (False, True, "me@x.test", []),
                argv,
            )

    def test_callers(self) -> None:
        """
        The command lines of Debian's cron, cronie, PHP and git.
        """
        o = parseArguments(["-i", "-FCronDaemon", "-B8BITMIME", "-oem", "root"])
        self.assertEqual(
            (o.dotEnds, o.fullName, o.bodyType, o.errorMode, o.recipients),
            (False, "CronDaemon", "8BITMIME", "mail", ["root"]),
        )
        o = parseArguments(
            ["-FCronDaemon", "-i", "-odi", "-oem", "-oi", "-t", "-f", "root"]
        )
        self.assertEqual(
            (o.extract, o.sender, o.errorMode, o.recipients),
            (True, "root", "mail", []),
        )
        o = parseArguments(["-t", "-i"])
        self.assertEqual((o.extract, o.dotEnds), (True, False))
        o = parseArguments(["-i", "a@x.test", "b@x.test"])
        self.assertEqual(o.recipients, ["a@x.test", "b@x.test"])

    def test_fullNameAndErrors(self) -> None:
        """
        C{-F name}, and C{-oem}/C{-oep}/C{-oeq} set how errors are told.
        """
        o = parseArguments(["-F", "Cron Daemon", "-oem", "root"])
        self.assertEqual((o.fullName, o.errorMode), ("Cron Daemon", "mail"))
        self.assertEqual(parseArguments(["-oep", "x"]).errorMode, "print")
        self.assertEqual(parseArguments(["-oeq", "x"]).errorMode, "quiet")

    def test_dsn(self) -> None:
        """
        C{-N}, C{-R} and C{-V} set NOTIFY, RET and ENVID; a bad C{-N} or
        C{-V} is a warning (as Postfix), a bad C{-R} a usage error.
        """
        o = parseArguments(["-N", "success,delay", "-R", "hdrs", "-V", "id42", "x"])
        self.assertEqual((o.notify, o.ret, o.envid), ("SUCCESS,DELAY", "HDRS", "id42"))
        o = parseArguments(["-Nbogus", "-V", "a b", "x"])
        self.assertEqual((o.notify, o.envid), (None, None))
        self.assertEqual(len(o.warnings), 2)
        self.assertIn("-R", parseFails(["-R", "all", "x"]))

    def test_ignoredWithArgument(self) -> None:
        """
        Options Postfix ignores take their argument with them, so that it
        is not taken for a recipient.
        """
        o = parseArguments(
            ["-O", "DeliveryMode=b", "-L", "label", "-h", "17", "-o", "m", "-X", "f"]
            + ["-A", "m", "-p", "smtp", "-e", "m", "-Gcmnx", "-U", "-om", "bob"]
        )
        self.assertEqual(o.recipients, ["bob"])

    def test_endOfOptions(self) -> None:
        """
        Options end at the first other argument or at C{--}: what follows
        is a recipient even if it starts with a dash.
        """
        o = parseArguments(["bob", "-t"])
        self.assertEqual((o.extract, o.recipients), (False, ["bob", "-t"]))
        o = parseArguments(["-i", "--", "-weird@x.test"])
        self.assertEqual(o.recipients, ["-weird@x.test"])

    def test_modes(self) -> None:
        """
        C{-bs}, C{-bp}, C{-bi}, C{-I}, C{-q}, C{-qIID}; C{-q30m}, C{-bh}
        are ignored; the names C{mailq} and C{newaliases} choose their
        mode.
        """
        cases = [
            (["-bs"], "sendmail", "smtp"),
            (["-bp"], "sendmail", "mailq"),
            (["-bi"], "sendmail", "newaliases"),
            (["-I"], "sendmail", "newaliases"),
            (["-q"], "sendmail", "flush"),
            (["-q30m"], "sendmail", "ignore"),
            (["-bh"], "sendmail", "ignore"),
            (["-bm", "x"], "sendmail", "enqueue"),
            ([], "/usr/bin/mailq", "mailq"),
            ([], "/usr/bin/newaliases", "newaliases"),
            (["-bp"], "newaliases", "mailq"),
        ]
        for argv, program, mode in cases:
            self.assertEqual(parseArguments(argv, program).mode, mode, argv)
        o = parseArguments(["-qIS0001"])
        self.assertEqual((o.mode, o.flushId), ("flush", "S0001"))

    def test_queueAndAliases(self) -> None:
        """
        C{-C}, C{-oQDIR} and C{-oAFILE}.
        """
        o = parseArguments(["-C", "/etc/smx/smx.conf", "-oQ/var/spool/smx", "-bi"])
        self.assertEqual(o.config, "/etc/smx/smx.conf")
        self.assertEqual(o.queueDirectory, "/var/spool/smx")
        self.assertEqual(
            parseArguments(["-oA/etc/aliases", "-bi"]).aliasFile, "/etc/aliases"
        )

    def test_usageErrors(self) -> None:
        """
        Unknown options, missing arguments and modes that take no
        recipients are usage errors.
        """
        self.assertIn("invalid option -- 'k'", parseFails(["-k", "x"]))
        self.assertIn("requires an argument -- 'f'", parseFails(["-f"]))
        self.assertIn("-B", parseFails(["-B", "BINARY", "x"]))
        self.assertIn("-t can be used only", parseFails(["-t", "-bp"]))
        self.assertIn("requires no recipient", parseFails(["-bp", "x"]))
        self.assertIn("requires no recipient", parseFails(["x"], "mailq"))
        self.assertIn("-qR", parseFails(["-qRexample.test"]))
        self.assertIn("twistd", parseFails(["-bd"]))
        self.assertIn("-bt", parseFails(["-bt"]))

    def test_malformedSender(self) -> None:
        """
        A C{-f} (or C{-r}) that is not one address is a usage error naming
        the value: words with a space, unbalanced angle brackets or
        quotes, a list, a domain missing after C{@}.  Postfix takes the
        first word of some of these (C{a b} gives C{a}), which submits
        with a sender the user did not mean.
        """
        for value in (
            "a b",
            "<a@b.test",
            "a@b.test>",
            '"a@b.test',
            "a@b.test, c@d.test",
            "a@b.test c@d.test",
            "a@",
            "@@",
            "a;b@c.test",
            "<a@b.test> x",
        ):
            err = parseFails(["-f", value, "x@y.test"])
            self.assertIn("malformed sender %r" % (value,), err)
        self.assertIn("malformed sender", parseFails(["-r", "a b", "x@y.test"]))

    def test_senderForms(self) -> None:
        """
        The forms of one address C{-f} takes, and the null sender.
        """
        for value, address in (
            ("", ""),
            ("<>", ""),
            ("Name <>", ""),
            ("a@b.test", "a@b.test"),
            ("<a@b.test>", "a@b.test"),
            ("Full Name <a@b.test>", "a@b.test"),
            ('"Name, Jr." <a@b.test>', "a@b.test"),
            ("a@b.test (Cron Daemon)", "a@b.test"),
            ("user", "user"),
            ("first..last@b.test", "first..last@b.test"),
            ("a@[192.0.2.1]", "a@[192.0.2.1]"),
            ("\u00e4@b.test", "\u00e4@b.test"),
        ):
            self.assertEqual(sendmail.parseSender(value), address, value)
            self.assertEqual(parseArguments(["-f", value, "x"]).sender, value)

    def test_parseNotify(self) -> None:
        """
        C{never}, or a list of success, failure and delay.
        """
        self.assertEqual(parseNotify("never"), "NEVER")
        self.assertEqual(parseNotify("failure, delay,failure"), "FAILURE,DELAY")
        self.assertIsNone(parseNotify("never,success"))
        self.assertIsNone(parseNotify(""))


class RecipientTests(unittest.TestCase):
    """
    L{recipientList}.
    """

    def test_listsAndQualification(self) -> None:
        """
        Each argument is an address list; addresses without a domain get
        the host name; each recipient once (the domain without case).
        """
        self.assertEqual(
            recipientList(
                ["bob@x.test, Carol <carol@x.test>", "root"],
                ["BOB@X.TEST", "bob@X.test", "dave"],
                "h.test",
            ),
            ["bob@x.test", "carol@x.test", "root@h.test", "BOB@X.TEST", "dave@h.test"],
        )

    def test_trailingComma(self) -> None:
        """
        An argument or a header field that ends in a comma (or holds two
        addresses without one) loses no other recipient: Python's strict
        address parser (Debian 12's Python 3.11) returns nothing for a
        whole list with such a value, and every recipient was dropped.
        """
        self.assertEqual(
            recipientList(["bob@x.test,", "carol@x.test"], [], "h.test"),
            ["bob@x.test", "carol@x.test"],
        )
        self.assertEqual(
            headerAddresses(["a@x.test", "Foo <c@x.test>,"]), ["a@x.test", "c@x.test"]
        )
        self.assertEqual(headerAddresses(["x y@z.test", "e@x.test"])[-1:], ["e@x.test"])


class MessageTests(unittest.TestCase):
    """
    L{prepareMessage} and L{readMessage}: what is done to the message.
    """

    def prepare(self, text: bytes, extract: bool = False):
        lines = readMessage(io.BytesIO(text), dotEnds=False)
        return prepareMessage(lines, IDENTITY, extract, now=1700000000.0)

    def header(self, content: bytes) -> List[bytes]:
        return content.split(b"\r\n\r\n", 1)[0].split(b"\r\n")

    def test_addsMissing(self) -> None:
        """
        A message with only a Subject gets a Received header naming the
        user id on top, and From (with the full name), Date and
        Message-ID at the end of its header; line ends become CR LF.
        """
        m = self.prepare(b"Subject: hi\n\nbody\n")
        header = self.header(m.content)
        self.assertEqual(
            header[0], b"Received: by h.test (smx sendmail, from userid 1000);"
        )
        self.assertTrue(header[1].startswith(b"\t"))
        self.assertEqual(header[2], b"Subject: hi")
        self.assertEqual(header[3], b"From: Alice Liddell <alice@h.test>")
        self.assertTrue(header[4].startswith(b"Date: "))
        self.assertRegex(
            header[5].decode(), r"^Message-ID: <\d{14}\.[0-9a-f]{16}@h\.test>$"
        )
        self.assertTrue(m.content.endswith(b"\r\n\r\nbody\r\n"))
        self.assertFalse(m.eightBit)

    def test_keepsPresent(self) -> None:
        """
        Headers already there are kept as they are, case aside.
        """
        m = self.prepare(
            b"FROM: x@y\r\ndate: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
            b"Message-Id: <a@b>\r\n\r\nbody\r\n"
        )
        header = self.header(m.content)
        self.assertEqual(
            header[2:],
            [
                b"FROM: x@y",
                b"date: Mon, 1 Jan 2024 00:00:00 +0000",
                b"Message-Id: <a@b>",
            ],
        )

    def test_extract(self) -> None:
        """
        With C{-t} the recipients come from To, Cc and Bcc (folded,
        with groups and names), and Bcc is removed with its continuation
        lines.
        """
        m = self.prepare(
            b"To: bob@x.test,\n Carol <carol@x.test>\nCc: team: dave@x.test;\n"
            b"Bcc: secret@x.test,\n\tother@x.test\nSubject: s\n\nbody\n",
            extract=True,
        )
        self.assertEqual(
            m.recipients,
            [
                "bob@x.test",
                "carol@x.test",
                "dave@x.test",
                "secret@x.test",
                "other@x.test",
            ],
        )
        self.assertNotIn(b"secret", m.content)
        self.assertNotIn(b"other@", m.content)
        self.assertIn(b"To: bob@x.test,\r\n Carol <carol@x.test>\r\n", m.content)

    def test_extractLastFieldEndsInComma(self) -> None:
        """
        With C{-t}, a last recipient field that ends in a comma (as some
        scripts write it) keeps every recipient.
        """
        m = self.prepare(
            b"To: alice@x.test\nBcc: hid@x.test,\nSubject: s\n\nbody\n", extract=True
        )
        self.assertEqual(m.recipients, ["alice@x.test", "hid@x.test"])
        self.assertNotIn(b"hid@", m.content)

    def test_resent(self) -> None:
        """
        When Resent- recipient headers are present, only they count.
        """
        m = self.prepare(
            b"To: old@x.test\nResent-To: new@x.test\nResent-Bcc: hidden@x.test\n\nb\n",
            extract=True,
        )
        self.assertEqual(m.recipients, ["new@x.test", "hidden@x.test"])
        self.assertNotIn(b"hidden", m.content)

    def test_resentBlockCompleted(self) -> None:
        """
        A message with a C{Resent-} field gets the missing C{Resent-From:},
        C{Resent-Date:} and C{Resent-Message-ID:} instead of C{From:},
        C{Date:} and C{Message-ID:} (as Postfix's cleanup); one present is
        kept.  A C{Resent-From:} alone leaves the recipients of C{-t} to
        C{To:}, C{Cc:} and C{Bcc:} (as Postfix).
        """
        m = self.prepare(
            b"To: old@x.test\nResent-To: new@x.test\n"
            b"Resent-Date: Tue, 1 Dec 2026 15:00:00 +0000\n\nb\n",
            extract=True,
        )
        header = self.header(m.content)
        self.assertIn(b"Resent-From: Alice Liddell <alice@h.test>", header)
        self.assertEqual(
            [h for h in header if h.startswith(b"Resent-Date:")],
            [b"Resent-Date: Tue, 1 Dec 2026 15:00:00 +0000"],
        )
        self.assertEqual(
            [h for h in header if h.startswith(b"Resent-Message-ID: <")][0][-8:],
            b"@h.test>",
        )
        for name in (b"From:", b"Date:", b"Message-ID:"):
            self.assertEqual([h for h in header if h.startswith(name)], [])
        m = self.prepare(b"To: old@x.test\nResent-From: r@x.test\n\nb\n", extract=True)
        self.assertEqual(m.recipients, ["old@x.test"])

    def test_bccRemovedWithoutExtract(self) -> None:
        """
        Bcc is removed also without C{-t}, and gives no recipients then.
        """
        m = self.prepare(b"To: a@x.test\nBcc: b@x.test\n\nbody\n")
        self.assertEqual(m.recipients, [])
        self.assertNotIn(b"Bcc", m.content)

    def test_noHeader(self) -> None:
        """
        Input that does not start with a header field is all body: the
        added header and an empty line come before it.
        """
        m = self.prepare(b"just text: not a header\nsecond line\n")
        self.assertIn(b"\r\n\r\njust text: not a header\r\nsecond line\r\n", m.content)

    def test_headerWithoutEmptyLine(self) -> None:
        """
        A header block that runs into a non-header line gets the empty
        line it lacks.
        """
        m = self.prepare(b"Subject: s\nbody without separator\n")
        self.assertIn(b"\r\n\r\nbody without separator\r\n", m.content)
        self.assertIn(b"Subject: s\r\n", m.content)

    def test_lineEnds(self) -> None:
        """
        LF, CR LF and a lone CR all end lines; the result has CR LF only.
        """
        m = self.prepare(b"Subject: s\r\n\r\na\rb\r\nc\n")
        self.assertTrue(m.content.endswith(b"\r\n\r\na\r\nb\r\nc\r\n"))
        self.assertNotIn(b"\r\r", m.content)
        self.assertEqual(m.content.count(b"\n"), m.content.count(b"\r\n"))

    def test_longLines(self) -> None:
        """
        A line over 998 octets is broken with CR LF and a space.
        """
        self.assertEqual(breakLongLine(b"x" * 998), [b"x" * 998])
        pieces = breakLongLine(b"y" * 2500)
        self.assertEqual([len(p) for p in pieces], [998, 998, 506])
        self.assertTrue(all(p.startswith(b" ") for p in pieces[1:]))
        m = self.prepare(b"Subject: s\n\n" + b"z" * 3000 + b"\n")
        self.assertTrue(all(len(l) <= 998 for l in m.content.split(b"\r\n")))

    def test_nul(self) -> None:
        """
        A NUL byte cannot be submitted.
        """
        self.assertRaises(MessageError, self.prepare, b"Subject: s\n\na\0b\n")

    def test_eightBit(self) -> None:
        """
        Bytes outside ASCII make the body 8-bit.
        """
        self.assertTrue(self.prepare("Subject: é\n\nbody\n".encode()).eightBit)

    def test_dotAndMbox(self) -> None:
        """
        A single dot ends the input unless C{-i}, and is not read past;
        leading mbox C{From } lines are dropped.
        """
        stream = io.BytesIO(b"From alice Mon Jan 1\nSubject: s\n\nbody\n.\nafter\n")
        self.assertEqual(
            readMessage(stream, dotEnds=True), [b"Subject: s", b"", b"body"]
        )
        self.assertEqual(stream.read(), b"after\n")
        stream = io.BytesIO(b"a\n.\nb\n")
        self.assertEqual(readMessage(stream, dotEnds=False), [b"a", b".", b"b"])

    def test_nullSenderFrom(self) -> None:
        """
        The null sender's From is MAILER-DAEMON at the host.
        """
        m = prepareMessage([b"Subject: s"], Identity("", "", "h.test", 0), False)
        self.assertIn(b"\r\nFrom: MAILER-DAEMON@h.test\r\n", m.content)


class RunTests(unittest.TestCase):
    """
    L{run}: exit statuses and messages of mistakes, without smx.
    """

    def run_(self, argv: List[str], stdin: bytes = b"", environ=None):
        err = io.StringIO()
        out = io.BytesIO()
        status = run(
            argv,
            program="sendmail",
            stdin=io.BytesIO(stdin),
            stdout=out,
            stderr=err,
            environ=environ if environ is not None else {},
        )
        return status, err.getvalue(), out.getvalue()

    def test_noRecipients(self) -> None:
        """
        No recipient and no C{-t}: usage error, one line.
        """
        status, err, _ = self.run_([])
        self.assertEqual(status, EX_USAGE)
        self.assertEqual(err.count("\n"), 1)
        self.assertTrue(err.startswith("sendmail: Recipient addresses must"))

    def test_noRecipientsInHeader(self) -> None:
        """
        C{-t} and a header without recipients: usage error.
        """
        conf = self.config("")
        status, err, _ = self.run_(["-C", conf, "-t"], b"Subject: s\n\nb\n")
        self.assertEqual(status, EX_USAGE)
        self.assertIn("No recipient addresses found in message header", err)

    def test_nulRefused(self) -> None:
        """
        A NUL in the message: EX_DATAERR before anything is sent.
        """
        conf = self.config("")
        status, err, _ = self.run_(["-C", conf, "x@y.test"], b"a\0b\n")
        self.assertEqual(status, EX_DATAERR)
        self.assertIn("NUL", err)

    def test_quiet(self) -> None:
        """
        With C{-oeq} a usage error says nothing.
        """
        status, err, _ = self.run_(["-oeq"])
        self.assertEqual((status, err), (EX_USAGE, ""))

    def test_ignored(self) -> None:
        """
        C{-q30m} and C{-bh} do nothing and succeed.
        """
        self.assertEqual(self.run_(["-q30m"])[0], EX_OK)
        self.assertEqual(self.run_(["-bH"])[0], EX_OK)

    def config(self, text: str) -> str:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, "smx.conf")
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_badConfiguration(self) -> None:
        """
        A configuration with a mistake: EX_CONFIG with file and line.
        """
        conf = self.config("smtps {\n  bogus = 1;\n}\n")
        status, err, _ = self.run_(["-C", conf, "x@y.test"], b"b\n")
        self.assertEqual(status, EX_CONFIG)
        self.assertIn("smx.conf:2", err)
        self.assertEqual(err.count("\n"), 1)

    def test_nothingListeningNoMaildrop(self) -> None:
        """
        When SMTPS does not answer and no queue directory is known (no
        configuration file), the message cannot be kept: EX_TEMPFAIL and
        a line that says what to do.  (The address comes from
        C{submission_address}, so no real smx can answer.)
        """
        self.patch(
            sendmail,
            "loadSubmissionConfiguration",
            lambda options, environ: (self.deadConfiguration(), None, False),
        )
        status, err, _ = self.run_(["x@y.test"], b"Subject: s\n\nb\n")
        self.assertEqual(status, EX_TEMPFAIL)
        self.assertIn("Connection refused", err)
        self.assertIn("no maildrop directory is known", err)

    def deadConfiguration(self):
        import socket

        from smx.config import configurationFromText

        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        return configurationFromText(
            'pickup { submission_address = "127.0.0.1:%d"; }' % (port,)
        )

    def test_embeddedDefault(self) -> None:
        """
        Without C{-C} and C{$SMXCONF} the embedded default configuration
        is used (SMTPS on 127.0.0.1:2525) and no maildrop is known; with
        C{$SMXCONF} its directory is the queue directory, and C{-oQ}
        overrides it.
        """
        from smx.queue.pickupsettings import PickupSettings

        cfg, path, canDrop = loadSubmissionConfiguration(parseArguments(["x"]), {})
        self.assertEqual((path, canDrop), (None, False))
        self.assertEqual(
            PickupSettings.fromConfiguration(cfg).submissionAddress, ("127.0.0.1", 2525)
        )
        conf = self.config("")
        cfg, path, canDrop = loadSubmissionConfiguration(
            parseArguments(["x"]), {"SMXCONF": conf}
        )
        self.assertEqual((path, canDrop), (conf, True))
        self.assertEqual(
            PickupSettings.fromConfiguration(cfg).directory,
            os.path.join(os.path.dirname(conf), "maildrop"),
        )
        cfg, _, _ = loadSubmissionConfiguration(
            parseArguments(["-C", os.path.dirname(conf), "-oQ/spool", "x"]), {}
        )
        self.assertEqual(
            PickupSettings.fromConfiguration(cfg).directory, "/spool/maildrop"
        )


class RelaySMTPTests(unittest.TestCase):
    """
    L{sendmail.relaySMTP} (C{-bs}) against a server on a real loopback
    socket that answers every line and never closes the connection.
    """

    def test_inputEndedWithoutQuit(self) -> None:
        """
        Input that ends without C{QUIT}: the replies to every line still
        come back (the connection is not half-closed at the end of the
        input), and the session ends once the server has said nothing for
        C{idle} seconds, with exit status 0.
        """
        import socket
        import tempfile
        import threading
        import time

        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        closed = threading.Event()

        def serve() -> None:
            connection, _ = listener.accept()
            with connection:
                connection.sendall(b"220 test\r\n")
                buffered = b""
                while True:
                    data = connection.recv(4096)
                    if not data:  # the client closed (or half-closed)
                        closed.set()
                        return
                    buffered += data
                    while b"\r\n" in buffered:
                        line, buffered = buffered.split(b"\r\n", 1)
                        time.sleep(0.05)  # replies come after the input ended
                        connection.sendall(b"250 " + line + b"\r\n")

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        readFd, writeFd = os.pipe()
        os.write(writeFd, b"EHLO a\r\nNOOP\r\n")
        os.close(writeFd)
        stdin = os.fdopen(readFd, "rb")
        self.addCleanup(stdin.close)
        stdout = tempfile.TemporaryFile()
        self.addCleanup(stdout.close)
        started = time.monotonic()
        status = sendmail.relaySMTP(listener.getsockname(), stdin, stdout, idle=0.5)
        self.assertEqual(status, EX_OK)
        self.assertLess(time.monotonic() - started, 5)
        stdout.seek(0)
        self.assertEqual(stdout.read(), b"220 test\r\n250 EHLO a\r\n250 NOOP\r\n")
        thread.join(5)
        self.assertTrue(closed.is_set())

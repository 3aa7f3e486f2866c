# -*- test-case-name: smx.scripts.test.test_integration_sendmail -*-
"""
Integration tests of C{smx sendmail} and the pickup service: the command
run as a real process (C{subprocess}) with the argument forms cron,
mail(1), PHP and git use, against smx run as a user runs it (C{twistd -n
smx}, L{smx.test.mta}) delivering into Maildirs with its own lmtpd, and
against a stopped smx (the message waits in the maildrop directory and is
delivered once smx starts).  bsd-mailx (Debian package C{bsd-mailx}) is
run with a C{MAILRC} that points its C{sendmail} variable at smx's, so the
system's C{/usr/sbin/sendmail} is never touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from typing import Dict, List, Optional, Tuple

from twisted.trial.unittest import SkipTest, TestCase

from smx.maps.createmap import createMapFromFile
from smx.queue.maildrop import readDrop, removeDrop, waitingNames
from smx.test.mta import MTA, configuration, tempDirectory, waitFor

MAILX = "/usr/bin/bsd-mailx"

#: the console script smx-sendmail, as setup.cfg makes it
WRAPPER = """#!%s
import sys
from smx.scripts.sendmail import main
if __name__ == "__main__":
    sys.exit(main())
""" % (sys.executable,)

ALIASES = (
    "alice: local:\nbob: local:\ncarol: local:\ndave: local:\n"
    "root: alice\npostmaster: alice\n"
)


class _Base(TestCase):
    """
    An smx in its own directory with local users alice, bob, carol and
    dave at smx.test, and smx-sendmail with its links C{sendmail},
    C{mailq} and C{newaliases} in a directory of their own.
    """

    #: access map entries (text), besides the defaults
    access = ""

    def setUp(self) -> None:
        self.root = tempDirectory(self, "smx-sendmail-")
        self.mta = MTA(self, os.path.join(self.root, "smx"))
        text = configuration(self.mta.port, hostname="smx.test")
        text += "\npickup { interval = 200ms; }\n"
        self.mta.write(text, mt="smx.test lmtp:\nlocalhost lmtp:\n")
        # the maps are built in this process (smx createmap has its own
        # tests): two processes fewer per test
        for name, source, aliases in (
            ("aliases", ALIASES, True),
            ("access", self.access or "cltaddr:127.0.0.1 relay\n", False),
        ):
            with open(self.mta.path(name), "w") as f:
                f.write(source)
            createMapFromFile(
                self.mta.path(name), self.mta.path(name + ".db"), aliases=aliases
            )
        self.bin = os.path.join(self.root, "bin")
        os.makedirs(self.bin)
        self.sendmailPath = os.path.join(self.bin, "smx-sendmail")
        with open(self.sendmailPath, "w") as f:
            f.write(WRAPPER)
        os.chmod(self.sendmailPath, 0o755)
        for name in ("sendmail", "mailq", "newaliases"):
            os.symlink("smx-sendmail", os.path.join(self.bin, name))
        self.environ = dict(os.environ, SMXCONF=self.mta.config, HOME=self.root)
        self.environ.pop("NAME", None)

    def sendmail(
        self,
        *args: str,
        stdin: bytes = b"Subject: test\n\nhello\n",
        program: str = "sendmail",
        environ: Optional[Dict[str, str]] = None,
    ) -> Tuple[int, str, bytes]:
        """
        Run a link to smx-sendmail (default: C{sendmail}) with SMXCONF
        naming the test's smx.conf.

        @return: C{(exit status, standard error, standard output)}.
        """
        p = subprocess.run(
            [os.path.join(self.bin, program)] + list(args),
            input=stdin,
            capture_output=True,
            timeout=30,
            env=environ if environ is not None else self.environ,
        )
        err = p.stderr.decode("utf-8", "replace")
        self.assertNotIn("Traceback", err)
        return p.returncode, err, p.stdout

    def delivered(self, user: str, count: int = 1, timeout: float = 8.0) -> List[bytes]:
        """
        Wait until C{user}'s Maildir has C{count} messages and return them.
        """
        waitFor(lambda: len(self.mta.maildir(user)) >= count, timeout)
        messages = self.mta.maildir(user)
        self.assertEqual(len(messages), count, "%s's Maildir: %r" % (user, messages))
        return messages

    def header(self, message: bytes) -> bytes:
        return (
            message.split(b"\r\n\r\n", 1)[0]
            if b"\r\n\r\n" in message
            else message.split(b"\n\n", 1)[0]
        )


class RunningTests(_Base):
    """
    C{smx sendmail} against a running smx.  Each test runs several
    commands against one smx (starting smx is what takes time).
    """

    def setUp(self) -> None:
        _Base.setUp(self)
        self.mta.start()

    def test_submissions(self) -> None:
        """
        The argument forms of cron, mail(1), PHP and git:

          - C{-oi -f SENDER -F NAME RCPT}: delivered with that envelope
            sender, a From header with the full name, Date and Message-ID
            added, the Received header with the user id, and a line with a
            single dot kept;
          - without C{-i} a line with a single dot ends the message;
          - C{-t} with a recipient argument: the header's To, Cc and Bcc
            and the argument all get the message (as Postfix), and no
            copy has the Bcc header or the blind recipient's address;
          - C{-N}, C{-R}, C{-V} are accepted and, since SMTPS does not
            offer DSN, left out of the dialogue that C{-v} shows.
        """
        status, err, _ = self.sendmail(
            "-oi",
            "-f",
            "cron@smx.test",
            "-F",
            "Cron Daemon",
            "alice",
            stdin=b"Subject: t1\n\nbefore\n.\nafter the dot\n",
        )
        self.assertEqual((status, err), (0, ""))
        [m] = self.delivered("alice")
        header = self.header(m)
        self.assertIn(b"Return-Path: <cron@smx.test>", header)
        self.assertIn(b"From: Cron Daemon <cron@smx.test>", header)
        self.assertIn(b"\nDate: ", header)
        self.assertIn(b"\nMessage-ID: <", header)
        self.assertIn(b"(smx sendmail, from userid %d)" % (os.getuid(),), header)
        self.assertIn(b"after the dot", m)

        status, _, _ = self.sendmail(
            "bob@smx.test", stdin=b"Subject: t2\n\nbefore\n.\nafter\n"
        )
        self.assertEqual(status, 0)
        [m] = self.delivered("bob")
        self.assertIn(b"before", m)
        self.assertNotIn(b"after", m)

        status, err, _ = self.sendmail(
            "-t",
            "-i",
            "bob@smx.test",
            stdin=b"To: alice@smx.test\nCc: Carol <carol@smx.test>\n"
            b"Bcc: dave@smx.test\nSubject: t3\n\nbody\n",
        )
        self.assertEqual((status, err), (0, ""))
        for user, count in (("alice", 2), ("bob", 2), ("carol", 1), ("dave", 1)):
            m = [m for m in self.delivered(user, count) if b"Subject: t3" in m][0]
            self.assertNotIn(b"Bcc", m)
            if user != "dave":
                self.assertNotIn(b"dave@", m)

        status, err, _ = self.sendmail(
            "-v", "-N", "success,failure", "-R", "hdrs", "-V", "env-1", "dave@smx.test"
        )
        self.assertEqual(status, 0)
        # SMTPS offers DSN (RFC 3461): the parameters go with the commands
        self.assertIn(">>> MAIL FROM:<", err)
        self.assertIn(" RET=HDRS ENVID=env-1\n", err)
        self.assertIn(" NOTIFY=SUCCESS,FAILURE\n", err)
        self.assertIn("<<< 250 ", err)
        self.delivered("dave", 2)

    def test_resent(self) -> None:
        """
        C{sendmail -t} with a message sent again: the C{Resent-To:},
        C{Resent-Cc:} and C{Resent-Bcc:} recipients get it, not those of
        C{To:} and C{Bcc:} (as Postfix); neither Bcc field is delivered,
        and the missing C{Resent-From:}, C{Resent-Date:} and
        C{Resent-Message-ID:} are added rather than C{From:}, C{Date:}
        and C{Message-ID:}.
        """
        status, err, _ = self.sendmail(
            "-t",
            "-f",
            "resender@smx.test",
            stdin=b"To: alice@smx.test\nBcc: dave@smx.test\n"
            b"Resent-To: bob@smx.test\nResent-Bcc: carol@smx.test\n"
            b"Subject: again\n\nbody\n",
        )
        self.assertEqual((status, err), (0, ""))
        for user in ("bob", "carol"):
            [m] = self.delivered(user)
            header = self.header(m)
            self.assertNotIn(b"Bcc", header)
            if user == "bob":
                self.assertNotIn(b"carol@", header)
            self.assertRegex(header, rb"\nResent-From: .*<resender@smx.test>\n")
            self.assertIn(b"\nResent-Date: ", header)
            self.assertIn(b"\nResent-Message-ID: <", header)
            self.assertNotIn(b"\nFrom:", header)
        self.assertEqual(self.mta.maildir("alice") + self.mta.maildir("dave"), [])

    def test_refused(self) -> None:
        """
        A recipient SMTPS refuses: exit 67 (EX_NOUSER) with one line
        naming it and the reply, and the other recipient gets the
        message; with C{-oem} the refusal is mailed to the sender instead
        and the command exits with 0.
        """
        status, err, _ = self.sendmail("alice@smx.test", "nobody@smx.test")
        self.assertEqual(status, 67)
        self.assertEqual(err.count("\n"), 1)
        self.assertRegex(err, r"^sendmail: <nobody@smx.test>: 550 ")
        self.delivered("alice")

        status, err, _ = self.sendmail(
            "-oem", "-f", "carol@smx.test", "nobody@smx.test"
        )
        self.assertEqual((status, err), (0, ""))
        [m] = self.delivered("carol")
        self.assertIn(b"Undelivered Mail Returned to Sender", m)
        self.assertIn(b"nobody@smx.test", m)
        self.assertIn(b"Return-Path: <>", m)

    def test_otherModes(self) -> None:
        """
        C{-bs} relays an SMTP session on standard input and output to
        SMTPS, command by command or all at once on standard input (every
        reply comes back); C{sendmail -bp} and the link C{mailq} show the queue;
        C{sendmail -q} asks QMGR to flush it; the link C{newaliases}
        rebuilds the aliases map from its text file and has smx reopen it,
        so that a new alias works at once.
        """
        p = subprocess.Popen(
            [os.path.join(self.bin, "sendmail"), "-bs"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=self.environ,
        )
        assert p.stdin is not None and p.stdout is not None
        replies = []

        def reply() -> bytes:
            assert p.stdout is not None
            while True:
                line = p.stdout.readline()
                replies.append(line)
                if line[3:4] != b"-":
                    return line

        self.assertTrue(reply().startswith(b"220 "))
        for command, code in [
            (b"EHLO client.test", b"250"),
            (b"MAIL FROM:<bob@smx.test>", b"250"),
            (b"RCPT TO:<alice@smx.test>", b"250"),
            (b"DATA", b"354"),
            (b"Subject: via -bs\r\n\r\nhello\r\n.", b"250"),
            (b"QUIT", b"221"),
        ]:
            p.stdin.write(command + b"\r\n")
            p.stdin.flush()
            self.assertTrue(reply().startswith(code), replies)
        p.stdin.close()
        self.assertEqual(p.wait(10), 0)
        p.stdout.close()
        [m] = self.delivered("alice")
        self.assertIn(b"Subject: via -bs", m)

        # every command at once, then the end of the input, as a script
        # writes them: the replies to all of them, to QUIT included
        status, err, out = self.sendmail(
            "-bs",
            stdin=b"EHLO client.test\r\nMAIL FROM:<bob@smx.test>\r\n"
            b"RCPT TO:<dave@smx.test>\r\nDATA\r\n"
            b"Subject: via -bs at once\r\n\r\nhello\r\n.\r\nQUIT\r\n",
        )
        self.assertEqual((status, err), (0, ""))
        codes = [line[:4] for line in out.splitlines() if line[3:4] == b" "]
        self.assertEqual(
            codes, [b"220 ", b"250 ", b"250 ", b"250 ", b"354 ", b"250 ", b"221 "]
        )
        [m] = self.delivered("dave")
        self.assertIn(b"Subject: via -bs at once", m)

        for program, args in (("sendmail", ["-bp"]), ("mailq", [])):
            status, err, out = self.sendmail(*args, program=program, stdin=b"")
            self.assertEqual(status, 0, err)
            self.assertIn(b"Mail queue is empty", out)
        status, err, _ = self.sendmail("-q", stdin=b"")
        self.assertEqual((status, err), (0, ""))

        with open(self.mta.path("aliases"), "a") as f:
            f.write("team: bob, carol\n")
        status, err, _ = self.sendmail(program="newaliases", stdin=b"")
        self.assertEqual((status, err), (0, ""))
        status, err, _ = self.sendmail("team@smx.test")
        self.assertEqual((status, err), (0, ""))
        self.delivered("bob")
        self.delivered("carol")

    def test_mailxAndInstalledScript(self) -> None:
        """
        bsd-mailx (which runs C{sendmail -i -t -f FROM}) with a subject in
        UTF-8, Cc and Bcc: every recipient gets the message, no copy has
        the Bcc header, nothing goes to dead.letter.  The console script
        C{smx-sendmail} that setup.cfg installs next to C{smx} submits too.
        """
        if not os.access(MAILX, os.X_OK):
            raise SkipTest("bsd-mailx (Debian package bsd-mailx) is not installed")
        rc = os.path.join(self.root, "mailrc")
        with open(rc, "w") as f:
            f.write("set sendmail=%s\n" % (os.path.join(self.bin, "sendmail"),))
        environ = dict(self.environ, MAILRC=rc)
        p = subprocess.run(
            [MAILX, "-n", "-s", "mailx subjekt é", "-c", "bob@smx.test"]
            + ["-b", "dave@smx.test", "-r", "alice@smx.test", "--", "carol@smx.test"],
            input="body from mailx\n".encode(),
            capture_output=True,
            timeout=30,
            env=environ,
        )
        self.assertEqual((p.returncode, p.stderr), (0, b""))
        for user in ("carol", "bob", "dave"):
            [m] = self.delivered(user)
            self.assertIn("Subject: mailx subjekt é".encode(), m)
            self.assertIn(b"Return-Path: <alice@smx.test>", m)
            self.assertNotIn(b"Bcc", m)
            if user != "dave":
                self.assertNotIn(b"dave@", m)
        self.assertFalse(os.path.exists(os.path.join(self.root, "dead.letter")))

        script = os.path.join(os.path.dirname(sys.executable), "smx-sendmail")
        if not os.access(script, os.X_OK):
            raise SkipTest("smx-sendmail is not installed (pip install -e .)")
        p = subprocess.run(
            [script, "-i", "alice@smx.test"],
            input=b"Subject: installed\n\nbody\n",
            capture_output=True,
            timeout=30,
            env=self.environ,
        )
        self.assertEqual((p.returncode, p.stderr), (0, b""))
        self.delivered("alice")


class DeferringTests(_Base):
    """
    A recipient SMTPS defers with 4xx: the others get the message at
    once, and it waits in the maildrop for that one.
    """

    access = "cltaddr:127.0.0.1 relay\nto:carol@smx.test error:451 4.7.1 try later\n"

    def test_temporaryKept(self) -> None:
        """
        The command exits with 0 (the message is accepted), alice's copy
        is delivered, and the maildrop file names carol only; pickup keeps
        trying it.
        """
        self.mta.start()
        status, err, _ = self.sendmail("alice@smx.test", "carol@smx.test")
        self.assertEqual((status, err), (0, ""))
        self.delivered("alice")
        directory = self.mta.path("maildrop")
        [name] = waitingNames(directory)
        with open(os.path.join(directory, name), "rb") as f:
            data = f.read()
        self.assertIn(b'"carol@smx.test"', data)
        self.assertNotIn(b'"alice@smx.test"', data)
        self.assertTrue(
            waitFor(lambda: "to=<carol@smx.test>, stat=deferred" in self.mta.log(), 5)
        )


class StoppedTests(_Base):
    """
    C{smx sendmail} while smx does not run.
    """

    def test_maildropThenPickup(self) -> None:
        """
        With smx stopped the command exits with 0 and leaves one complete
        file in the maildrop directory (no temporary file); once smx
        starts, pickup submits it, the recipients get it and the file is
        removed.
        """
        directory = self.mta.path("maildrop")
        status, err, _ = self.sendmail(
            "-t", stdin=b"To: bob@smx.test\nBcc: carol@smx.test\nSubject: waited\n\nb\n"
        )
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(len(os.listdir(directory)), 1)
        self.assertEqual(len(waitingNames(directory)), 1)
        self.mta.start()
        [m] = self.delivered("bob")
        self.assertIn(b"Subject: waited", m)
        self.assertNotIn(b"Bcc", m)
        self.delivered("carol")
        self.assertTrue(waitFor(lambda: not os.listdir(directory), 5))

        def records() -> List[str]:
            return [r for r in self.mta.records("pickup") if "nrcpts=" in r]

        # the log is written once per reactor turn, after the removal
        self.assertTrue(waitFor(lambda: records(), 5), self.mta.log())
        [record] = records()
        self.assertIn("accepted=2", record)
        self.assertIn("uid=%d" % (os.getuid(),), record)

    def test_malformedSender(self) -> None:
        """
        C{sendmail -f "a b"} (not one address) exits 64 (EX_USAGE) with
        one line naming the value and keeps nothing; C{-f "<>"} and C{-f
        ""} still submit with the null sender, and C{-f "Name <a@b>"}
        with C{a@b}.
        """
        directory = self.mta.path("maildrop")
        for value in ("a b", "<carol@smx.test", "carol@smx.test, dave@smx.test"):
            status, err, _ = self.sendmail("-f", value, "bob@smx.test")
            self.assertEqual(status, 64, err)
            self.assertEqual(err.count("\n"), 1, err)
            self.assertIn("sendmail: -f option specified malformed sender", err)
            self.assertIn(repr(value), err)
        self.assertFalse(os.path.exists(directory) and waitingNames(directory))
        for value, sender in (
            ("<>", ""),
            ("", ""),
            ("Carol <carol@smx.test>", "carol@smx.test"),
        ):
            status, err, _ = self.sendmail("-f", value, "bob@smx.test")
            self.assertEqual((status, err), (0, ""))
            [name] = waitingNames(directory)
            envelope, _, _ = readDrop(directory, name, 1 << 20)
            self.assertEqual(envelope.sender, sender)
            removeDrop(directory, name)

    def test_withoutSmx(self) -> None:
        """
        Without smx: C{-v} says that smx did not answer and where the
        message waits; C{-bs} answers 421 and exits 75 (EX_TEMPFAIL);
        C{-q} says in one line that QMGR cannot be reached and exits 69
        (EX_UNAVAILABLE); a maildrop path that cannot be written makes
        the command exit 75 with one line per problem.
        """
        status, err, _ = self.sendmail("-v", "bob@smx.test")
        self.assertEqual(status, 0)
        self.assertIn("Connection refused", err)
        self.assertIn("the message waits in the maildrop", err)

        status, err, out = self.sendmail("-bs", stdin=b"EHLO x\r\n")
        self.assertEqual(status, 75)
        self.assertTrue(out.startswith(b"421 4.3.2 smx does not answer"), out)

        status, err, _ = self.sendmail("-q", stdin=b"")
        self.assertEqual(status, 69)
        self.assertEqual(err.count("\n"), 1)
        self.assertIn("cannot talk to QMGR", err)

        shutil.rmtree(self.mta.path("maildrop"))
        with open(self.mta.path("maildrop"), "w") as f:
            f.write("not a directory")
        status, err, _ = self.sendmail("bob@smx.test")
        self.assertEqual(status, 75)
        self.assertIn("cannot keep the message", err)
        self.assertIn("Not a directory", err)

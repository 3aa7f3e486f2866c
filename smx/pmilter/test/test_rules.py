# -*- test-case-name: smx.pmilter.test.test_rules -*-
"""
Tests for the rules pmilter (L{smx.pmilter.rules}) and its file
(L{smx.pmilter.rulefile}).
"""

import os

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from smx.log import Logger, MemorySink
from smx.pmilter.host import PolicyMilterHost
from smx.pmilter.rulefile import RulesError, loadRules, parseRules
from smx.pmilter.rules import Rules
from smx.pmilter.testing import FakeSMTPSession

RULES = r"""
# comments and blank lines are ignored

reject "550 5.7.1 No mail from spammer.example"
    connect /\.spammer\.example$/i //
    mail /@spammer\.example>$/i      # from any host

tempfail
    helo /^localhost$/ and not connect // /^127\./

discard
    rcpt |^<spamtrap@|i

accept
    mail /^<>$/ and rcpt /^<postmaster@/i

reject "No viagra here"
    header /^subject$/i /viagra/i
    body /click here/i and not header /^X-Trusted$/ //
    rcpt /^<sales@/ and header /^Subject$/ /offer/i
"""


class ParserTests(SynchronousTestCase):
    """
    L{parseRules}.
    """

    def test_parse(self):
        """
        Actions with their replies and rules; every term kind.
        """
        rs = parseRules(RULES, "r")
        self.assertEqual(
            [(a.kind, a.reply, len(a.rules)) for a in rs.actions],
            [
                ("reject", "550 5.7.1 No mail from spammer.example", 2),
                ("tempfail", "451 4.7.1 Try again later", 1),
                ("discard", None, 1),
                ("accept", None, 1),
                ("reject", "550 5.7.1 No viagra here", 3),
            ],
        )
        self.assertEqual(
            rs.kinds(), frozenset(["connect", "mail", "helo", "rcpt", "header", "body"])
        )

    def test_mistakes(self):
        """
        Each mistake names the file, line and column.
        """
        for text, message in (
            ('rejct "x"\n  helo /a/\n', "r:1:1: a rule before the first action"),
            ("reject\n  helo /a/ or\n", "r:2:14: expected a term"),
            ("reject\n  helo a/\n", "r:2:8: expected a regular expression"),
            ("reject\n  helo /a\n", "r:2:8: the regular expression has no closing /"),
            ("reject\n  helo /(/\n", "r:2:8: bad regular expression"),
            ("reject\n  helo /a/x\n", "r:2:11: unknown flag 'x'"),
            ("reject\n  helo /a/ /b/\n", "r:2:12: expected 'and', 'or'"),
            ("reject\n  connect /a/\n", "r:2:14: expected a regular expression"),
            ("reject\n  (helo /a/\n", "r:2:12: expected ')'"),
            ("reject\n", "r:1:1: action 'reject' has no rules"),
            ("reject x\n  helo /a/\n", "r:1:8: the text of reject must be in double"),
            ('reject "451 4.7.1 x"\n  helo /a/\n', "r:1:1: reject needs a 5xx reply"),
            ('tempfail "451 5.7.1 x"\n  helo /a/\n', "r:1:1: the enhanced status"),
            ('discard "x"\n  helo /a/\n', "r:1:9: discard takes no text"),
            ("reject\n  helo /a{99999999999}/\n", "r:2:8: bad regular expression"),
            ("reject\n  " + "(" * 2000 + "helo //", "r:2:53: 'not' and paren"),
            ("reject\n  " + "not " * 2000 + "helo //", "r:2:203: 'not' and paren"),
        ):
            e = self.assertRaises(RulesError, parseRules, text, "r")
            self.assertTrue(str(e).startswith(message), (str(e), message))

    def test_loadMissing(self):
        """
        A file that cannot be read is a RulesError naming it.
        """
        e = self.assertRaises(RulesError, loadRules, "/nonexistent/r.rules")
        self.assertIn("/nonexistent/r.rules: cannot read", str(e))


class RulesTestMixin:
    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.path = os.path.join(self.directory, "pmilter.rules")
        self.write(RULES)
        self.sink = MemorySink()
        self.rules = Rules()
        self.host = PolicyMilterHost(
            [self.rules],
            Clock(),
            5,
            log=Logger("smtps", level=20, sink=self.sink),
            options={"rules": {"file": self.path}},
        )
        self.host.startService()

    def write(self, text):
        with open(self.path, "w") as f:
            f.write(text)

    def drive(self, steps, client="192.0.2.7", name="client.example.com"):
        driver = FakeSMTPSession(self.host, "S1", client, name)
        self.successResultOf(driver.run(steps))
        return driver.codes()


class RulesPmilterTests(RulesTestMixin, SynchronousTestCase):
    """
    The pmilter through a host, as SMTPS runs it.
    """

    def test_connect(self):
        """
        A rule on the client is decided at connect.
        """
        codes = self.drive([("connect", ())], name="mx.spammer.example")
        self.assertEqual(codes, [("connect", 550)])
        self.assertIn(
            "rule=%s:4, action=reject, stage=connect" % (self.path,),
            "\n".join(self.sink.lines()),
        )

    def test_mail(self):
        """
        A rule on the sender is decided at MAIL.
        """
        codes = self.drive(
            [("connect", ()), ("helo", ()), ("mail", "x@SPAMMER.example")]
        )
        self.assertEqual(codes[-1], ("MAIL", 550))

    def test_andNot(self):
        """
        C{helo /^localhost$/ and not connect // /^127\\./}: tempfail from
        others, not from loopback.
        """
        self.assertEqual(
            self.drive([("connect", ()), ("helo", "localhost")])[-1], ("EHLO", 451)
        )
        self.assertEqual(
            self.drive([("connect", ()), ("helo", "localhost")], client="127.0.0.1")[
                -1
            ],
            ("EHLO", 250),
        )

    def test_rcpt(self):
        """
        At RCPT a rule looks at that recipient: discard the trap, keep
        the next.
        """
        driver = FakeSMTPSession(self.host)
        self.successResultOf(
            driver.run(
                [
                    ("connect", ()),
                    ("mail", "a@example.com"),
                    ("rcpt", "spamtrap@example.org"),
                    ("rcpt", "b@example.org"),
                ]
            )
        )
        self.assertTrue(driver.transcript[2][2].discard)
        self.assertFalse(driver.transcript[3][2].discard)

    def test_accept(self):
        """
        An accept ends the evaluation for the transaction: a later rule
        that would reject does not.
        """
        codes = self.drive(
            [
                ("connect", ()),
                ("mail", ""),
                ("rcpt", "postmaster@example.org"),
                ("data", ()),
                ("content", b"Subject: viagra\r\n\r\nx\r\n"),
            ]
        )
        self.assertEqual(codes[2:], [("RCPT", 250), ("DATA", 354), ("DOT", 250)])

    def test_header(self):
        """
        A rule on a header field decides the final dot.
        """
        codes = self.drive(
            [
                ("connect", ()),
                ("mail", "a@example.com"),
                ("rcpt", "b@example.org"),
                ("data", ()),
                ("content", b"From: x\r\nSubject: Cheap VIAGRA\r\n\r\nhi\r\n"),
            ]
        )
        self.assertEqual(codes[-1], ("DOT", 550))

    def test_bodyNotHeader(self):
        """
        C{body /click here/i and not header /^X-Trusted$/ //}: the body
        rule waits for the end of the header.
        """
        steps = [
            ("connect", ()),
            ("mail", "a@example.com"),
            ("rcpt", "b@example.org"),
            ("data", ()),
        ]
        self.assertEqual(
            self.drive(steps + [("content", b"S: x\r\n\r\nplease CLICK HERE\r\n")])[-1],
            ("DOT", 550),
        )
        self.assertEqual(
            self.drive(
                steps + [("content", b"X-Trusted: yes\r\n\r\nplease click here\r\n")]
            )[-1],
            ("DOT", 250),
        )

    def test_rcptAndHeader(self):
        """
        After DATA, C{rcpt} terms look at every accepted recipient.
        """
        steps = [
            ("connect", ()),
            ("mail", "a@example.com"),
            ("rcpt", "b@example.org"),
            ("rcpt", "sales@example.org"),
            ("data", ()),
            ("content", b"Subject: special offer\r\n\r\nx\r\n"),
        ]
        self.assertEqual(self.drive(steps)[-1], ("DOT", 550))
        steps[3] = ("rcpt", "c@example.org")
        self.assertEqual(self.drive(steps)[-1], ("DOT", 250))

    def test_aliasRegex(self):
        """
        The plugin answers to the name regex too.
        """
        self.assertIn("regex", Rules.aliases)


class ReloadTests(RulesTestMixin, SynchronousTestCase):
    """
    C{reload()} (SIGUSR1) reads the file again.
    """

    def test_reload(self):
        """
        New rules take effect at reload, not before.
        """
        self.write('reject "550 5.7.1 no example"\n  helo /example/\n')
        steps = [("connect", ()), ("helo", "h.example")]
        self.assertEqual(self.drive(steps)[-1], ("EHLO", 250))
        self.host.reload()
        self.assertEqual(self.drive(steps)[-1], ("EHLO", 550))
        self.assertIn(
            "file=%s, reloaded=1" % (self.path,), "\n".join(self.sink.lines())
        )

    def test_reloadMistake(self):
        """
        A file with a mistake is reported with file:line and the rules in
        force stay.
        """
        self.write("reject\n  helo /(/\n")
        self.host.reload()
        [line] = [l for l in self.sink.lines() if l.startswith("sev=")]
        self.assertIn("sev=ERR, func=Rules.reload, pmilter=rules", line)
        self.assertIn("pmilter.rules:2:8", line)
        codes = self.drive([("connect", ()), ("helo", "localhost")])
        self.assertEqual(codes[-1], ("EHLO", 451))

    def test_reloadNewStage(self):
        """
        Header rules added by a reload when none were in force: a warning
        that they need a new negotiation.
        """
        self.write("reject\n  helo /x/\n")
        rules = Rules()
        host = PolicyMilterHost(
            [rules],
            Clock(),
            5,
            log=Logger("smtps", level=20, sink=self.sink),
            options={"rules": {"file": self.path}},
        )
        host.startService()
        self.write("reject\n  header /a/ /b/\n")
        host.reload()
        self.assertIn("sev=WARN, func=Rules.reload", self.sink.lines()[-1])

    def test_badFileAtStart(self):
        """
        A rules file with a mistake at negotiation: the pmilter is down,
        with the file's line in the log, and SMTPS's failure policy
        applies.
        """
        self.write("tempfail\n  hello /x/\n")
        host = PolicyMilterHost(
            [Rules()],
            Clock(),
            5,
            log=Logger("smtps", level=20, sink=self.sink),
            options={"rules": {"file": self.path}},
        )
        host.startService()
        [line] = [l for l in self.sink.lines() if l.startswith("sev=")]
        self.assertIn("pmilter.rules:2:3: expected a term", line)
        self.assertEqual(host.describe()[0]["state"], "down")

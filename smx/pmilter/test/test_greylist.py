# -*- test-case-name: smx.pmilter.test.test_greylist -*-
"""
Tests for the greylist pmilter (L{smx.pmilter.greylist}), its Berkeley DB
file (L{smx.pmilter.greylistdb}, real files) and C{smx greylist}
(L{smx.scripts.greylist}).
"""

import io
import json
import os

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from smx.log import Logger, MemorySink
from smx.pmilter.greylist import Greylist
from smx.pmilter.greylistdb import (
    GreylistDatabase,
    Policy,
    Triplet,
    clientNetwork,
    parseEntry,
)
from smx.pmilter.host import PolicyMilterHost
from smx.pmilter.settings import settingsOf, tableDefaults
from smx.pmilter.testing import FakeSMTPSession
from smx.scripts import greylist as script

POLICY = Policy(delay=300, retryWindow=2 * 86400, lifetime=35 * 86400)
T = Triplet("192.0.2.0/24", "a@example.com", "b@example.org")


class DatabaseTests(SynchronousTestCase):
    """
    L{GreylistDatabase} on a real Berkeley DB file.
    """

    def setUp(self):
        self.path = os.path.join(self.mktemp(), "greylist.db")
        self.db = GreylistDatabase(self.path)

    def test_cycle(self):
        """
        New, early retry, retry after the delay, known afterwards.
        """
        v = self.db.check(T, 1000, POLICY)
        self.assertEqual((v.state, v.wait), ("new", 300))
        self.assertTrue(v.refused)
        v = self.db.check(T, 1100, POLICY)
        self.assertEqual((v.state, v.wait), ("early", 200))
        v = self.db.check(T, 1300, POLICY)
        self.assertEqual(v.state, "passed")
        self.assertFalse(v.refused)
        self.assertEqual(self.db.check(T, 5000, POLICY).state, "known")

    def test_survivesReopen(self):
        """
        The file keeps the triplets: another instance (a restart) knows
        them.
        """
        self.db.check(T, 1000, POLICY)
        self.db.check(T, 1300, POLICY)
        again = GreylistDatabase(self.path)
        self.assertEqual(again.check(T, 2000, POLICY).state, "known")
        [(kind, fields, record)] = again.entries()
        self.assertEqual(fields, tuple(T))
        self.assertEqual((record.first, record.last, record.count), (1000, 2000, 3))
        self.assertTrue(record.passed)

    def test_expiry(self):
        """
        A refused triplet not retried within the retry window starts
        again; one that passed is forgotten after its lifetime since last
        seen; expire removes them.
        """
        self.db.check(T, 0, POLICY)
        self.assertEqual(self.db.check(T, POLICY.retryWindow + 1, POLICY).state, "new")
        other = Triplet("198.51.100.0/24", "", "b@example.org")
        self.db.check(other, 0, POLICY)
        self.db.check(other, 400, POLICY)
        later = 400 + POLICY.lifetime + 1
        self.assertEqual(self.db.expire(later, POLICY), 2)
        self.assertEqual(self.db.entries(), [])
        self.assertEqual(self.db.check(other, later, POLICY).state, "new")

    def test_noDelay(self):
        """
        C{delay = 0} lets everything pass (and remembers it).
        """
        v = self.db.check(T, 0, Policy(0, 10, 10))
        self.assertEqual(v.state, "passed")

    def test_whitelist(self):
        """
        Client networks, senders and recipients (addresses, @domain,
        @.parent) can be whitelisted.
        """
        self.db.whitelist("192.0.2.128/25")
        self.assertEqual(
            self.db.check(T, 0, POLICY, "192.0.2.200").state, "whitelisted"
        )
        self.assertEqual(self.db.check(T, 0, POLICY, "192.0.2.1").state, "new")
        self.db.whitelist("from:@.example.com")
        t = Triplet("198.51.100.0/24", "x@mail.example.com", "c@example.org")
        self.assertEqual(self.db.check(t, 0, POLICY).state, "whitelisted")
        self.db.whitelist("to:Postmaster@Example.ORG")
        t = Triplet("198.51.100.0/24", "x@other.test", "postmaster@example.org")
        self.assertEqual(self.db.check(t, 0, POLICY).state, "whitelisted")
        self.db.whitelist("2001:db8::/32")
        self.assertEqual(
            self.db.check(T, 0, POLICY, "2001:db8:1::5").state, "whitelisted"
        )
        self.assertEqual(
            [e[1] for e in self.db.entries() if e[0] == "whitelist"],
            [
                ("cltaddr", "192.0.2.128/25"),
                ("cltaddr", "2001:db8::/32"),
                ("from", "@.example.com"),
                ("to", "postmaster@example.org"),
            ],
        )
        self.assertEqual(self.db.remove("from:@.example.com"), 1)
        self.assertEqual(self.db.remove("from:@.example.com"), 0)

    def test_entries(self):
        """
        Whitelist entries are understood in their forms; nonsense is a
        ValueError that says why.
        """
        self.assertEqual(parseEntry("10.1.2.3/8"), ("cltaddr", "10.0.0.0/8"))
        self.assertEqual(parseEntry("<A@B.example>"), ("from", "a@b.example"))
        self.assertEqual(parseEntry("to:@example.org"), ("to", "@example.org"))
        for bad in ("nonsense", "cltaddr:300.1.1.1", "from:", "to:a b@c"):
            self.assertRaises(ValueError, parseEntry, bad)

    def test_remove(self):
        """
        Triplets are removed by network, sender and recipient, C{*} for
        any, C{<>} for the null sender.
        """
        self.db.check(T, 0, POLICY)
        self.db.check(Triplet("192.0.2.0/24", "", "c@example.org"), 0, POLICY)
        self.db.check(Triplet("198.51.100.0/24", "", "c@example.org"), 0, POLICY)
        self.assertEqual(self.db.remove("192.0.2.7", "<>", "*"), 1)
        self.assertEqual(self.db.remove("*", "*", "<C@example.org>"), 1)
        self.assertEqual(self.db.entries()[0][1], tuple(T))
        self.assertRaises(ValueError, self.db.remove, "a", "b")

    def test_readMissing(self):
        """
        Listing a database that does not exist yet is empty, and does not
        create it.
        """
        self.assertEqual(self.db.entries(), [])
        self.assertFalse(os.path.exists(self.path))

    def test_networks(self):
        """
        The client network is the /24 or the /64; a mapped IPv4 address
        is IPv4.
        """
        self.assertEqual(clientNetwork("192.0.2.77"), "192.0.2.0/24")
        self.assertEqual(clientNetwork("2001:db8:1:2:3::4"), "2001:db8:1:2::/64")
        self.assertEqual(clientNetwork("::ffff:192.0.2.1"), "192.0.2.0/24")
        self.assertEqual(clientNetwork("192.0.2.77", 16), "192.0.0.0/16")


class GreylistPmilterTests(SynchronousTestCase):
    """
    The pmilter through a host, as SMTPS runs it.
    """

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.sink = MemorySink()
        self.path = os.path.join(self.mktemp(), "gl.db")
        options = dict(tableDefaults("greylist"), database=self.path, delay=60)
        self.host = PolicyMilterHost(
            [Greylist()],
            self.clock,
            5,
            log=Logger("smtps", level=20, sink=self.sink),
            options={"greylist": options},
        )
        self.host.startService()

    def session(self, client="192.0.2.7", rcpt="b@example.org", sessionId="S1"):
        driver = FakeSMTPSession(self.host, sessionId, client)
        self.successResultOf(
            driver.run([("connect", ()), ("mail", "a@example.com"), ("rcpt", rcpt)])
        )
        return driver.transcript[-1]

    def test_greylisting(self):
        """
        First attempt 451 4.7.1 with the time to wait; too early again
        451; after the delay accepted, and then at once, also from
        another host of the /24.
        """
        command, code, decision = self.session()
        self.assertEqual(code, 451)
        self.assertEqual(decision.enhanced, "4.7.1")
        self.assertIn("try again in 60 seconds", decision.text)
        self.clock.advance(30)
        command, code, decision = self.session()
        self.assertEqual(code, 451)
        self.assertIn("30 seconds", decision.text)
        self.clock.advance(30)
        self.assertEqual(self.session()[1], 250)
        self.assertEqual(self.session(client="192.0.2.99")[1], 250)
        self.assertEqual(self.session(client="198.51.100.1")[1], 451)
        self.assertIn("greylist=passed", "\n".join(self.sink.lines()))

    def test_loopback(self):
        """
        Loopback clients are never greylisted.
        """
        self.assertEqual(self.session(client="127.0.0.1")[1], 250)
        self.assertEqual(GreylistDatabase(self.path).entries(), [])

    def test_databaseFails(self):
        """
        A database that cannot be written is a failure of the pmilter:
        the failure policy and one log record.
        """
        os.makedirs(os.path.dirname(self.path))
        os.makedirs(self.path)  # a directory where the file should be
        command, code, decision = self.session()
        self.assertEqual((code, decision.enhanced), (451, "4.3.0"))
        errors = [l for l in self.sink.lines() if l.startswith("sev=")]
        self.assertEqual(len(errors), 1)
        self.assertIn("pmilter=greylist", errors[0])
        self.flushLoggedErrors()

    def test_expires(self):
        """
        Once an hour the expired triplets are removed.
        """
        self.session()
        self.clock.advance(3 * 86400)
        self.session(rcpt="c@example.org", sessionId="S2")
        fields = [e[1] for e in GreylistDatabase(self.path).entries()]
        self.assertEqual(fields, [("192.0.2.0/24", "a@example.com", "c@example.org")])

    def test_defaults(self):
        """
        Without settings the option table's defaults apply.
        """

        class Server:
            options = {}

        settings = settingsOf(Server(), "greylist")
        self.assertEqual(settings["delay"], 300)
        self.assertEqual(settings["ipv6_prefix"], 64)
        self.assertRaises(KeyError, tableDefaults, "nosuch")


class ScriptTests(SynchronousTestCase):
    """
    C{smx greylist}.
    """

    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.conf = os.path.join(self.directory, "smx.conf")
        with open(self.conf, "w") as f:
            f.write("smtps { pmilter { greylist { database = g/gl.db; } } }\n")
        self.path = os.path.join(self.directory, "g", "gl.db")

    def run_(self, *argv, now=1_000_000):
        out, err = io.StringIO(), io.StringIO()
        code = script.run(["-f", self.conf] + list(argv), out, err, now=now)
        return code, out.getvalue(), err.getvalue()

    def test_list(self):
        """
        C{list} shows the triplets with their state and the whitelist;
        C{--json} the same as JSON.
        """
        db = GreylistDatabase(self.path)
        db.check(T, 999_000, POLICY)
        db.check(Triplet("198.51.100.0/24", "", "c@example.org"), 100, POLICY)
        db.whitelist("10.0.0.0/8")
        code, out, err = self.run_("list")
        self.assertEqual((code, err), (0, ""))
        lines = out.splitlines()
        self.assertTrue(lines[0].startswith("pending  192.0.2.0/24 "), lines[0])
        self.assertIn("count=1", lines[0])
        self.assertIn("first=1970-01-12T13:30:00Z", lines[0])
        self.assertTrue(lines[1].startswith("expired  198.51.100.0/24      <> <c@"))
        self.assertEqual(lines[2], "whitelist cltaddr:10.0.0.0/8")
        code, out, err = self.run_("list", "--json")
        data = json.loads(out)
        self.assertEqual(data[0]["sender"], "a@example.com")
        self.assertEqual(data[1]["state"], "expired")
        self.assertEqual(data[2], {"whitelist": "cltaddr:10.0.0.0/8"})

    def test_whitelistRemoveExpire(self):
        """
        C{whitelist}, C{remove} and C{expire} change the file.
        """
        code, out, _ = self.run_("whitelist", "from:@example.com", "192.0.2.1")
        self.assertEqual(code, 0)
        self.assertEqual(
            out, "whitelisted from:@example.com\nwhitelisted cltaddr:192.0.2.1/32\n"
        )
        self.assertEqual(
            GreylistDatabase(self.path).check(T, 0, POLICY).state, "whitelisted"
        )
        self.assertEqual(self.run_("remove", "from:@example.com")[1], "removed 1\n")
        GreylistDatabase(self.path).check(T, 0, POLICY)
        self.assertEqual(self.run_("remove", "192.0.2.9", "*", "*")[1], "removed 1\n")
        GreylistDatabase(self.path).check(T, 0, POLICY)
        self.assertEqual(self.run_("expire")[1], "expired 1\n")
        self.assertEqual(len(GreylistDatabase(self.path).entries()), 1)

    def test_mistakes(self):
        """
        Bad entries and arguments are one line and status 2, no
        traceback; a bad configuration too.
        """
        code, out, err = self.run_("whitelist", "nonsense")
        self.assertEqual(code, 2)
        self.assertIn("smx greylist: 'nonsense' is not", err)
        code, out, err = self.run_("remove", "a", "b")
        self.assertEqual(code, 2)
        code, out, err = self.run_("list", "extra")
        self.assertEqual(code, 2)
        with open(self.conf, "w") as f:
            f.write("smtps { pmilter { greylist { delay = soon; } } }\n")
        code, out, err = self.run_("list")
        self.assertEqual(code, 2)
        self.assertIn("smx.conf:1", err)

    def test_databaseOption(self):
        """
        C{--database} names the file directly; one that cannot be opened
        is status 1 with its name.
        """
        other = os.path.join(self.directory, "other.db")
        self.assertEqual(self.run_("--database", other, "whitelist", "10.0.0.1")[0], 0)
        self.assertTrue(os.path.exists(other))
        code, out, err = self.run_(
            "--database", self.directory, "whitelist", "10.0.0.1"
        )
        self.assertEqual(code, 1)
        self.assertIn(self.directory, err)

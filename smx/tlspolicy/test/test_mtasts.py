# -*- test-case-name: smx.tlspolicy.test.test_mtasts -*-
"""
Tests of L{smx.tlspolicy.mtasts}: the TXT record, the policy, MX
patterns and the cache file.
"""

from __future__ import annotations

import json
import os

from twisted.trial.unittest import SynchronousTestCase

from smx.log import Logger, MemorySink
from smx.tlspolicy.mtasts import (
    MAX_AGE_LIMIT,
    CachedPolicy,
    MailertableRelays,
    MTASTSSettings,
    PolicyCache,
    PolicyFetcher,
    STSError,
    mtastsSourceFromConfiguration,
    mxMatches,
    parsePolicy,
    parseRecord,
)

POLICY = "version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: 600\n"


class RecordTests(SynchronousTestCase):
    """
    L{parseRecord}: the C{_mta-sts} TXT record (RFC 8461 §3.1).
    """

    def test_id(self):
        """
        The C{id} of the one C{v=STSv1} record.
        """
        self.assertEqual(
            parseRecord(["v=STSv1; id=20160831085700Z;"]), "20160831085700Z"
        )
        self.assertEqual(parseRecord(["v=STSv1;id=abc"]), "abc")
        self.assertEqual(parseRecord(["v=STSv1 ; id=abc ; ext=1"]), "abc")

    def test_otherRecordsIgnored(self):
        """
        TXT records that do not start with C{v=STSv1} do not count.
        """
        self.assertEqual(
            parseRecord(["v=spf1 -all", "v=STSv1; id=1", "v=STSv10; id=2"]), "1"
        )
        self.assertIsNone(parseRecord(["v=spf1 -all"]))
        self.assertIsNone(parseRecord([]))

    def test_several(self):
        """
        Two C{v=STSv1} records: no usable record.
        """
        self.assertRaises(STSError, parseRecord, ["v=STSv1; id=1", "v=STSv1; id=2"])

    def test_bad(self):
        """
        A record without id, with a bad id or a bad field is refused.
        """
        for text in [
            "v=STSv1",
            "v=STSv1;",
            "v=STSv1; id=",
            "v=STSv1; id=a-b",
            "v=STSv1; id=" + "a" * 33,
            "v=STSv1; junk",
            "v=STSv1; id=1; x=a=b",
        ]:
            self.assertRaises(STSError, parseRecord, [text])


class PolicyTests(SynchronousTestCase):
    """
    L{parsePolicy}: the policy body (RFC 8461 §3.2).
    """

    def test_enforce(self):
        """
        The fields of an enforce policy, with CRLF line ends.
        """
        policy = parsePolicy(
            "version: STSv1\r\nmode: enforce\r\nmx: MX1.Example.com.\r\n"
            "mx: *.example.net\r\nmax_age: 86400\r\n"
        )
        self.assertEqual(policy.mode, "enforce")
        self.assertEqual(policy.mx, ("mx1.example.com", "*.example.net"))
        self.assertEqual(policy.maxAge, 86400)
        self.assertEqual(
            policy.lines(),
            [
                "version: STSv1",
                "mode: enforce",
                "mx: MX1.Example.com.",
                "mx: *.example.net",
                "max_age: 86400",
            ],
        )

    def test_firstWinsUnknownIgnored(self):
        """
        Unknown fields are ignored; of a field other than C{mx} given
        twice the first counts.
        """
        policy = parsePolicy(POLICY + "mode: none\nfoo: bar\nmax_age: 1\n")
        self.assertEqual((policy.mode, policy.maxAge), ("enforce", 600))

    def test_maxAgeLimit(self):
        """
        C{max_age} above 31557600 is taken as 31557600.
        """
        policy = parsePolicy(POLICY.replace("600", "9999999999"))
        self.assertEqual(policy.maxAge, MAX_AGE_LIMIT)

    def test_noneWithoutMX(self):
        """
        C{mode: none} needs no C{mx}.
        """
        policy = parsePolicy("version: STSv1\nmode: none\nmax_age: 5\n")
        self.assertEqual((policy.mode, policy.mx), ("none", ()))

    def test_bad(self):
        """
        A wrong version or mode, a missing or non-numeric C{max_age}, no
        C{mx} in enforce mode, a bad pattern or a line that is not
        C{key: value} make the policy invalid.
        """
        for text in [
            POLICY.replace("STSv1", "STSv2"),
            POLICY.replace("version: STSv1\n", ""),
            POLICY.replace("enforce", "Enforce"),
            POLICY.replace("max_age: 600\n", ""),
            POLICY.replace("600", "-1"),
            POLICY.replace("600", "6OO"),
            POLICY.replace("600", "١٢"),
            POLICY.replace("mx: mx.example.com\n", ""),
            POLICY.replace("mx.example.com", "*.*.example.com"),
            POLICY.replace("mx.example.com", "com"),
            POLICY.replace("mx.example.com", "mx_1.example.com"),
            POLICY + "garbage\n",
            "<html>" + POLICY,
        ]:
            self.assertRaises(STSError, parsePolicy, text)


class MXMatchTests(SynchronousTestCase):
    """
    L{mxMatches} (RFC 8461 §4.1).
    """

    def test_exact(self):
        """
        A name matches itself, whatever the case or a final dot.
        """
        self.assertTrue(mxMatches("mail.example.com", "MAIL.example.com."))
        self.assertFalse(mxMatches("mail.example.com", "mail2.example.com"))
        self.assertFalse(mxMatches("mail.example.com", "x.mail.example.com"))

    def test_wildcard(self):
        """
        C{*.example.com} matches one label, any, below C{example.com}.
        """
        self.assertTrue(mxMatches("*.example.com", "mx1.example.com"))
        self.assertFalse(mxMatches("*.example.com", "example.com"))
        self.assertFalse(mxMatches("*.example.com", "a.b.example.com"))
        self.assertFalse(mxMatches("*.example.com", "mx1.example.net"))
        self.assertFalse(mxMatches("*.example.com", ".example.com"))


class CacheTests(SynchronousTestCase):
    """
    L{PolicyCache}: the cache file.
    """

    def setUp(self):
        self.dir = self.mktemp()
        os.mkdir(self.dir)
        self.path = os.path.join(self.dir, "mta-sts.json")
        self.sink = MemorySink()
        self.log = Logger("smtpc", 14, self.sink)

    def test_roundTrip(self):
        """
        A policy put into the cache is in the file, and a new cache reads
        it back; no temporary file is left.
        """
        cache = PolicyCache(self.path, self.log)
        entry = CachedPolicy("id1", 1000.0, parsePolicy(POLICY))
        cache.put("example.com", entry, 1000.0)
        self.assertEqual(PolicyCache(self.path, self.log).get("example.com"), entry)
        self.assertEqual(os.listdir(self.dir), ["mta-sts.json"])

    def test_expiredDropped(self):
        """
        Expired entries are dropped when the file is written.
        """
        cache = PolicyCache(self.path, self.log)
        cache.put("a.test", CachedPolicy("1", 0.0, parsePolicy(POLICY)), 0.0)
        cache.put("b.test", CachedPolicy("1", 700.0, parsePolicy(POLICY)), 700.0)
        self.assertEqual(set(PolicyCache(self.path, self.log).policies), {"b.test"})

    def test_badFile(self):
        """
        A file that is not a cache is reported (C{sev=ERR}) and ignored;
        a bad entry is reported and the others kept.
        """
        with open(self.path, "w") as f:
            f.write("{not json")
        self.assertEqual(PolicyCache(self.path, self.log).policies, {})
        self.assertIn("sev=ERR, func=PolicyCache", self.sink.lines()[0])
        good = CachedPolicy("1", 5.0, parsePolicy(POLICY)).toPlain()
        with open(self.path, "w") as f:
            json.dump({"policies": {"a.test": good, "b.test": {"id": "!"}}}, f)
        self.assertEqual(set(PolicyCache(self.path, self.log).policies), {"a.test"})
        self.assertIn("domain=b.test", self.sink.lines()[-1])

    def test_unwritable(self):
        """
        A cache file that cannot be written is reported; the policy is
        kept in memory.
        """
        cache = PolicyCache(os.path.join(self.dir, "missing", "x.json"), self.log)
        entry = CachedPolicy("1", 5.0, parsePolicy(POLICY))
        cache.put("a.test", entry, 5.0)
        self.assertEqual(cache.get("a.test"), entry)
        self.assertIn("sev=ERR, func=PolicyCache", self.sink.lines()[0])

    def test_twoWriters(self):
        """
        Two caches of one file (two smtpc sections, two SMTPC processes)
        keep each other's policies; of two entries of a domain the one
        fetched last wins.
        """
        one = PolicyCache(self.path, self.log)
        two = PolicyCache(self.path, self.log)
        one.put("a.test", CachedPolicy("1", 10.0, parsePolicy(POLICY)), 10.0)
        two.put("b.test", CachedPolicy("1", 20.0, parsePolicy(POLICY)), 20.0)
        one.put("c.test", CachedPolicy("1", 30.0, parsePolicy(POLICY)), 30.0)
        self.assertEqual(
            set(PolicyCache(self.path, self.log).policies),
            {"a.test", "b.test", "c.test"},
        )
        two.put("a.test", CachedPolicy("2", 40.0, parsePolicy(POLICY)), 40.0)
        one.put("d.test", CachedPolicy("1", 50.0, parsePolicy(POLICY)), 50.0)
        self.assertEqual(PolicyCache(self.path, self.log).get("a.test").id, "2")


class SettingsTests(SynchronousTestCase):
    """
    L{MTASTSSettings} from the C{smtpc} section, and the policy URL.
    """

    def test_defaults(self):
        """
        By default MTA-STS is on, cached in C{mta-sts.json} of the queue
        directory, fetched within 30 seconds from port 443 with the
        system's CAs.
        """
        from smx.config import defaultConfiguration

        cfg = defaultConfiguration(queueDirectory="/var/spool/smx")
        self.assertEqual(
            MTASTSSettings.fromSection(cfg.section("smtpc")),
            MTASTSSettings(
                True,
                "/var/spool/smx/mta-sts.json",
                30.0,
                None,
                None,
                443,
                cfg.section("smar").section("mailertable")["name"],
            ),
        )

    def test_options(self):
        """
        The options and the CA file of C{tls} are read.
        """
        from smx.config import loadConfiguration

        d = os.path.abspath(self.mktemp())
        os.mkdir(d)
        with open(os.path.join(d, "smx.conf"), "w") as f:
            f.write(
                'smar { mailertable { name = "mt"; } }\n'
                "smtpc { mta_sts = no; mta_sts_cache = /var/lib/sts.json;\n"
                "  mta_sts_timeout = 1m; mta_sts_port = 8443;\n"
                '  tls { CAcert_file = "ca.pem"; } }\n'
            )
        cfg = loadConfiguration(os.path.join(d, "smx.conf"), queueDirectory=d)
        self.assertEqual(
            MTASTSSettings.fromSection(cfg.section("smtpc")),
            MTASTSSettings(
                False,
                "/var/lib/sts.json",
                60.0,
                os.path.join(d, "ca.pem"),
                None,
                8443,
                os.path.join(d, "mt"),
            ),
        )

    def test_url(self):
        """
        The policy URL names the port only when it is not 443.
        """
        from twisted.internet.task import Clock

        fetcher = PolicyFetcher(Clock(), None, None, 5.0)
        self.assertEqual(
            fetcher.url("example.com"),
            "https://mta-sts.example.com/.well-known/mta-sts.txt",
        )
        fetcher = PolicyFetcher(Clock(), None, None, 5.0, 8443)
        self.assertEqual(
            fetcher.url("example.com"),
            "https://mta-sts.example.com:8443/.well-known/mta-sts.txt",
        )


class MailertableRelaysTests(SynchronousTestCase):
    """
    L{MailertableRelays}: the domains the mailertable relays.
    """

    def setUp(self):
        self.path = os.path.abspath(self.mktemp())
        self.sink = MemorySink()
        self.relays = MailertableRelays(self.path, Logger("smtpc", 14, self.sink))

    def write(self, text):
        with open(self.path, "w") as f:
            f.write(text)
        st = os.stat(self.path)
        # a new stamp even within the file system's time resolution
        os.utime(self.path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))

    def test_entries(self):
        """
        A domain whose entry names hosts is relayed (names or literals,
        by the domain lookup order); one whose entry has no hosts (its
        own MX) or no entry at all is not.
        """
        self.write(
            "relayed.test esmtp:relay.example.net\n"
            ".sub.test esmtp:[192.0.2.1]\n"
            "viamx.test esmtp:\n"
            "localhost lmtp:\n"
        )
        self.assertTrue(self.relays("relayed.test"))
        self.assertTrue(self.relays("a.sub.test"))
        self.assertFalse(self.relays("viamx.test"))
        self.assertFalse(self.relays("other.test"))

    def test_smartHost(self):
        """
        C{. esmtp:smarthost}: every domain is relayed; the file is read
        again when it changes.
        """
        self.write("localhost lmtp:\n")
        self.assertFalse(self.relays("gmail.test"))
        self.write(". esmtp:smarthost.example.net\n")
        self.assertTrue(self.relays("gmail.test"))

    def test_bad(self):
        """
        A mailertable that cannot be read keeps the old one (none at
        first: nothing is relayed) and is reported.
        """
        self.assertFalse(self.relays("a.test"))
        self.write(". esmtp:smarthost.example.net\n")
        self.assertTrue(self.relays("a.test"))
        self.write("a.test foo:bar\n")
        self.assertTrue(self.relays("a.test"))
        self.assertIn("func=MailertableRelays", "\n".join(self.sink.lines()))


class FromConfigurationTests(SynchronousTestCase):
    """
    L{mtastsSourceFromConfiguration}, as SMTPC calls it.
    """

    def test_source(self):
        """
        With C{mta_sts = yes} (the default), a source that uses the
        resolver it is given, the C{mta_sts_cache} file and the
        mailertable of C{smar}.
        """
        from twisted.internet.task import Clock

        from smx.config import defaultConfiguration

        cfg = defaultConfiguration(queueDirectory=os.path.abspath(self.mktemp()))
        dns = object()
        source = mtastsSourceFromConfiguration(cfg, Clock(), dns=dns)
        self.assertIs(source.dns, dns)
        self.assertEqual(source.cache.path, cfg.section("smtpc")["mta_sts_cache"])
        self.assertEqual(
            source.relayed.path, cfg.section("smar").section("mailertable")["name"]
        )

    def test_ownResolver(self):
        """
        Without a resolver, one of its own with SMAR's name servers.
        """
        from twisted.internet.task import Clock

        from smx.config import loadConfiguration
        from smx.maps.dns import DNSResolver

        d = os.path.abspath(self.mktemp())
        os.mkdir(d)
        with open(os.path.join(d, "smx.conf"), "w") as f:
            f.write('smar { nameserver = { "127.0.0.1:5353" }; }\n')
        cfg = loadConfiguration(os.path.join(d, "smx.conf"), queueDirectory=d)
        source = mtastsSourceFromConfiguration(cfg, Clock())
        self.assertIsInstance(source.dns, DNSResolver)
        self.assertEqual(source.dns.servers, [("127.0.0.1", 5353)])

    def test_disabled(self):
        """
        C{mta_sts = no}: no source.
        """
        from twisted.internet.task import Clock

        from smx.config import loadConfiguration

        d = os.path.abspath(self.mktemp())
        os.mkdir(d)
        with open(os.path.join(d, "smx.conf"), "w") as f:
            f.write("smtpc { mta_sts = no; }\n")
        cfg = loadConfiguration(os.path.join(d, "smx.conf"), queueDirectory=d)
        self.assertIsNone(mtastsSourceFromConfiguration(cfg, Clock(), dns=object()))

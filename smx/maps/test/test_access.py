# -*- test-case-name: smx.maps.test.test_access -*-
"""
Tests of access-map values (L{smx.maps.access}) and of the access
decisions of L{smx.maps.resolver.AddressResolver} with the seed's own
examples (§5.8.2, §5.8.3, §6.4, §6.5), using in-memory maps and DNS.
"""

import os

from twisted.trial import unittest

from smx.log import Logger, MemorySink
from smx.maps.access import AccessMap, encodeDN, parseAccessValue
from smx.maps.createmap import createMap
from smx.maps.hashmap import HashMap
from smx.maps.mailertable import Mailertable
from smx.maps.resolver import AddressResolver
from smx.maps.testing import DictMap, FakeDNSResolver, defaultResolverSettings

DELIMITER = defaultResolverSettings().delimiter


def accessEntries(text):
    """
    Parse C{key value} lines into a dict with lower-case keys.
    """
    out = {}
    for line in text.strip().splitlines():
        key, value = line.split(None, 1)
        out[key.lower()] = value.strip()
    return out


SEED_ACCESS = accessEntries("""
cltresolve:tempptr      error:451 4.7.1 reverse lookup failed
mxbadip:127.0.0.1     error:551 5.7.1 Bad IP address 127.0.0.1 in MX/A list
mxbadip:192.168.255.255 error:551 5.7.1 Bad IP address 192.168.255.255 in MX/A list
from:@spammer.domain  error:551 5.7.1 No spammers
from:@.spammer.domain error:551 5.7.1 No spammers in subdomains either
to:root               error:551 5.7.1 No mail to root
to:abuse              quick:ok
cltaddr:10            error:551 5.7.1 No direct mail from 10.x.y.z
cltname:spammer.domain quick:error:551 5.7.1 No mail from spammers
to:@primary.domain    relay
cltaddr:127.0.0.1     quick:relay
""")


def makeResolver(entries, mt="", dns=None, accessMap=None, **kw):
    """
    SMAR with the default settings (the host named C{localhost}), the
    access map C{entries} and the mailertable C{mt}.

    @param kw: maps (C{aliases}, C{localUserMap}).
    """
    sink = MemorySink()
    r = AddressResolver(
        None,
        defaultResolverSettings(hostname="localhost"),
        Mailertable.fromText(mt),
        access=accessMap or DictMap("access", entries),
        dns=dns,
        log=Logger("smar", sink=sink),
        **kw,
    )
    r.sink = sink
    return r


class ValueTests(unittest.TestCase):
    """
    Right-hand sides of the access map.
    """

    def test_values(self):
        """
        Every right-hand side of seed §5.8.3 becomes its decision.
        """
        self.assertEqual(parseAccessValue("relay")["action"], "relay")
        self.assertEqual(parseAccessValue("OK")["action"], "ok")
        self.assertEqual(parseAccessValue("discard")["action"], "discard")
        self.assertEqual(parseAccessValue("cont")["action"], "cont")
        r = parseAccessValue("reject")
        self.assertEqual(
            (r["action"], r["reply"]["code"], r["reply"]["dsn"]),
            ("reject", 550, "5.7.0"),
        )
        e = parseAccessValue("quick:error:551 5.7.1 No mail from spammers")
        self.assertEqual(
            e,
            {
                "action": "error",
                "quick": True,
                "reply": {"code": 551, "dsn": "5.7.1", "text": "No mail from spammers"},
            },
        )
        self.assertTrue(parseAccessValue("quick:relay")["quick"])
        self.assertFalse(parseAccessValue("relay")["quick"])

    def test_bad(self):
        """
        Unknown words and non-4xx/5xx codes are refused.
        """
        self.assertRaises(ValueError, parseAccessValue, "accept")
        self.assertRaises(ValueError, parseAccessValue, "error:250 fine")

    def test_malformedEntryIsTemporary(self):
        """
        A malformed entry found in the map is logged and gives a
        temporary failure, not acceptance.
        """
        sink = MemorySink()
        a = AccessMap(
            DictMap("a", {"from:x@y": "bogus"}),
            DELIMITER,
            log=Logger("smar", sink=sink),
        )
        d = self.successResultOf(a.check("from", "x@y"))
        self.assertEqual(d["action"], "tempfail")
        self.assertEqual(d["reply"]["code"], 451)
        self.assertTrue(sink.records)

    def test_encodeDN(self):
        """
        The DN encoding of seed §5.9 item 18e.
        """
        self.assertEqual(
            encodeDN(
                "/C=US/ST=California/O=endmail.org/OU=private/CN="
                "Darth Mail (Cert)/emailAddress=darth+cert@endmail.org"
            ),
            "/C=US/ST=California/O=endmail.org/OU=private/CN="
            "Darth+20Mail+20+28Cert+29/emailAddress=darth+2Bcert@endmail.org",
        )

    def test_temporaryMapFailure(self):
        """
        A map that cannot answer gives C{tempfail} (451), never "none".
        """
        m = DictMap("a", {})
        m.temporaryFailure = True
        a = AccessMap(m, DELIMITER, log=Logger("smar", sink=MemorySink()))
        d = self.successResultOf(a.check("to", "u@d"))
        self.assertEqual((d["action"], d["reply"]["code"]), ("tempfail", 451))


class SeedExampleTests(unittest.TestCase):
    """
    The access map example of seed §5.8.3.
    """

    def setUp(self):
        self.dns = FakeDNSResolver(
            ptr={
                "192.0.2.9": ["host.spammer.domain"],
                "192.0.2.10": ["spammer.domain"],
            },
            addresses={
                "spammer.domain": ["192.0.2.10"],
                "host.spammer.domain": ["192.0.2.9"],
            },
            temporary={"192.0.2.66"},
        )
        self.r = makeResolver(
            SEED_ACCESS,
            "primary.domain esmtp:[192.0.2.1]\n",
            self.dns,
            accessMap=self.accessMap(SEED_ACCESS),
        )

    def accessMap(self, entries):
        """The access map under test: in memory here."""
        return None

    def sender(self, address):
        return self.successResultOf(
            self.r.checkSender(address, {"address": "192.0.2.1"})
        )

    def rcpt(self, address, client="192.0.2.1"):
        return self.successResultOf(self.r.checkRecipient(address, {"address": client}))

    def client(self, address):
        return self.successResultOf(self.r.checkClient(address))

    def test_fromDomain(self):
        """
        C{from:@spammer.domain} matches only that domain, C{@.spammer.domain}
        its subdomains; other senders have no entry.
        """
        self.assertEqual(
            self.sender("a@spammer.domain")["reply"]["text"], "No spammers"
        )
        self.assertEqual(
            self.sender("a@x.spammer.domain")["reply"]["text"],
            "No spammers in subdomains either",
        )
        self.assertEqual(self.sender("a@good.domain")["action"], "none")

    def test_toLocalPart(self):
        """
        C{to:root} rejects root at any domain without an own entry
        (C{to:@primary.domain} comes first in the lookup order);
        C{to:abuse} is quick:ok.
        """
        self.assertEqual(self.rcpt("root@primary.domain")["action"], "relay")
        d = self.rcpt("root@some.domain")
        self.assertEqual((d["action"], d["reply"]["code"]), ("error", 551))
        d = self.rcpt("abuse@elsewhere.domain")
        self.assertEqual((d["action"], d["quick"]), ("ok", True))

    def test_toRelay(self):
        """
        C{to:@primary.domain relay} allows relaying to that domain only.
        """
        d = self.rcpt("user@primary.domain")
        self.assertEqual(d["action"], "relay")
        self.assertTrue(d["relayAllowed"])
        self.assertFalse(d["local"])
        d = self.rcpt("user@other.domain")
        self.assertFalse(d["relayAllowed"])

    def test_cltaddrNet(self):
        """
        C{cltaddr:10} matches every 10.x.y.z client.
        """
        d = self.client("10.1.2.3")
        self.assertEqual((d["action"], d["reply"]["code"]), ("error", 551))
        self.assertFalse(d["quick"])

    def test_cltaddrQuickRelay(self):
        """
        C{cltaddr:127.0.0.1 quick:relay}: the client is accepted, and its
        recipients may be relayed even where a C{to:} entry rejects.
        """
        d = self.client("127.0.0.1")
        self.assertEqual((d["action"], d["quick"]), ("relay", True))
        d = self.rcpt("root@anywhere.test", client="127.0.0.1")
        self.assertEqual(d["action"], "relay")
        self.assertTrue(d["relayAllowed"])

    def test_cltname(self):
        """
        A client whose PTR and A records agree gets its name checked with
        C{cltname:} (quick error); a mismatching name is not used.
        """
        d = self.client("192.0.2.10")
        self.assertEqual(d["clientName"], "spammer.domain")
        self.assertEqual(d["resolve"], "ok")
        self.assertEqual((d["action"], d["quick"]), ("error", True))
        d = self.client("192.0.2.9")
        self.assertEqual(d["clientName"], "host.spammer.domain")
        self.assertEqual(d["action"], "none")

    def test_cltresolveTempptr(self):
        """
        A temporary PTR failure is C{cltresolve:tempptr} (451).
        """
        d = self.client("192.0.2.66")
        self.assertEqual(d["resolve"], "tempptr")
        self.assertEqual((d["action"], d["reply"]["code"]), ("error", 451))


class SeedExampleHashMapTests(SeedExampleTests):
    """
    The same examples with the access map in a real Berkeley DB hash file
    (L{AccessMap} looks hash maps up without a L{Deferred} per key).
    """

    def accessMap(self, entries):
        path = os.path.join(self.mktemp() + ".d", "access.db")
        os.makedirs(os.path.dirname(path))
        createMap(path, ["%s %s\n" % item for item in entries.items()])
        m = HashMap("access", path)
        self.addCleanup(m.close)
        return m

    def test_closedMapIsTemporary(self):
        """A hash map that cannot answer gives C{tempfail}, never "none"."""
        self.r.access.map.close()
        d = self.rcpt("u@primary.domain")
        self.assertEqual(d["action"], "tempfail")


class GatewayAndBackupMXTests(unittest.TestCase):
    """
    Seed §6.4 (gateway) and §6.5 (backup MX).
    """

    def test_gateway(self):
        """
        Only the listed users of my.domain may be relayed to; clients in
        10.12 may relay anywhere.
        """
        r = makeResolver(accessEntries("""
to:user1@my.domain      relay
to:user2@my.domain      relay
to:postmaster@my.domain relay
cltaddr:10.12           relay
"""))
        out = {"address": "192.0.2.1"}
        ok = self.successResultOf(r.checkRecipient("user1@my.domain", out))
        self.assertTrue(ok["relayAllowed"])
        no = self.successResultOf(r.checkRecipient("user3@my.domain", out))
        self.assertFalse(no["relayAllowed"])
        inside = self.successResultOf(
            r.checkRecipient("x@far.test", {"address": "10.12.1.1"})
        )
        self.assertTrue(inside["relayAllowed"])
        client = self.successResultOf(r.checkClient("10.12.1.1"))
        self.assertTrue(client["relayClient"])

    def test_backupMX(self):
        """
        Listed users are relayed, others get 451 4.3.3, except from the
        quick:relay clients, which may send to any user.
        """
        r = makeResolver(accessEntries("""
to:user1@other.domain   relay
to:user2@other.domain   relay
to:postmaster@other.domain relay
to:@other.domain        error:451 4.3.3 Try main MX server
cltaddr:10.12           quick:relay
cltaddr:127.0.0.1       quick:relay
"""))
        out = {"address": "192.0.2.1"}
        d = self.successResultOf(r.checkRecipient("user1@other.domain", out))
        self.assertEqual((d["action"], d["relayAllowed"]), ("relay", True))
        d = self.successResultOf(r.checkRecipient("user9@other.domain", out))
        self.assertEqual(d["action"], "error")
        self.assertEqual((d["reply"]["code"], d["reply"]["dsn"]), (451, "4.3.3"))
        for inside in ("10.12.3.4", "127.0.0.1"):
            d = self.successResultOf(
                r.checkRecipient("user9@other.domain", {"address": inside})
            )
            self.assertEqual((d["action"], d["relayAllowed"]), ("relay", True))


class LocalRecipientTests(unittest.TestCase):
    """
    Local domains (seed §6.3): relaying and valid users.
    """

    def setUp(self):
        self.r = makeResolver(
            {},
            "localhost lmtp:\nmy.dom lmtp:\n",
            aliases=DictMap(
                "aliases", {"postmaster": "<user@host.domain>", "user": "local:"}
            ),
        )

    def test_localRelay(self):
        """
        A local domain is relayable unless the SMTPS flag
        lmtp_does_not_imply_relaying is passed.
        """
        d = self.successResultOf(
            self.r.checkRecipient("user@my.dom", {"address": "192.0.2.1"})
        )
        self.assertEqual(
            (d["local"], d["relayAllowed"], d["action"]), (True, True, "none")
        )
        d = self.successResultOf(
            self.r.checkRecipient(
                "user@my.dom",
                {"address": "192.0.2.1", "flags": ["lmtp_does_not_imply_relaying"]},
            )
        )
        self.assertEqual((d["local"], d["relayAllowed"]), (True, False))

    def test_unknownUser(self):
        """
        An unknown local user is rejected with 550 5.1.1.
        """
        d = self.successResultOf(self.r.checkRecipient("nobody@my.dom", {}))
        self.assertEqual(d["action"], "error")
        self.assertEqual((d["reply"]["code"], d["reply"]["dsn"]), (550, "5.1.1"))

    def test_temporaryAliasFailure(self):
        """
        A failing aliases map gives tempfail, never user unknown.
        """
        self.r.aliases.aliases.temporaryFailure = True
        d = self.successResultOf(self.r.checkRecipient("nobody@my.dom", {}))
        self.assertEqual((d["action"], d["reply"]["code"]), ("tempfail", 451))

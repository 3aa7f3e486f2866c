# -*- test-case-name: smx.maps.test.test_aliases -*-
"""
Tests of alias expansion (L{smx.maps.aliases}) with the seed's examples
(§5.8.3, §6.3.2, §5.11.3), in-memory maps.
"""

from twisted.trial import unittest

from smx.log import Logger, MemorySink
from smx.maps.aliases import AliasExpander
from smx.maps.testing import DictMap, defaultResolverSettings


def expander(entries, local=("local.host", "my.dom"), flags=None):
    """
    An L{AliasExpander} of C{entries} with the default settings (the
    host named C{local.host}), the aliases flags C{flags} if given.
    """
    settings = defaultResolverSettings(hostname="local.host")
    return AliasExpander(
        DictMap("aliases", entries),
        None,
        lambda d: d in local,
        settings.aliasFlags if flags is None else flags,
        settings.hostname,
        settings.delimiter,
        log=Logger("smar", sink=MemorySink()),
    )


class AliasTests(unittest.TestCase):
    """
    Expansion of aliases.
    """

    def expand(self, e, address):
        return self.successResultOf(e.expand(address))

    def test_seedExample(self):
        """
        C{myalias: localuser} gets the host name appended; C{mylist} expands
        to its members with C{owner-mylist@domain} as envelope sender.
        """
        e = expander(
            {
                "myalias": "localuser",
                "mylist": "<user1@my.dom> <user2@my.dom> <localuser@local.host>",
                "owner-mylist": "someuser",
                "localuser": "local:",
                "user1": "local:",
                "user2": "local:",
            }
        )
        out = self.expand(e, "myalias@my.dom")
        self.assertEqual(
            [(r["address"], r["error"]) for r in out], [("localuser@local.host", None)]
        )
        out = self.expand(e, "mylist@my.dom")
        self.assertEqual(
            [r["address"] for r in out],
            ["user1@my.dom", "user2@my.dom", "localuser@local.host"],
        )
        self.assertEqual({r["sender"] for r in out}, {"owner-mylist@my.dom"})

    def test_preserveDomain(self):
        """
        With C{preserve_domain} an unqualified target keeps the original
        domain.
        """
        e = expander(
            {"myalias": "localuser", "localuser": "local:"},
            flags=("localpart", "preserve_domain"),
        )
        self.assertEqual(
            self.expand(e, "myalias@my.dom")[0]["address"], "localuser@my.dom"
        )

    def test_localDomains(self):
        """
        The localdomains example: myalias@first.dom and another@second.dom
        are valid, the crossed ones are rejected.
        """
        e = expander(
            {"myalias@first.dom": "user1", "another@second.dom": "user2"},
            local=("first.dom", "second.dom", "local.host"),
            flags=("local_domains",),
        )
        ok = lambda a: self.successResultOf(e.validate(a))
        self.assertIsNone(ok("myalias@first.dom"))
        self.assertIsNone(ok("another@second.dom"))
        self.assertEqual(ok("myalias@second.dom")["code"], 550)
        self.assertEqual(ok("another@first.dom")["code"], 550)

    def test_validLocalAddresses(self):
        """
        Seed §6.3.2: C{user++: local:} accepts user+detail, C{user: local:}
        accepts user, others are unknown (550 5.1.1).
        """
        e = expander(
            {
                "postmaster": "<user@host.domain>",
                "abuse": "user+abuse",
                "user++": "local:",
                "user": "local:",
            }
        )
        self.assertIsNone(self.successResultOf(e.validate("user+x@my.dom")))
        self.assertIsNone(self.successResultOf(e.validate("user@my.dom")))
        bad = self.successResultOf(e.validate("stranger@my.dom"))
        self.assertEqual((bad["code"], bad["dsn"]), (550, "5.1.1"))
        out = self.expand(e, "abuse@my.dom")
        self.assertEqual(out[0]["address"], "user+abuse@local.host")
        self.assertIsNone(out[0]["error"])

    def test_macros(self):
        """
        The example of seed §5.11.3 with C{${x}} macros and C{all_domains}.
        """
        e = expander(
            {"alias*@.domain": "user${extension}@${subdomain}.domain"},
            flags=("all_domains", "replace_macros"),
        )
        self.assertEqual(
            self.expand(e, "alias@host.domain")[0]["address"], "user@host.domain"
        )
        self.assertEqual(
            self.expand(e, "alias+detail@host2.domain")[0]["address"],
            "user+detail@host2.domain",
        )

    def test_bracesMacros(self):
        """
        C{{user}}, C{{detail}}, C{{domain}}, C{{delimiter}} without C{$}.
        """
        e = expander(
            {"a*@x.test": "{user}-{detail}{delimiter}z@{domain}"},
            flags=("all_domains", "replace_macros"),
        )
        self.assertEqual(self.expand(e, "a+b@x.test")[0]["address"], "a-b+z@x.test")

    def test_loop(self):
        """
        An alias loop is a temporary failure (451 4.3.5), not a bounce.
        """
        e = expander({"a": "b", "b": "a"})
        out = self.expand(e, "a@my.dom")
        self.assertEqual(out[0]["error"]["code"], 451)

    def test_depth(self):
        """
        Five levels of nesting work, six do not.
        """
        chain = {"a%d" % i: "a%d" % (i + 1) for i in range(6)}
        chain["a5"] = "local:"
        self.assertIsNone(self.expand(expander(chain), "a0@my.dom")[0]["error"])
        chain["a5"] = "a6"
        chain["a6"] = "local:"
        self.assertEqual(
            self.expand(expander(chain), "a0@my.dom")[0]["error"]["code"], 451
        )

    def test_selfReference(self):
        """
        An alias that includes itself (qualified with the host name) delivers
        to itself as well, without a loop error.
        """
        e = expander({"me": "me other@far.test"})
        out = self.expand(e, "me@my.dom")
        self.assertEqual(
            [r["address"] for r in out], ["me@local.host", "other@far.test"]
        )

    def test_nonLocalNotExpanded(self):
        """
        In C{localpart} mode a remote address is not looked up.
        """
        e = expander({"x": "local:"})
        self.assertEqual(self.expand(e, "x@far.test")[0]["address"], "x@far.test")

    def test_localUserMap(self):
        """
        Without an alias, C{local_user_map} decides; a detail is accepted
        for a known user.
        """
        settings = defaultResolverSettings()
        e = AliasExpander(
            None,
            DictMap("users", {"alice": "alice"}),
            lambda d: True,
            settings.aliasFlags,
            settings.hostname,
            settings.delimiter,
            log=Logger("smar", sink=MemorySink()),
        )
        self.assertIsNone(self.successResultOf(e.validate("alice+x@my.dom")))
        self.assertEqual(self.successResultOf(e.validate("bob@my.dom"))["code"], 550)


class AliasModeFromConfigurationTests(unittest.TestCase):
    """
    QMGR's C{aliases} option (seed §5.7) sets the domains SMAR expands
    aliases for.
    """

    def build(self, text):
        import os

        from twisted.internet.task import Clock

        from smx.config import parseConfiguration
        from smx.maps.resolver import AddressResolver

        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, "mt")
        with open(path, "w") as f:
            f.write("local.test lmtp:\n")
        cfg = parseConfiguration(
            'smar { mailertable { name = "%s"; } }\n' % (path,) + text,
            filename=os.path.join(directory, "smx.conf"),
        )
        resolver = AddressResolver.fromConfiguration(
            cfg, Clock(), log=Logger("smar", sink=MemorySink())
        )
        self.addCleanup(resolver.close)
        return resolver.aliases

    def test_modes(self):
        """
        C{all} expands for every domain, C{localdomains} for the local
        ones; unset, neither.
        """
        every = self.build("qmgr { aliases = all; }")
        self.assertTrue(every.allDomains)
        local = self.build("qmgr { aliases = localdomains; }")
        self.assertTrue(local.localDomains)
        self.assertFalse(local.allDomains)
        unset = self.build("")
        self.assertFalse(unset.allDomains or unset.localDomains)

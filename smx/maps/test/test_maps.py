# -*- test-case-name: smx.maps.test.test_maps -*-
"""
Tests for the declared map types that need no file or server: C{passwd}
(L{smx.maps.passwdmap}) and C{sequence} (L{smx.maps.sequencemap}), and
for building declared maps (L{smx.maps.declarations}).
"""

import pwd

from twisted.internet.testing import MemoryReactor
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from smx.config import parseConfiguration
from smx.interfaces import IMap
from smx.maps.declarations import buildMaps
from smx.maps.errors import MapError, MapTemporaryError
from smx.maps.hashmap import HashMap
from smx.maps.passwdmap import PasswdMap
from smx.maps.sequencemap import SequenceMap
from smx.maps.testing import DictMap


def _entry(name):
    return pwd.struct_passwd((name, "x", 1000, 1000, "", "/home/" + name, "/bin/sh"))


class PasswdMapTests(unittest.SynchronousTestCase):
    """
    L{PasswdMap} answers from the password database.
    """

    def test_interface(self):
        """
        It provides L{IMap}.
        """
        verifyObject(IMap, PasswdMap())

    def test_root(self):
        """
        The real database knows root; its value is the login name.
        """
        self.assertEqual(self.successResultOf(PasswdMap().lookup("root")), "root")

    def test_unknown(self):
        """
        An unknown user is not found (C{None}), not an error.
        """
        m = PasswdMap(getpwnam={"alice": _entry("alice")}.__getitem__)
        self.assertEqual(self.successResultOf(m.lookup("alice")), "alice")
        self.assertIsNone(self.successResultOf(m.lookup("bob")))

    def test_unsafeKeys(self):
        """
        Empty keys and keys with C{/} or NUL are not looked up.
        """
        asked = []

        def getpwnam(name):
            asked.append(name)
            return _entry(name)

        m = PasswdMap(getpwnam=getpwnam)
        for key in ["", "a/b", "a\0b"]:
            self.assertIsNone(self.successResultOf(m.lookup(key)))
        self.assertEqual(asked, [])


class SequenceMapTests(unittest.SynchronousTestCase):
    """
    L{SequenceMap}: the first member that has the key answers.
    """

    def setUp(self):
        self.first = DictMap("first", {"a": "1"})
        self.second = DictMap("second", {"a": "2", "b": "3"})
        self.seq = SequenceMap("seq", [self.first, self.second])

    def test_interface(self):
        """
        It provides L{IMap}.
        """
        verifyObject(IMap, self.seq)

    def test_order(self):
        """
        The members are asked in order; a key none has is not found.
        """
        self.assertEqual(self.successResultOf(self.seq.lookup("a")), "1")
        self.assertEqual(self.successResultOf(self.seq.lookup("b")), "3")
        self.assertIsNone(self.successResultOf(self.seq.lookup("c")))

    def test_temporaryFailureSkippedWhenFound(self):
        """
        A member that fails temporarily does not hide a later member that
        has the key.
        """
        self.first.temporaryFailure = True
        self.assertEqual(self.successResultOf(self.seq.lookup("a")), "2")

    def test_temporaryFailureWhenNotFound(self):
        """
        If no member has the key and one failed temporarily, the lookup
        fails temporarily: that member might have had it.
        """
        self.first.temporaryFailure = True
        f = self.failureResultOf(self.seq.lookup("c"), MapTemporaryError)
        self.assertIn("seq", str(f.value))


class BuildMapsTests(unittest.TestCase):
    """
    L{buildMaps} makes the maps of C{map NAME { ... }} declarations.
    """

    def build(self, text):
        cfg = parseConfiguration(text)
        return buildMaps(cfg.sections("map"), MemoryReactor())

    def test_types(self):
        """
        Each declared type gives its map class, named by the lower-case
        declared name; a sequence holds its members in order.
        """
        maps = self.build(
            "map Users { type = passwd; }\n"
            "map virt { type = hash; file = virt.db; }\n"
            "map both { type = sequence; maps = { virt, users }; }\n"
        )
        self.assertEqual(sorted(maps), ["both", "users", "virt"])
        self.assertIsInstance(maps["users"], PasswdMap)
        self.assertIsInstance(maps["virt"], HashMap)
        self.assertIsInstance(maps["both"], SequenceMap)
        self.assertEqual(maps["both"].maps, [maps["virt"], maps["users"]])
        self.assertEqual(self.successResultOf(maps["both"].lookup("root")), "root")

    def test_sequenceOfSequences(self):
        """
        A sequence may name a sequence declared after it.
        """
        maps = self.build(
            "map outer { type = sequence; maps = { inner }; }\n"
            "map inner { type = sequence; maps = { pw }; }\n"
            "map pw { type = passwd; }\n"
        )
        self.assertEqual(maps["outer"].maps, [maps["inner"]])
        self.assertEqual(self.successResultOf(maps["outer"].lookup("root")), "root")

    def test_unusable(self):
        """
        A map that cannot be made is a L{MapError} naming it.
        """
        for section, text in [
            (_Section("sockmap", type="socket"), "socket map sockmap needs"),
            (_Section("weird", type="nis"), "map weird: unknown type 'nis'"),
        ]:
            e = self.assertRaises(MapError, buildMaps, [section], MemoryReactor())
            self.assertIn(text, str(e))


class _Section(dict):
    """
    A map declaration as L{buildMaps} reads it, without the checks of
    the configuration (which refuses these before they get here).
    """

    def __init__(self, name, **options):
        super().__init__(options)
        self.name = name

    def __getitem__(self, key):
        return self.get(key)

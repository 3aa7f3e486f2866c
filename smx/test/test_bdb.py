# -*- test-case-name: smx.test.test_bdb -*-
"""
Tests for L{smx.bdb}: the Berkeley DB module, from C{berkeleydb} or
C{bsddb3}.
"""

import importlib
import sys

from twisted.trial import unittest

import smx
import smx.bdb


class BerkeleyDBModuleTests(unittest.SynchronousTestCase):
    """
    L{smx.bdb.db} is the first of C{berkeleydb} and C{bsddb3} installed.
    """

    def reimport(self, **modules):
        """
        Import a fresh L{smx.bdb} with C{modules} (name -> module, or
        C{None} for "not installed") in C{sys.modules}.
        """
        saved = {name: sys.modules.get(name) for name in list(modules) + ["smx.bdb"]}

        def restore():
            for name, module in saved.items():
                if module is None:
                    sys.modules.pop(name, None)
                else:
                    sys.modules[name] = module
            smx.bdb = saved["smx.bdb"]  # type: ignore[attr-defined]

        self.addCleanup(restore)
        sys.modules.pop("smx.bdb", None)
        sys.modules.update(modules)
        return importlib.import_module("smx.bdb")

    def test_berkeleydb(self):
        """
        With C{berkeleydb} installed, its C{db} module is used, and it
        opens a real hash file.
        """
        from berkeleydb import db as real

        from smx.bdb import db

        self.assertIs(db, real)
        path = self.mktemp()
        d = db.DB()
        d.open(path, dbtype=db.DB_HASH, flags=db.DB_CREATE)
        d.put(b"key", b"value")
        d.close()
        d = db.DB()
        d.open(path, dbtype=db.DB_HASH, flags=db.DB_RDONLY)
        self.assertEqual(d.get(b"key"), b"value")
        d.close()

    def test_neither(self):
        """
        Without either package, the import error says what to install.
        """
        e = self.assertRaises(ImportError, self.reimport, berkeleydb=None, bsddb3=None)
        self.assertIn("pip install berkeleydb", str(e))

    def test_bsddb3(self):
        """
        Without C{berkeleydb}, C{bsddb3}'s C{db} is used.
        """
        import types

        fake = types.ModuleType("bsddb3")
        fake.db = object()
        bdb = self.reimport(berkeleydb=None, bsddb3=fake)
        self.assertIs(bdb.db, fake.db)

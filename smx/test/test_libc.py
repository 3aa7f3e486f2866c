# -*- test-case-name: smx.test.test_libc -*-
"""
Tests for L{smx.libc}.
"""

import ctypes
import errno
import os
import sys

from twisted.trial import unittest

from smx import libc


class FunctionTests(unittest.TestCase):
    """
    Tests for L{libc.function}.
    """

    def setUp(self):
        if not sys.platform.startswith("linux"):
            raise unittest.SkipTest("Linux only")

    def test_found(self):
        """
        The first name the C library has is given, typed, and keeps
        C{errno}: C{syncfs} of a closed descriptor fails with C{EBADF}.
        """
        f = libc.function(("no_such_function_here", "syncfs"), [ctypes.c_int])
        self.assertIsNotNone(f)
        fd = os.open(self.mktemp(), os.O_WRONLY | os.O_CREAT, 0o600)
        self.assertEqual(f(fd), 0)
        os.close(fd)
        self.assertEqual(f(fd), -1)
        self.assertEqual(ctypes.get_errno(), errno.EBADF)

    def test_missing(self):
        """None of the names: C{None}."""
        self.assertIsNone(libc.function(("no_such_function_here",), []))

    def test_otherSystem(self):
        """Another system than Linux: C{None}."""
        self.patch(sys, "platform", "freebsd14")
        self.assertIsNone(libc.function(("syncfs",), [ctypes.c_int]))

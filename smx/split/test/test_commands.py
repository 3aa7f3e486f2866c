# -*- test-case-name: smx.split.test.test_commands -*-
"""
Tests for L{smx.split.commands}: L{PlainData} carries values of any size
in AMP boxes and refuses boxes that do not hold them.
"""

from __future__ import annotations

from typing import Any, Dict

from twisted.trial import unittest

from smx.split.commands import CHUNK, PlainData
from smx.values import BadData


def box(value: Any) -> Dict[bytes, bytes]:
    strings = {}  # type: Dict[bytes, bytes]
    PlainData().toBox(b"v", strings, {"v": value}, None)
    return strings


def unbox(strings: Dict[bytes, bytes]) -> Any:
    objects = {}  # type: Dict[str, Any]
    PlainData().fromBox(b"v", strings, objects, None)
    return objects["v"]


class PlainDataTests(unittest.TestCase):
    """
    L{PlainData} is JSON in pieces of at most L{CHUNK} bytes.
    """

    def test_small(self) -> None:
        """
        A small value is one piece and comes back equal.
        """
        value = {"a": [1, 2.5, None, True, "é"]}
        strings = box(value)
        self.assertEqual(strings[b"v"], b"1")
        self.assertEqual(unbox(strings), value)

    def test_none(self) -> None:
        """
        C{None} crosses as C{None}.
        """
        self.assertIsNone(unbox(box(None)))

    def test_large(self) -> None:
        """
        A value of several hundred kilobytes is cut into pieces that each
        fit an AMP value, and comes back whole.
        """
        value = ["x" * 1000] * 500
        strings = box(value)
        self.assertGreater(int(strings[b"v"]), 5)
        self.assertTrue(all(len(v) <= CHUNK for v in strings.values()))
        self.assertTrue(all(len(k) < 256 for k in strings))
        self.assertEqual(unbox(strings), value)

    def test_notPlain(self) -> None:
        """
        A value that is not plain data is refused before it is sent.
        """
        self.assertRaises(BadData, box, {"a": object()})
        self.assertRaises(BadData, box, {"a": float("nan")})
        deep = []  # type: Any
        for _ in range(100000):
            deep = [deep]
        self.assertRaises(BadData, box, deep)

    def test_badBoxes(self) -> None:
        """
        A missing count, a missing piece or a piece that is not JSON is
        L{BadData}.
        """
        self.assertRaises(BadData, unbox, {})
        self.assertRaises(BadData, unbox, {b"v": b"x"})
        self.assertRaises(BadData, unbox, {b"v": b"2", b"v.0": b"[1"})
        self.assertRaises(BadData, unbox, {b"v": b"1", b"v.0": b"[1"})
        self.assertRaises(BadData, unbox, {b"v": b"1", b"v.0": b"\xff"})
        self.assertRaises(BadData, unbox, {b"v": b"1", b"v.0": b"[" * 100000})

# -*- test-case-name: smx.test.test_compactjson -*-
"""
Tests for L{smx.compactjson}.
"""

import json
import math

from twisted.trial import unittest

from smx import compactjson


class DumpsTests(unittest.TestCase):
    """
    L{compactjson.dumps} gives C{json.dumps}'s compact text, and its
    errors.
    """

    VALUES = [
        None,
        True,
        0,
        -7,
        1.5,
        1e300,
        "",
        "x",
        'quote " backslash \\ control \x01 non-ASCII \u00e9 \U0001f600',
        [],
        {},
        {"id": "S0006619F2721D99500", "recipients": [{"address": "a@b", "idx": 0}]},
        [1, [2, [3, {"k": [None, False, 2.25]}]]],
        {"1": 1, "z": {"y": []}},
    ]

    def test_same(self):
        for value in self.VALUES:
            for allowNaN in (True, False):
                self.assertEqual(
                    compactjson.dumps(value, allowNaN=allowNaN),
                    json.dumps(value, allow_nan=allowNaN, separators=(",", ":")),
                )

    def test_nan(self):
        """NaN and infinities: JSON's extension, or C{ValueError}."""
        for value in (math.nan, math.inf, -math.inf, [1, math.nan]):
            self.assertEqual(
                compactjson.dumps(value), json.dumps(value, separators=(",", ":"))
            )
            self.assertRaises(ValueError, compactjson.dumps, value, allowNaN=False)

    def test_notPlain(self):
        """What is not plain data is refused with C{TypeError}, each time."""
        for i in range(2):
            self.assertRaises(TypeError, compactjson.dumps, {"a": object()})
            self.assertRaises(TypeError, compactjson.dumps, {1.5: 1, (1,): 2})
        self.assertEqual(compactjson.dumps({"a": 1}), '{"a":1}')

    def test_circular(self):
        """A list holding itself raises L{RecursionError}."""
        loop = []  # type: list
        loop.append(loop)
        self.assertRaises(RecursionError, compactjson.dumps, loop)
        self.assertEqual(compactjson.dumps([[1]]), "[[1]]")


class LoadsTests(unittest.TestCase):
    """
    L{compactjson.loads} gives what C{json.loads} gives, and its errors.
    """

    TEXTS = [
        "null",
        "0",
        "-7.5e3",
        '"x"',
        '"\\u00e9\\ud83d\\ude00"',
        '{"a":[1,2,{"b":null}],"c":"d"}',
        " [1, 2] ",
        "\n{}\t",
        "[]",
    ]

    def test_sameAsJSON(self):
        """Every text reads as C{json.loads} reads it."""
        for text in self.TEXTS:
            self.assertEqual(compactjson.loads(text), json.loads(text), text)

    def test_errors(self):
        """Bad text raises C{json.loads}'s error, with its message."""
        for text in ["", " ", "[1,", "[1] x", "nul", "{'a':1}", "[1]]", "NaNx"]:
            with self.assertRaises(ValueError) as mine:
                compactjson.loads(text)
            with self.assertRaises(ValueError) as theirs:
                json.loads(text)
            self.assertEqual(str(mine.exception), str(theirs.exception), text)

    def test_deep(self):
        """Nesting too deep for the scanner raises L{RecursionError}."""
        self.assertRaises(RecursionError, compactjson.loads, "[" * 100000)

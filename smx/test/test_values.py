# -*- test-case-name: smx.test.test_values -*-
"""
Tests for L{smx.values}: every value type converts to plain data and
back without loss, keeps fields it does not know, and turns data of the
wrong shape into L{BadData} naming the value and the field.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Tuple

from twisted.trial import unittest

from smx.values import (
    BadData,
    Decision,
    DeliveryTransaction,
    Envelope,
    Recipient,
    Reply,
    Resolved,
    Result,
    Route,
    checkPlain,
    checked,
    checkedList,
    listFromData,
    optionalReply,
)

ROUTE = {
    "mailer": "esmtp",
    "host": "mx.example.org",
    "address": "192.0.2.1",
    "port": 25,
    "preference": 10,
}

#: (type, plain data as the components make it)
EXAMPLES: List[Tuple[Any, Dict[str, Any]]] = [
    (Reply, {"code": 451, "dsn": "4.3.0", "text": "try later"}),
    (Decision, {"action": "none", "quick": False, "reply": None}),
    (
        Decision,
        {
            "action": "reject",
            "quick": True,
            "reply": {"code": 550, "dsn": "5.7.1", "text": "no"},
            "clientName": None,
            "resolve": "no",
        },
    ),
    (
        Decision,
        {
            "action": "ok",
            "quick": False,
            "reply": None,
            "local": True,
            "relayAllowed": True,
        },
    ),
    (Route, ROUTE),
    (Route, {"mailer": "lmtp", "host": "", "address": "", "port": 0, "preference": 0}),
    (Recipient, {"address": "a@example.org", "index": 0}),
    (
        Recipient,
        {
            "address": "b@example.org",
            "index": 1,
            "notify": "SUCCESS,FAILURE",
            "orcpt": "rfc822;b@example.org",
            "routes": [ROUTE],
        },
    ),
    (
        Result,
        {
            "index": 0,
            "address": "a@example.org",
            "status": "ok",
            "code": 250,
            "reply": "250 2.0.0 ok",
            "remoteMTA": "192.0.2.1",
            "where": "final_dot",
        },
    ),
    (
        Result,
        {
            "index": 2,
            "address": "c@example.org",
            "status": "temp",
            "code": 451,
            "reply": "451 4.4.0 later",
            "remoteMTA": None,
            "where": None,
        },
    ),
    (
        Envelope,
        {
            "id": "S0000018A2B3C4D5E00",
            "session": "S0000018A2B3C4D5D00",
            "sender": "",
            "recipients": [{"address": "a@example.org", "index": 0}],
            "size": 1234,
            "client": "127.0.0.1",
            "received": 1700000000.25,
            "bodyType": "8BITMIME",
            "smtputf8": False,
            "envid": "xyz",
            "ret": "HDRS",
            "contentPending": True,
            "syncContent": False,
            "requiretls": True,
            "tlsRequiredNo": False,
            "quarantine": "suspicious attachment",
            "contentCrc": 3735928559,
        },
    ),
    (
        DeliveryTransaction,
        {
            "id": "C0000018A2B3C4D5E00",
            "ss_ta": "S0000018A2B3C4D5E00",
            "sender": "s@example.org",
            "recipients": [{"address": "a@example.org", "index": 0, "routes": [ROUTE]}],
            "routes": [ROUTE],
            "size": 10,
            "bodyType": "7BIT",
            "smtputf8": True,
        },
    ),
    (
        Resolved,
        {"address": "a@example.org", "sender": None, "routes": [ROUTE], "error": None},
    ),
    (
        Resolved,
        {
            "address": "x@nowhere.example",
            "sender": "owner-list@example.org",
            "routes": [],
            "error": {"code": 550, "dsn": "5.1.2", "text": "no route"},
        },
    ),
]


class RoundTripTests(unittest.TestCase):
    """
    C{fromData} then C{toData} gives the data back, through JSON too.
    """

    def test_roundTrip(self) -> None:
        """
        Every example comes back equal, and equal again after a JSON
        encoding (what crosses the process boundary).
        """
        for cls, data in EXAMPLES:
            value = cls.fromData(data)
            self.assertEqual(value.toData(), data, cls.__name__)
            again = cls.fromData(json.loads(json.dumps(value.toData())))
            self.assertEqual(again, value)

    def test_frozen(self) -> None:
        """
        The values cannot be changed.
        """
        reply = Reply(451, "4.3.0", "later")
        self.assertRaises(AttributeError, setattr, reply, "code", 250)
        # slots: no other attribute either (Python 3.11 says so with a
        # TypeError, a known quirk of frozen slotted dataclasses)
        self.assertRaises((AttributeError, TypeError), setattr, reply, "other", 1)

    def test_extraFields(self) -> None:
        """
        A field a value type does not know (one a newer component adds,
        such as C{requiretls}) is kept and given back.
        """
        data = dict(EXAMPLES[10][1])
        data["somethingNew"] = True
        data["milter"] = {"headers": [["X-A", "1"]]}
        value = Envelope.fromData(data)
        self.assertEqual(value.extra["somethingNew"], True)
        self.assertEqual(value.toData(), data)

    def test_checked(self) -> None:
        """
        L{checked} and L{checkedList} give good data back unchanged (the
        same object) and raise L{BadData} for bad data.
        """
        data = EXAMPLES[10][1]
        self.assertIs(checked(Envelope, data), data)
        routes = [ROUTE]
        self.assertIs(checkedList(Route, routes), routes)
        self.assertRaises(BadData, checked, Reply, {"code": "x"})
        self.assertRaises(BadData, checkedList, Route, [{"port": 1}])

    def test_optionalNone(self) -> None:
        """
        Known optional fields that are C{None} are left out: the
        components read them with C{get}.
        """
        data = dict(EXAMPLES[10][1], envid=None, ret=None)
        out = Envelope.fromData(data).toData()
        self.assertNotIn("envid", out)
        self.assertNotIn("ret", out)

    def test_list(self) -> None:
        """
        L{listFromData} converts a list of values and L{optionalReply}
        an optional reply.
        """
        self.assertEqual(
            listFromData(Route, [ROUTE, ROUTE]), [Route.fromData(ROUTE)] * 2
        )
        self.assertIsNone(optionalReply(None))
        self.assertEqual(optionalReply({"code": 421}), Reply(421))


#: (type, garbage, words the message must have)
GARBAGE: List[Tuple[Any, Any, List[str]]] = [
    (Reply, None, ["reply", "mapping"]),
    (Reply, "451 later", ["reply", "mapping"]),
    (Reply, {}, ["'code'", "missing"]),
    (Reply, {"code": "451"}, ["'code'", "integer"]),
    (Reply, {"code": True}, ["'code'", "integer"]),
    (Reply, {"code": 42}, ["not an SMTP reply code"]),
    (Reply, {"code": 451, "text": 3}, ["'text'", "string"]),
    (Decision, {"action": "maybe"}, ["'action'", "one of"]),
    (Decision, {"action": "ok", "quick": "yes"}, ["'quick'", "true or false"]),
    (Decision, {"action": "reject", "reply": {"code": "x"}}, ["decision.reply"]),
    (Route, {"host": "x"}, ["'mailer'", "missing"]),
    (Route, {"mailer": "esmtp", "port": 2.5}, ["'port'"]),
    (Recipient, {"address": "a@b", "routes": {}}, ["'routes'", "list"]),
    (Recipient, {"address": "a@b", "routes": [{"mailer": 1}]}, ["routes[0]"]),
    (Result, {"index": 0, "address": "a", "status": "fine"}, ["'status'"]),
    (Envelope, {"id": "S1"}, ["'recipients'", "missing"]),
    (Envelope, {"id": "S1", "recipients": [1]}, ["recipients[0]", "mapping"]),
    (Envelope, {"id": "S1", "recipients": [], "received": "now"}, ["'received'"]),
    (
        Envelope,
        {"id": "S1", "recipients": [], "received": float("nan")},
        ["'received'", "finite"],
    ),
    (Envelope, {"id": "S1", "recipients": [], 3: 4}, ["key 3"]),
    (Envelope, {"id": "S1", "recipients": [], "x": object()}, ["envelope.x"]),
    (Envelope, {"id": "S1", "recipients": [], "x": {1: 2}}, ["envelope.x", "key 1"]),
    (DeliveryTransaction, {"id": "C1", "recipients": []}, ["'ss_ta'"]),
    (Envelope, {"id": "S1", "recipients": [], "requiretls": "yes"}, ["'requiretls'"]),
    (
        DeliveryTransaction,
        {"id": "C1", "ss_ta": "S1", "recipients": [], "tlsRequiredNo": 1},
        ["'tlsRequiredNo'"],
    ),
    (Resolved, {"address": "a", "error": "no"}, ["resolved address.error"]),
]


class BadDataTests(unittest.TestCase):
    """
    Data of the wrong shape is L{BadData} (a C{ValueError}) with a message
    naming the value and the field, never another exception.
    """

    def test_garbage(self) -> None:
        """
        Each piece of garbage raises L{BadData} with a telling message.
        """
        for cls, data, words in GARBAGE:
            e = self.assertRaises(BadData, cls.fromData, data)
            for word in words:
                self.assertIn(word, str(e), (cls.__name__, data))
            self.assertIsInstance(e, ValueError)

    def test_deep(self) -> None:
        """
        Data nested deeper than any value needs is refused, not a
        RecursionError.
        """
        deep = []  # type: List[Any]
        for _ in range(10000):
            deep = [deep]
        self.assertRaises(BadData, checkPlain, deep)
        self.assertRaises(
            BadData, Envelope.fromData, {"id": "S1", "recipients": [], "x": deep}
        )

    def test_list(self) -> None:
        """
        L{listFromData} of something that is not a list is L{BadData}.
        """
        e = self.assertRaises(BadData, listFromData, Result, {"a": 1})
        self.assertIn("results", str(e))

    def test_random(self) -> None:
        """
        Arbitrary JSON values never raise anything but L{BadData}.
        """
        import random

        rnd = random.Random(5)
        atoms = [None, True, 0, -1, 1.5, "", "x", [], {}]  # type: List[Any]

        def make(depth: int) -> Any:
            if depth > 3 or rnd.random() < 0.3:
                return rnd.choice(atoms)
            if rnd.random() < 0.5:
                return [make(depth + 1) for _ in range(rnd.randint(0, 3))]
            keys = ["id", "recipients", "address", "index", "code", "action", "x"]
            return {rnd.choice(keys): make(depth + 1) for _ in range(rnd.randint(0, 4))}

        kinds = [cls for cls, _ in EXAMPLES]  # type: List[Any]
        for _ in range(2000):
            cls = rnd.choice(kinds)
            data = make(0)
            try:
                cls.fromData(data)
            except BadData:
                pass


class QuickCheckTests(unittest.TestCase):
    """
    L{checked} and L{checkedList} check data of the right shape without
    building the value: they must take exactly what C{fromData} takes and
    refuse the rest with C{fromData}'s own L{BadData}.
    """

    def mutations(self) -> List[Tuple[Any, Any]]:
        """
        The examples, each field of each replaced by values of other
        types, and the garbage.
        """
        import copy

        odd = [
            None,
            True,
            0,
            1000,
            -1,
            1.5,
            float("nan"),
            "",
            "x",
            [],
            {},
            [1],
            {"a": 1},
        ]
        out = [(cls, data) for cls, data in EXAMPLES]
        out += [(cls, data) for cls, data, _ in GARBAGE]
        for cls, data in EXAMPLES:
            for name in list(data) + ["extra", "x"]:
                for value in odd:
                    changed = copy.deepcopy(data)
                    changed[name] = value
                    out.append((cls, changed))
            for name in ("recipients", "routes", "reply", "error"):
                if isinstance(data.get(name), list) and data[name]:
                    for field in list(data[name][0]) + ["x"]:
                        for value in odd:
                            changed = copy.deepcopy(data)
                            changed[name][0][field] = value
                            out.append((cls, changed))
                elif isinstance(data.get(name), dict):
                    for field in list(data[name]) + ["x"]:
                        for value in odd:
                            changed = copy.deepcopy(data)
                            changed[name][field] = value
                            out.append((cls, changed))
        return out

    def test_sameVerdict(self) -> None:
        """
        For every example and mutation, L{checked} gives the data back
        when C{fromData} takes it, and otherwise raises the same
        L{BadData} message; likewise L{checkedList} for a list of it.
        """
        for cls, data in self.mutations():
            try:
                cls.fromData(data)
            except BadData as e:
                e2 = self.assertRaises(BadData, checked, cls, data)
                self.assertEqual(str(e2), str(e), (cls.__name__, data))
                e3 = self.assertRaises(BadData, checkedList, cls, [data])
                self.assertIn(str(e).split(":", 1)[1], str(e3))
            else:
                self.assertIs(checked(cls, data), data, (cls.__name__, data))
                items = [data, data]
                self.assertIs(checkedList(cls, items), items)

    def test_deep(self) -> None:
        """
        Extra fields nested too deep are refused by L{checked} too.
        """
        deep = []  # type: List[Any]
        for _ in range(40):
            deep = [deep]
        self.assertRaises(
            BadData, checked, Envelope, {"id": "S1", "recipients": [], "x": deep}
        )

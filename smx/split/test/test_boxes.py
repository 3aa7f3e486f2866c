# -*- test-case-name: smx.split.test.test_boxes -*-
"""
Tests for L{smx.split.boxes}: whole AMP boxes read from any cut of the
byte stream, the same boxes as Twisted's own reader gives.
"""

from __future__ import annotations

import random
from typing import Any, List

from twisted.internet.testing import StringTransport
from twisted.protocols import amp
from twisted.python.failure import Failure
from twisted.trial import unittest

from smx.split.boxes import FastBoxReceiver


class Recorder:
    """A box receiver that keeps what it gets."""

    def __init__(self) -> None:
        self.boxes = []  # type: List[Any]
        self.stopped = None  # type: Any

    def startReceivingBoxes(self, sender: Any) -> None:
        pass

    def ampBoxReceived(self, box: Any) -> None:
        self.boxes.append(dict(box))

    def stopReceivingBoxes(self, reason: Failure) -> None:
        self.stopped = reason


class FastProtocol(FastBoxReceiver, amp.BinaryBoxProtocol):
    pass


def connected(cls: Any) -> Any:
    recorder = Recorder()
    proto = cls(recorder)
    proto.makeConnection(StringTransport())
    return proto, recorder


BOXES = [
    {b"_command": b"CheckClient", b"_ask": b"1", b"clientAddress": b"127.0.0.1"},
    {},
    {b"_answer": b"1", b"decision": b"1", b"decision.0": b"x" * 65535},
    {b"k" * 255: b"", b"a": b"\x00\x00\x00"},
]
STREAM = b"".join(amp.AmpBox(b).serialize() for b in BOXES)


class FastBoxReceiverTests(unittest.TestCase):
    """
    L{FastBoxReceiver} reads what AMP writes.
    """

    def feed(self, cls: Any, cuts: List[int]) -> List[Any]:
        proto, recorder = connected(cls)
        last = 0
        for cut in cuts + [len(STREAM)]:
            proto.dataReceived(STREAM[last:cut])
            last = cut
        return recorder.boxes

    def test_atOnce(self) -> None:
        """
        Several boxes in one read, among them an empty box, a value of
        65,535 bytes and a key of 255.
        """
        self.assertEqual(self.feed(FastProtocol, []), BOXES)

    def test_byteByByte(self) -> None:
        """
        One byte at a time: each box once it is complete.
        """
        proto, recorder = connected(FastProtocol)
        first = len(amp.AmpBox(BOXES[0]).serialize())
        for i in range(len(STREAM)):
            proto.dataReceived(STREAM[i : i + 1])
            if i == first - 2:
                self.assertEqual(recorder.boxes, [])
            if i == first - 1:
                self.assertEqual(recorder.boxes, BOXES[:1])
        self.assertEqual(recorder.boxes, BOXES)

    def test_randomCuts(self) -> None:
        """
        Any cut of the stream gives the same boxes as Twisted's reader.
        """
        rnd = random.Random(7)
        for _ in range(50):
            cuts = sorted(rnd.sample(range(1, len(STREAM)), rnd.randint(1, 30)))
            self.assertEqual(
                self.feed(FastProtocol, cuts), self.feed(amp.BinaryBoxProtocol, cuts)
            )

    def test_keyTooLong(self) -> None:
        """
        A key longer than 255 bytes ends the connection, and the receiver
        is told L{amp.TooLong}, as with AMP's reader.
        """
        proto, recorder = connected(FastProtocol)
        proto.dataReceived(b"\x01\x00" + b"k" * 256 + b"\x00\x00")
        self.assertTrue(proto.transport.disconnecting)
        proto.connectionLost(Failure(Exception("closed")))
        self.assertIsInstance(recorder.stopped.value, amp.TooLong)
        self.assertEqual(recorder.boxes, [])


class SerializeTests(unittest.TestCase):
    """
    L{serialize} writes what AMP's reader reads, and refuses what AMP
    refuses.
    """

    def test_readBack(self) -> None:
        """
        Boxes serialized by L{serialize} are read back by Twisted's reader
        as they were.
        """
        from smx.split.boxes import serialize

        proto, recorder = connected(amp.BinaryBoxProtocol)
        proto.dataReceived(b"".join(serialize(amp.AmpBox(b)) for b in BOXES))
        self.assertEqual(recorder.boxes, BOXES)

    def test_refused(self) -> None:
        """
        A key or value that is not bytes, a key over 255 bytes, a value
        over 65,535.
        """
        from smx.split.boxes import serialize

        self.assertRaises(TypeError, serialize, {"k": b"v"})
        self.assertRaises(TypeError, serialize, {b"k": "v"})
        self.assertRaises(amp.TooLong, serialize, {b"k" * 256: b"v"})
        self.assertRaises(amp.TooLong, serialize, {b"k": b"v" * 65536})

    def test_sendBox(self) -> None:
        """
        C{sendBox} writes the box; without a connection it raises
        L{ConnectionLost}, as AMP does.
        """
        from twisted.internet.error import ConnectionLost

        proto, _ = connected(FastProtocol)
        proto.sendBox(amp.AmpBox(BOXES[0]))
        reader, recorder = connected(amp.BinaryBoxProtocol)
        reader.dataReceived(proto.transport.value())
        self.assertEqual(recorder.boxes, BOXES[:1])
        proto.transport = None
        self.assertRaises(ConnectionLost, proto.sendBox, amp.AmpBox(BOXES[0]))

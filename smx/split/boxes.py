# -*- test-case-name: smx.split.test.test_boxes -*-
"""
NAME
    smx.split.boxes - AMP boxes read a whole box at a time

SYNOPSIS
    class QuietAMP(FastBoxReceiver, amp.AMP): ...

DESCRIPTION
    Twisted's AMP reads each key and each value of a box as a string of
    its own (L{twisted.protocols.basic.Int16StringReceiver}, then a state
    machine that dispatches on a method name per string): for a box of a
    dozen strings, a dozen rounds of slicing, unpacking and method lookup,
    some 10% of QMGR's time in split mode.  L{FastBoxReceiver} reads the
    same wire format (a 16-bit length and the bytes of each key and
    value, an empty key ending the box) in one loop and hands each whole
    box to the box receiver, as AMP does; an incomplete box waits for
    more data.  A key longer than 255 bytes ends the connection as AMP
    does (L{twisted.protocols.amp.TooLong}).  A connection switched to
    another protocol (which smx never does) goes on through AMP's own
    reader.
"""

from __future__ import annotations

from typing import Any, List

import struct

from twisted.internet.error import ConnectionLost
from twisted.protocols import amp

#: the longest key AMP allows
MAX_KEY_LENGTH = 255
#: the longest value AMP allows
MAX_VALUE_LENGTH = 0xFFFF

_length = struct.Struct("!H").pack


def serialize(box: Any) -> bytes:
    """
    The wire form of C{box} (as L{amp.AmpBox.serialize}, with the keys in
    the box's order: the reader does not care).

    @raise TypeError: a key or value is not L{bytes}.
    @raise amp.TooLong: a key or value is too long.
    """
    out = []  # type: List[bytes]
    for k, v in box.items():
        if type(k) is not bytes or type(v) is not bytes:
            raise TypeError("AMP keys and values must be bytes: %r: %r" % (k, v))
        if len(k) > MAX_KEY_LENGTH:
            raise amp.TooLong(True, True, k, None)
        if len(v) > MAX_VALUE_LENGTH:
            raise amp.TooLong(False, True, v, k)
        out += (_length(len(k)), k, _length(len(v)), v)
    out.append(b"\0\0")
    return b"".join(out)


class LightBox(amp.AmpBox):
    """
    An L{amp.AmpBox} made without its check that every key is L{bytes}:
    L{serialize} checks each key and value when the box is sent, and
    L{FastBoxReceiver} makes only keys of bytes.  (Several boxes are made
    per message, and the check is a Python call each.)
    """

    __slots__ = ()
    __init__ = dict.__init__  # type: ignore[assignment]


class FastBoxReceiver:
    """
    A mixin for L{amp.AMP} (put before it) replacing its C{dataReceived}
    (see the module docstring).
    """

    _unparsed = b""

    def sendBox(self, box: Any) -> None:
        """
        Send C{box} (as L{amp.BinaryBoxProtocol.sendBox}, serialized by
        L{serialize}).
        """
        if self.innerProtocol is not None:  # type: ignore[attr-defined]
            # switched to another protocol (smx never does; nor does it
            # start TLS on these connections): AMP's own refusal
            amp.BinaryBoxProtocol.sendBox(self, box)  # type: ignore[arg-type]
            return
        if self.transport is None:  # type: ignore[attr-defined]
            raise ConnectionLost()
        self.transport.write(serialize(box))  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        if self.innerProtocol is not None:  # type: ignore[attr-defined]
            amp.BinaryBoxProtocol.dataReceived(self, data)  # type: ignore[arg-type]
            return
        buf = self._unparsed + data if self._unparsed else data
        end = len(buf)
        start = 0
        receiver = self.boxReceiver  # type: ignore[attr-defined]
        while True:
            # made at its first key: the last round, on what is left of
            # the data, usually finds none
            box = None
            pos = start
            complete = False
            while pos + 2 <= end:
                length = (buf[pos] << 8) | buf[pos + 1]
                pos += 2
                if not length:
                    complete = True
                    break
                if length > MAX_KEY_LENGTH:
                    self._unparsed = b""
                    self.lengthLimitExceeded(length)  # type: ignore[attr-defined]
                    return
                keyEnd = pos + length
                if keyEnd + 2 > end:
                    break
                valueLength = (buf[keyEnd] << 8) | buf[keyEnd + 1]
                valueStart = keyEnd + 2
                valueEnd = valueStart + valueLength
                if valueEnd > end:
                    break
                if box is None:
                    box = LightBox()
                box[buf[pos:keyEnd]] = buf[valueStart:valueEnd]
                pos = valueEnd
            if not complete:
                break
            start = pos
            receiver.ampBoxReceived(LightBox() if box is None else box)
            if self.transport is None:  # type: ignore[attr-defined]
                return
        self._unparsed = buf[start:] if start < end else b""


__all__ = ["FastBoxReceiver", "LightBox", "MAX_KEY_LENGTH", "serialize"]

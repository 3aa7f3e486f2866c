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

from twisted.protocols import amp

#: the longest key AMP allows
MAX_KEY_LENGTH = 255


class FastBoxReceiver:
    """
    A mixin for L{amp.AMP} (put before it) replacing its C{dataReceived}
    (see the module docstring).
    """

    _unparsed = b""

    def dataReceived(self, data: bytes) -> None:
        if self.innerProtocol is not None:  # type: ignore[attr-defined]
            amp.BinaryBoxProtocol.dataReceived(self, data)  # type: ignore[arg-type]
            return
        buf = self._unparsed + data if self._unparsed else data
        end = len(buf)
        start = 0
        receiver = self.boxReceiver  # type: ignore[attr-defined]
        while True:
            box = amp.AmpBox()
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
                box[buf[pos:keyEnd]] = buf[valueStart:valueEnd]
                pos = valueEnd
            if not complete:
                break
            start = pos
            receiver.ampBoxReceived(box)
            if self.transport is None:  # type: ignore[attr-defined]
                return
        self._unparsed = buf[start:] if start < end else b""


__all__ = ["FastBoxReceiver", "MAX_KEY_LENGTH"]

# -*- test-case-name: smx.mail.test.test_downgrade -*-
"""
NAME
    smx.mail.downgrade - 8-bit MIME content made 7-bit for a next hop
    without 8BITMIME

SYNOPSIS
    try:
        size = downgrade(source, out)     # binary files
    except ConversionError as e:
        reply = e.reply                   # "554 5.6.3 ..."

DESCRIPTION
    RFC 6152 section 3 lets a relay that must send 8-bit content to a
    server without 8BITMIME convert it to 7 bits with MIME (RFC 2045) or
    return it.  L{downgrade} does what Postfix's SMTP client does: it
    walks the MIME structure line by line and

      - encodes every leaf part declared C{8bit}, C{7bit} or without a
        Content-Transfer-Encoding that has 8-bit octets with
        quoted-printable (lines of at most 76 characters, soft breaks,
        trailing white space, C{=} and lone CRs encoded), replacing (or
        adding) its Content-Transfer-Encoding header;
      - walks a multipart by its boundary and converts each part; a
        message/rfc822 part is a message: its headers and body are
        converted in turn; a composite part declared C{8bit} is declared
        C{7bit} afterwards;
      - treats the body of a message (or of a message/rfc822 part)
        without MIME-Version as one
        text/plain part: converted, it gets C{MIME-Version: 1.0},
        C{Content-Type: text/plain; charset=unknown-8bit} (RFC 1428,
        unless it has a Content-Type) and
        C{Content-Transfer-Encoding: quoted-printable}.

    Every other line (headers, boundaries, 7-bit parts, preambles) is
    copied byte for byte, line endings included.  A part without 8-bit
    octets is not changed.

    It refuses (L{ConversionError}, C{554 5.6.3} and the reason) what
    cannot be converted: 8-bit octets in a header (of the message or of
    a part), in a multipart/signed part or inside one (the signature
    would break), in a part declared C{binary}, base64 or
    quoted-printable, in message/partial or message/external-body, in a
    multipart preamble or epilogue, and MIME nested more than
    L{MAX_DEPTH} deep.

    Memory: lines are read in pieces of at most L{PIECE} bytes; the
    headers of one part are held in memory; the body of one leaf part is
    held in a temporary file that stays in memory up to L{SPOOL_MEMORY}
    bytes (it is needed because a part declared C{7bit} may turn out to
    have 8-bit octets after its headers were read).  L{downgradeFile}
    writes the result to such a temporary file too (L{OUT_MEMORY}).  The
    work is CPU-bound: SMTPC runs it in the reactor's thread pool.

    Dot-stuffing and the CRLF line endings of the DATA stream stay the
    transport's job (L{smx.mail.client.BodyEncoder}).

CONFIGURATION PARAMETERS
    None.

SECURITY
    The content is untrusted: boundaries and headers are parsed leniently
    (by L{email.message.Message}), nesting is bounded, nothing is
    evaluated.

DIAGNOSTICS
    L{ConversionError} carries the reply of every recipient.
"""

from __future__ import annotations

import binascii
import tempfile
from email.message import Message
from typing import IO, List, Optional, Set, Tuple

__all__ = [
    "ConversionError",
    "downgrade",
    "downgradeFile",
    "MAX_DEPTH",
    "PIECE",
]

#: the longest piece of a line read at once (longer lines are read in
#: pieces; a quoted-printable line is cut with a soft break between them)
PIECE = 65536

#: how deeply multiparts and messages may nest
MAX_DEPTH = 50

#: bytes of one leaf part's body held in memory before it goes to disk
SPOOL_MEMORY = 1 << 20

#: bytes of the converted content held in memory before it goes to disk
OUT_MEMORY = 4 << 20

_CTE = b"content-transfer-encoding"
_QP_HEADER = b"Content-Transfer-Encoding: quoted-printable"


class ConversionError(Exception):
    """
    The content has 8-bit octets that cannot be converted.

    @ivar reason: why, in a few words.
    """

    def __init__(self, reason: str) -> None:
        # it may quote the message: printable ASCII, one line, not long
        reason = "".join(c if " " <= c <= "~" else "?" for c in reason)[:200]
        Exception.__init__(self, reason)
        self.reason = reason

    @property
    def reply(self) -> str:
        """The reply of every recipient (RFC 3463 5.6.3)."""
        return (
            "554 5.6.3 Conversion required and not possible: %s; the "
            "server does not offer 8BITMIME" % (self.reason,)
        )


def downgrade(source: IO[bytes], out: IO[bytes]) -> int:
    """
    Write C{source} (a message, read from its current position) to
    C{out} with every 8-bit part converted to quoted-printable.

    @return: the number of bytes written.
    @raise ConversionError: the content cannot be made 7-bit; C{out}
        holds a part of the result then.
    @raise OSError: C{source} cannot be read or C{out} written.
    """
    converter = _Converter(source, out)
    converter.entity([], True, "text/plain", 0)
    return converter.written


def downgradeFile(source: IO[bytes]) -> Tuple[IO[bytes], int]:
    """
    L{downgrade} into a new temporary file.

    @return: the file (at position 0; the caller closes it) and its size.
    @raise ConversionError: see L{downgrade} (the file is closed then).
    """
    out = tempfile.SpooledTemporaryFile(max_size=OUT_MEMORY)
    try:
        size = downgrade(source, out)  # type: ignore[arg-type]
    except BaseException:
        out.close()
        raise
    out.seek(0)
    return out, size  # type: ignore[return-value]


def _eol(piece: bytes) -> bytes:
    if piece.endswith(b"\r\n"):
        return b"\r\n"
    if piece.endswith(b"\n"):
        return b"\n"
    return b""


class _Converter:
    """
    The state of one conversion: the input read in pieces of lines (with
    one piece pushed back), the output and its size.
    """

    def __init__(self, source: IO[bytes], out: IO[bytes]) -> None:
        self.source = source
        self.out = out
        self.written = 0
        self._back = None  # type: Optional[Tuple[bytes, bool]]
        self._atStart = True

    # input and output ----------------------------------------------------

    def read(self) -> Tuple[bytes, bool]:
        """
        @return: the next piece (C{b""} at the end) and whether it starts
            a line.
        """
        if self._back is not None:
            back, self._back = self._back, None
            return back
        piece = self.source.readline(PIECE)
        start = self._atStart
        self._atStart = piece.endswith(b"\n")
        return piece, start

    def unread(self, piece: bytes, start: bool) -> None:
        self._back = (piece, start)

    def write(self, data: bytes) -> None:
        if data:
            self.out.write(data)
            self.written += len(data)

    # the structure -------------------------------------------------------

    def entity(
        self, boundaries: List[bytes], top: bool, defaultType: str, depth: int
    ) -> None:
        """
        Convert one entity (a message or a body part: headers and body)
        up to a delimiter line of an enclosing multipart (left unread) or
        the end.

        @param top: is it a message (the content, or a message/rfc822
            part) rather than a body part?
        """
        if depth > MAX_DEPTH:
            raise ConversionError("MIME parts nested too deeply")
        headers = self.headers(boundaries)
        fields = _Fields(headers)
        ctype = fields.contentType(defaultType)
        cte = fields.cte()
        if cte == "binary":
            raise ConversionError("a part has the binary content transfer encoding")
        maintype = ctype.split("/")[0]
        if ctype == "multipart/signed":
            self.writeLines(headers)
            self.opaque(
                boundaries,
                "8-bit data in a multipart/signed part (conversion "
                "would break the signature)",
            )
        elif maintype == "multipart":
            boundary = fields.boundary()
            if boundary is None:
                self.writeLines(headers)
                self.opaque(boundaries, "8-bit data in a multipart without boundary")
                return
            self.writeLines(fields.composite(cte))
            subtype = "message/rfc822" if ctype == "multipart/digest" else "text/plain"
            self.multipart(boundaries, boundary, subtype, depth)
        elif ctype == "message/rfc822" and cte in ("", "7bit", "8bit"):
            self.writeLines(fields.composite(cte))
            self.entity(boundaries, True, "text/plain", depth + 1)
        elif maintype == "message" and ctype != "message/global":
            self.writeLines(headers)
            self.opaque(boundaries, "8-bit data in a %s part" % (ctype,))
        elif cte not in ("", "7bit", "8bit"):
            self.writeLines(headers)
            self.opaque(boundaries, "8-bit data in a part declared %s" % (cte,))
        else:
            self.leaf(boundaries, fields, top)

    def headers(self, boundaries: List[bytes]) -> List[bytes]:
        """
        Read a header block: up to and including the empty line, or up to
        a delimiter (left unread) or the end.

        @raise ConversionError: a header has 8-bit octets.
        """
        lines = []  # type: List[bytes]
        while True:
            piece, start = self.read()
            if not piece:
                return lines
            if start and boundaries and _delimiter(piece, boundaries) is not None:
                self.unread(piece, start)
                return lines
            if not piece.isascii():
                raise ConversionError("8-bit data in a header")
            lines.append(piece)
            if start and piece in (b"\r\n", b"\n"):
                return lines

    def writeLines(self, lines: List[bytes]) -> None:
        self.write(b"".join(lines))

    def opaque(self, boundaries: List[bytes], reason: str) -> None:
        """
        Copy lines up to a delimiter of C{boundaries} (left unread) or the
        end; they cannot be converted.

        @raise ConversionError: with C{reason} if one has 8-bit octets.
        """
        while True:
            piece, start = self.read()
            if not piece:
                return
            if start and boundaries and _delimiter(piece, boundaries) is not None:
                self.unread(piece, start)
                return
            if not piece.isascii():
                raise ConversionError(reason)
            self.write(piece)

    def multipart(
        self, boundaries: List[bytes], boundary: bytes, defaultType: str, depth: int
    ) -> None:
        """
        The body of a multipart: preamble, parts, epilogue.
        """
        inner = boundaries + [boundary]
        self.opaque(inner, "8-bit data in a multipart preamble")
        while True:
            piece, start = self.read()
            if not piece:
                return
            found = _delimiter(piece, inner)
            if found is None or found[0] != boundary:
                # an enclosing delimiter: this multipart was not closed
                self.unread(piece, start)
                return
            self.write(piece)
            if found[1]:
                # the close delimiter: the epilogue follows
                self.opaque(boundaries, "8-bit data in a multipart epilogue")
                return
            self.entity(inner, False, defaultType, depth + 1)

    def leaf(self, boundaries: List[bytes], fields: "_Fields", top: bool) -> None:
        """
        A leaf part with C{7bit}, C{8bit} or no encoding: copied as it is
        if it is 7-bit, else converted to quoted-printable.
        """
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY)
        try:
            eightBit = False
            while True:
                piece, start = self.read()
                if not piece:
                    break
                if start and boundaries and _delimiter(piece, boundaries) is not None:
                    self.unread(piece, start)
                    break
                if not eightBit and not piece.isascii():
                    eightBit = True
                spool.write(piece)
            spool.seek(0)
            if not eightBit:
                self.writeLines(fields.lines)
                while True:
                    chunk = spool.read(PIECE)
                    if not chunk:
                        return
                    self.write(chunk)
            self.writeLines(fields.quotedPrintable(top))
            encoder = _QuotedPrintable(fields.eol)
            while True:
                piece = spool.readline(PIECE)
                if not piece:
                    return
                self.write(encoder.encode(piece))
        finally:
            spool.close()


def _delimiter(piece: bytes, boundaries: List[bytes]) -> Optional[Tuple[bytes, bool]]:
    """
    Is C{piece} (a line) a delimiter line of one of C{boundaries}
    (innermost last)?

    @return: the boundary and whether it is the close delimiter, or
        C{None}.
    """
    if not piece.startswith(b"--"):
        return None
    line = piece.rstrip(b"\r\n")
    for boundary in reversed(boundaries):
        if line.startswith(boundary, 2):
            rest = line[2 + len(boundary) :]
            close = rest.startswith(b"--")
            if close:
                rest = rest[2:]
            if not rest.strip(b" \t"):
                return boundary, close
    return None


class _Fields:
    """
    The header block of one entity, as lines, and what it says.

    @ivar lines: the lines, line endings included.
    @ivar eol: the line ending of the header block.
    """

    def __init__(self, lines: List[bytes]) -> None:
        self.lines = lines
        self.eol = _eol(lines[-1]) if lines else b"\r\n"
        self.eol = self.eol or b"\r\n"
        self._message = Message()
        # (name, first line index, line count) of every field
        self._fields = []  # type: List[Tuple[bytes, int, int]]
        for i, line in enumerate(lines):
            if line[:1] in (b" ", b"\t") and self._fields:
                name, first, count = self._fields[-1]
                self._fields[-1] = (name, first, count + 1)
            elif b":" in line:
                name = line.split(b":", 1)[0].strip().lower()
                self._fields.append((name, i, 1))
        for name, first, count in self._fields:
            if name in (b"content-type", _CTE, b"mime-version"):
                raw = b"".join(lines[first : first + count]).decode("ascii")
                # unfolded (RFC 5322 2.2.3)
                value = raw.split(":", 1)[1].replace("\r", "").replace("\n", "")
                value = value.strip()
                self._message[name.decode("ascii")] = value

    def contentType(self, default: str) -> str:
        if default != "text/plain":
            self._message.set_default_type(default)
        return self._message.get_content_type()

    def cte(self) -> str:
        value = self._message.get("Content-Transfer-Encoding")
        if value is None:
            return ""
        # a token, maybe followed by a comment: "8bit (utf-8 text)"
        words = str(value).split("(", 1)[0].split()
        return words[0].lower()[:40] if words else ""

    def boundary(self) -> Optional[bytes]:
        boundary = self._message.get_boundary()
        if not boundary:
            return None
        return boundary.encode("ascii", "replace")

    def _replaced(self, line: bytes) -> List[bytes]:
        """
        The lines with the Content-Transfer-Encoding field replaced by
        C{line} (added before the empty line if there is none).
        """
        out = []  # type: List[bytes]
        done = False
        skip = set()  # type: Set[int]
        for name, first, count in self._fields:
            if name == _CTE:
                skip.update(range(first, first + count))
        for i, old in enumerate(self.lines):
            if i in skip:
                if not done:
                    out.append(line + (_eol(old) or self.eol))
                    done = True
                continue
            out.append(old)
        if not done:
            self._insert(out, [line])
        return out

    def _insert(self, lines: List[bytes], new: List[bytes]) -> None:
        """Insert C{new} fields before the empty line ending C{lines}."""
        at = len(lines)
        if lines and lines[-1] in (b"\r\n", b"\n"):
            at -= 1
        lines[at:at] = [field + self.eol for field in new]

    def composite(self, cte: str) -> List[bytes]:
        """
        The lines of a multipart or message/rfc822 entity whose parts
        will all be 7-bit: declared C{7bit} if it said C{8bit}.
        """
        if cte != "8bit":
            return self.lines
        return self._replaced(b"Content-Transfer-Encoding: 7bit")

    def quotedPrintable(self, top: bool) -> List[bytes]:
        """
        The lines of a leaf entity whose body is quoted-printable now;
        for a message without MIME-Version, the MIME header fields
        added.
        """
        lines = self._replaced(_QP_HEADER)
        if top and "MIME-Version" not in self._message:
            new = [b"MIME-Version: 1.0"]
            if "Content-Type" not in self._message:
                new.append(b"Content-Type: text/plain; charset=unknown-8bit")
            at = len(lines)
            if lines and lines[-1] in (b"\r\n", b"\n"):
                at -= 1
            # next to the Content-Transfer-Encoding added last
            if lines[at - 1 : at] == [_QP_HEADER + self.eol]:
                at -= 1
            lines[at:at] = [field + self.eol for field in new]
        return lines


class _QuotedPrintable:
    """
    Quoted-printable (RFC 2045 6.7) line by line: every line ending is a
    hard line break, a line longer than L{PIECE} gets a soft break
    between its pieces.
    """

    def __init__(self, eol: bytes) -> None:
        self.eol = eol

    def encode(self, piece: bytes) -> bytes:
        eol = _eol(piece)
        text = piece[: len(piece) - len(eol)] if eol else piece
        # istext=False: a lone CR is =0D; soft breaks come out as b"=\n"
        encoded = binascii.b2a_qp(text, quotetabs=False, istext=False)
        if self.eol != b"\n":
            encoded = encoded.replace(b"\n", self.eol)
        if eol:
            return encoded + eol
        return encoded + b"=" + self.eol

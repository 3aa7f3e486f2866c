# -*- test-case-name: smx.test.test_compactjson -*-
"""
NAME
    smx.compactjson - compact JSON for the records and boxes of each message

SYNOPSIS
    text = dumps(obj)                  # json.dumps(obj, separators=(",", ":"))
    text = dumps(obj, allowNaN=False)  # ... allow_nan=False
    obj = loads(text)                  # json.loads(text), text a str

DESCRIPTION
    C{json.dumps} with any argument makes a L{json.JSONEncoder}, whose
    C{encode} then makes the C encoder: half the cost of encoding an
    envelope, paid for each IBDB record and each AMP argument of plain
    data (L{smx.split.commands.PlainData}), half a dozen per message.
    L{dumps} makes each C encoder once and gives the same text as
    C{json.dumps} with C{separators=(",", ":")} (and C{allow_nan}), or
    calls C{json.dumps} where the C{json} module has no C encoder.

    There is no check for circular references: plain data has none, and
    an object holding itself raises L{RecursionError} (not
    L{ValueError}).  Anything else that is not plain data raises
    L{TypeError}, and NaN or an infinity with C{allowNaN=False} raises
    L{ValueError}, as C{json.dumps} does.

    L{loads} reads a C{str} with the C{json} module's scanner directly
    (C{json.loads} goes through three Python calls to reach it); for text
    the scanner does not take whole (leading or trailing white space, an
    error) it calls C{json.loads}, so its result and its errors are
    those of C{json.loads}.
"""

from __future__ import annotations

import json
from json import encoder as _encoder
from typing import Any, Callable, Dict

_SEPARATORS = (",", ":")


def _make(allowNaN: bool) -> Callable[[Any], str]:
    make = getattr(_encoder, "c_make_encoder", None)
    quote = getattr(_encoder, "c_encode_basestring_ascii", None)
    if make is None or quote is None:
        return lambda obj: json.dumps(obj, allow_nan=allowNaN, separators=_SEPARATORS)
    default = json.JSONEncoder().default
    # (markers, default, encoder, indent, key separator, item separator,
    # sort_keys, skipkeys, allow_nan), as JSONEncoder.iterencode passes them
    encode = make(None, default, quote, None, ":", ",", False, False, allowNaN)

    return lambda obj: "".join(encode(obj, 0))


_dumps = {
    True: _make(True),
    False: _make(False),
}  # type: Dict[bool, Callable[[Any], str]]


def dumps(obj: Any, allowNaN: bool = True) -> str:
    """
    C{json.dumps(obj, allow_nan=allowNaN, separators=(",", ":"))}.
    """
    return _dumps[allowNaN](obj)


_scan = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def loads(text: str) -> Any:
    """
    C{json.loads(text)} for a C{str}.
    """
    try:
        obj, end = _scan(text, 0)
    except StopIteration:
        return json.loads(text)
    if end != len(text):
        return json.loads(text)
    return obj


__all__ = ["dumps", "loads"]

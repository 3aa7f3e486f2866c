# -*- test-case-name: smx.test.test_values -*-
"""
NAME
    smx.values - the values that cross the interfaces of smx

SYNOPSIS
    reply = Reply.fromData({"code": 451, "dsn": "4.3.0", "text": "later"})
    reply.toData()                    # the same plain dict again
    envelope = Envelope.fromData(data)  # raises BadData for garbage

DESCRIPTION
    The shapes that L{smx.interfaces} documents (I{reply}, I{decision},
    I{route}, I{recipient}, I{result}, the I{envelope} of
    C{commitTransaction}, the delivery transaction of C{deliver} and the
    resolved addresses of C{resolveRecipient}) as small frozen value
    types, each with an explicit conversion to and from plain,
    JSON-serialisable data (C{str}, C{int}, C{float}, C{bool}, C{None},
    C{list} and C{dict} with C{str} keys):

        - C{Type.fromData(data)} checks C{data} and builds the value; data
          of the wrong shape raises L{BadData} (a C{ValueError}) naming
          the value and the field, never a C{KeyError} or C{TypeError}
          from deep inside;
        - C{value.toData()} gives the plain data back.

    The components themselves exchange the plain data (C{dict}s), as the
    Interfaces say; these types are where that data is checked and
    converted: at the process boundary of split mode
    (L{smx.split.commands}) every argument and result goes through
    C{fromData}/C{toData} on both sides.

    Forward compatibility: a field a value type does not know (one that a
    newer component adds to an envelope, such as C{requiretls}) is kept,
    if it is plain data, in the value's C{extra} and given back by
    C{toData}, so that a field added to an envelope reaches QMGR without a
    change here.  Known optional fields that are C{None} are left out of
    C{toData}; the components read them with C{dict.get}.

DIAGNOSTICS
    L{BadData}, with a message such as C{envelope: field 'size' must be an
    integer, not 'abc'}.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import (
    Any,
    Callable,
    ClassVar,
    Dict,
    List,
    Mapping,
    Optional,
    Tuple,
    Type,
    TypeVar,
)

#: how deep plain data may nest (lists and dicts in lists and dicts)
MAX_DEPTH = 32


class BadData(ValueError):
    """
    Data given to a C{fromData} does not have the shape of the value.
    """


JSON = Any
_T = TypeVar("_T")
#: a value type (L{_Value} subclass)
_V = TypeVar("_V", bound="_Value")

# The plain-data shapes, as the components exchange them (the wire format
# is a dict): each alias names the value type whose C{toData} gives it and
# whose C{fromData} checks it, so that an annotation tells which shape a
# C{dict} has.

#: plain data of a L{Reply}: C{{"code": 451, "dsn": "4.3.0", "text": ...}}
ReplyData = Dict[str, Any]
#: plain data of a L{Decision}
DecisionData = Dict[str, Any]
#: plain data of a L{Route}
RouteData = Dict[str, Any]
#: plain data of a L{Recipient}
RecipientData = Dict[str, Any]
#: plain data of a L{Result}
ResultData = Dict[str, Any]
#: plain data of an L{Envelope}
EnvelopeData = Dict[str, Any]
#: plain data of a L{DeliveryTransaction}
DeliveryData = Dict[str, Any]
#: plain data of a L{Resolved}
ResolvedData = Dict[str, Any]
#: the client of C{checkSender}/C{checkRecipient}: C{{"address": ..., "name": ...}}
ClientData = Dict[str, Any]
#: a status report (C{status()} of a component: counters, sizes, names)
StatusData = Dict[str, Any]


def checkPlain(value: Any, where: str = "value", depth: int = 0) -> JSON:
    """
    Check that C{value} is plain, JSON-serialisable data.

    @return: C{value} (lists and tuples as lists).
    @raise BadData: it is not, or it nests deeper than L{MAX_DEPTH}.
    """
    if depth > MAX_DEPTH:
        raise BadData("%s: nested deeper than %d" % (where, MAX_DEPTH))
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise BadData("%s: %r is not a finite number" % (where, value))
        return value
    if isinstance(value, (list, tuple)):
        return [checkPlain(v, where, depth + 1) for v in value]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise BadData("%s: key %r is not a string" % (where, k))
            out[k] = checkPlain(v, "%s.%s" % (where, k), depth + 1)
        return out
    raise BadData("%s: %s is not plain data" % (where, type(value).__name__))


# -- field converters -------------------------------------------------------

#: converter -> (kind, argument) for L{_looksRight}: the converters that
#: are not plain functions of this module (choices, nested values)
_KINDS = {}  # type: Dict[Any, Tuple[str, Any]]


def _str(what: str, name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise BadData(
            "%s: field %r must be a string, not %s" % (what, name, _show(value))
        )
    return value


def _int(what: str, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadData(
            "%s: field %r must be an integer, not %s" % (what, name, _show(value))
        )
    return value


def _float(what: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadData(
            "%s: field %r must be a number, not %s" % (what, name, _show(value))
        )
    if not math.isfinite(value):
        raise BadData("%s: field %r must be a finite number" % (what, name))
    return float(value)


def _bool(what: str, name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise BadData(
            "%s: field %r must be true or false, not %s" % (what, name, _show(value))
        )
    return value


def _oneOf(*choices: str) -> Callable[[str, str, Any], str]:
    def convert(what: str, name: str, value: Any) -> str:
        if value not in choices:
            raise BadData(
                "%s: field %r must be one of %s, not %s"
                % (what, name, ", ".join(choices), _show(value))
            )
        return str(value)

    return convert


def _oneOfTagged(*choices: str) -> Callable[[str, str, Any], str]:
    convert = _oneOf(*choices)
    _KINDS[convert] = ("oneOf", frozenset(choices))
    return convert


def _value(cls: Type[_Value]) -> Callable[[str, str, Any], _Value]:
    def convert(what: str, name: str, value: Any) -> _Value:
        return cls.fromData(value, "%s.%s" % (what, name))

    _KINDS[convert] = ("value", cls)
    return convert


def _listOf(cls: Type[_Value]) -> Callable[[str, str, Any], Tuple[_Value, ...]]:
    def convert(what: str, name: str, value: Any) -> Tuple[_Value, ...]:
        if not isinstance(value, (list, tuple)):
            raise BadData(
                "%s: field %r must be a list, not %s" % (what, name, _show(value))
            )
        return tuple(
            cls.fromData(v, "%s.%s[%d]" % (what, name, i)) for i, v in enumerate(value)
        )

    _KINDS[convert] = ("list", cls)
    return convert


def _plain(what: str, name: str, value: Any) -> JSON:
    return checkPlain(value, "%s.%s" % (what, name))


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _mapping(data: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise BadData("%s: must be a mapping, not %s" % (what, _show(data)))
    for key in data:
        if not isinstance(key, str):
            raise BadData("%s: key %s is not a string" % (what, _show(key)))
    return data


#: a field's spec: (converter, required, always written by toData)
_Spec = Tuple[Callable[[str, str, Any], Any], bool, bool]


class _Value:
    """
    The conversions shared by the value types: each declares C{_SPEC}
    (field name -> L{_Spec}) and has an C{extra} field.
    """

    __slots__ = ()
    _SPEC: ClassVar[Dict[str, _Spec]] = {}
    _WHAT: ClassVar[str] = "value"

    @classmethod
    def fromData(cls: Type[_V], data: Any, what: Optional[str] = None) -> _V:
        """
        Build the value from plain data.

        @param what: how to name the value in an error (default: its kind).
        @raise BadData: C{data} does not have the value's shape.
        """
        what = what or cls._WHAT
        data = _mapping(data, what)
        kwargs = {}  # type: Dict[str, Any]
        for name, (convert, required, _) in cls._SPEC.items():
            value = data.get(name)
            if value is None:
                if required:
                    raise BadData("%s: field %r is missing" % (what, name))
                continue
            kwargs[name] = convert(what, name, value)
        extra = {
            k: checkPlain(v, "%s.%s" % (what, k))
            for k, v in data.items()
            if k not in cls._SPEC
        }
        kwargs["extra"] = extra
        try:
            return cls(**kwargs)
        except BadData:
            raise
        except (TypeError, ValueError) as e:  # pragma: no cover - a bug here
            raise BadData("%s: %s" % (what, e))

    def toData(self) -> Dict[str, JSON]:
        """
        @return: the value as plain data (fresh C{dict}s and C{list}s).
        """
        out = {}  # type: Dict[str, JSON]
        for name, (_, _, always) in self._SPEC.items():
            value = getattr(self, name)
            if value is None and not always:
                continue
            out[name] = _toData(value)
        for k, v in getattr(self, "extra").items():
            out[k] = _toData(v)
        return out


def _toData(value: Any) -> JSON:
    if isinstance(value, _Value):
        return value.toData()
    if isinstance(value, (list, tuple)):
        return [_toData(v) for v in value]
    if isinstance(value, dict):
        return {k: _toData(v) for k, v in value.items()}
    return value


def _extra() -> Any:
    return field(default_factory=dict, compare=True, hash=False)


@dataclass(frozen=True, slots=True)
class Reply(_Value):
    """
    An SMTP reply: C{code}, enhanced status code C{dsn} (RFC 3463) and
    the human C{text}.
    """

    code: int
    dsn: str = ""
    text: str = ""
    extra: Dict[str, JSON] = _extra()

    _WHAT = "reply"
    _SPEC = {
        "code": (_int, True, True),
        "dsn": (_str, False, True),
        "text": (_str, False, True),
    }

    def __post_init__(self) -> None:
        if not 200 <= self.code <= 599:
            raise BadData("reply: code %d is not an SMTP reply code" % (self.code,))


#: the actions of an access decision (seed §5.8.3)
ACTIONS = ("none", "ok", "relay", "reject", "error", "discard", "cont", "tempfail")


@dataclass(frozen=True, slots=True)
class Decision(_Value):
    """
    An access-map decision (seed §5.8.3): C{action}, C{quick}, the
    C{reply} of a refusal; the method-specific fields (C{clientName},
    C{resolve}, C{local}, C{relayAllowed}) are in C{extra}.
    """

    action: str = "none"
    quick: bool = False
    reply: Optional[Reply] = None
    extra: Dict[str, JSON] = _extra()

    _WHAT = "decision"
    _SPEC = {
        "action": (_oneOfTagged(*ACTIONS), True, True),
        "quick": (_bool, False, True),
        "reply": (_value(Reply), False, True),
    }


@dataclass(frozen=True, slots=True)
class Route(_Value):
    """
    Where to deliver: C{mailer} (C{esmtp} or C{lmtp}), C{host}, the IP
    C{address} (empty for LMTP over the Unix socket), C{port} (0: the
    default), MX C{preference}.
    """

    mailer: str
    host: str = ""
    address: str = ""
    port: int = 0
    preference: int = 0
    extra: Dict[str, JSON] = _extra()

    _WHAT = "route"
    _SPEC = {
        "mailer": (_str, True, True),
        "host": (_str, False, True),
        "address": (_str, False, True),
        "port": (_int, False, True),
        "preference": (_int, False, True),
    }


@dataclass(frozen=True, slots=True)
class Recipient(_Value):
    """
    An envelope recipient: C{address}, its C{index} in the transaction,
    its DSN parameters, and once resolved its C{routes}.
    """

    address: str
    index: Optional[int] = None
    notify: Optional[str] = None
    orcpt: Optional[str] = None
    routes: Optional[Tuple[Route, ...]] = None
    extra: Dict[str, JSON] = _extra()

    _WHAT = "recipient"
    _SPEC = {
        "address": (_str, True, True),
        "index": (_int, False, False),
        "notify": (_str, False, False),
        "orcpt": (_str, False, False),
        "routes": (_listOf(Route), False, False),
    }


#: the statuses of a delivery result
STATUSES = ("ok", "temp", "perm")


@dataclass(frozen=True, slots=True)
class Result(_Value):
    """
    The result of one delivery attempt for one recipient.
    """

    index: int
    address: str
    status: str
    code: int = 0
    reply: str = ""
    remoteMTA: Optional[str] = None
    where: Optional[str] = None
    extra: Dict[str, JSON] = _extra()

    _WHAT = "result"
    _SPEC = {
        "index": (_int, True, True),
        "address": (_str, True, True),
        "status": (_oneOfTagged(*STATUSES), True, True),
        "code": (_int, False, True),
        "reply": (_str, False, True),
        "remoteMTA": (_str, False, True),
        "where": (_str, False, True),
    }


@dataclass(frozen=True, slots=True)
class Envelope(_Value):
    """
    An accepted SMTPS transaction handed to QMGR
    (L{smx.interfaces.IQueueManager.commitTransaction}).
    """

    id: str
    recipients: Tuple[Recipient, ...]
    session: str = ""
    sender: str = ""
    size: int = 0
    client: str = ""
    received: float = 0.0
    bodyType: str = "7BIT"
    smtputf8: bool = False
    envid: Optional[str] = None
    ret: Optional[str] = None
    contentPending: bool = False
    syncContent: bool = False
    requiretls: Optional[bool] = None
    tlsRequiredNo: Optional[bool] = None
    quarantine: Optional[str] = None
    contentCrc: Optional[int] = None
    extra: Dict[str, JSON] = _extra()

    _WHAT = "envelope"
    _SPEC = {
        "id": (_str, True, True),
        "recipients": (_listOf(Recipient), True, True),
        "session": (_str, False, True),
        "sender": (_str, False, True),
        "size": (_int, False, True),
        "client": (_str, False, True),
        "received": (_float, False, True),
        "bodyType": (_str, False, True),
        "smtputf8": (_bool, False, True),
        "envid": (_str, False, False),
        "ret": (_str, False, False),
        "contentPending": (_bool, False, True),
        "syncContent": (_bool, False, True),
        # MAIL ... REQUIRETLS and the header TLS-Required: No (RFC 8689)
        "requiretls": (_bool, False, False),
        "tlsRequiredNo": (_bool, False, False),
        # a milter's quarantine reason (the recipients are held)
        "quarantine": (_str, False, False),
        # the CRC-32 of a content written to a recycled file (smx.queue.cdb)
        "contentCrc": (_int, False, False),
    }


@dataclass(frozen=True, slots=True)
class DeliveryTransaction(_Value):
    """
    A delivery transaction handed to SMTPC
    (L{smx.interfaces.IDeliveryAgent.deliver}): the delivery id C{id},
    the SMTPS transaction C{ss_ta} whose content is sent, the sender, the
    recipients and the routes to try in order; the envelope's other
    fields (C{smtputf8}, C{ret}, C{envid}, C{requiretls}, ...) as in
    L{Envelope}.
    """

    id: str
    ss_ta: str
    recipients: Tuple[Recipient, ...]
    routes: Tuple[Route, ...] = ()
    sender: str = ""
    size: int = 0
    bodyType: str = "7BIT"
    smtputf8: bool = False
    envid: Optional[str] = None
    ret: Optional[str] = None
    requiretls: Optional[bool] = None
    tlsRequiredNo: Optional[bool] = None
    extra: Dict[str, JSON] = _extra()

    _WHAT = "delivery transaction"
    _SPEC = {
        "id": (_str, True, True),
        "ss_ta": (_str, True, True),
        "recipients": (_listOf(Recipient), True, True),
        "routes": (_listOf(Route), False, True),
        "sender": (_str, False, True),
        "size": (_int, False, True),
        "bodyType": (_str, False, True),
        "smtputf8": (_bool, False, True),
        "envid": (_str, False, False),
        "ret": (_str, False, False),
        "requiretls": (_bool, False, False),
        "tlsRequiredNo": (_bool, False, False),
    }


@dataclass(frozen=True, slots=True)
class Resolved(_Value):
    """
    One final address of C{resolveRecipient}: the C{address}, the
    C{sender} to use (the C{owner-} address of a list, or C{None}), its
    C{routes}, and the C{error} reply when it cannot be delivered.
    """

    address: str
    routes: Tuple[Route, ...] = ()
    sender: Optional[str] = None
    error: Optional[Reply] = None
    extra: Dict[str, JSON] = _extra()

    _WHAT = "resolved address"
    _SPEC = {
        "address": (_str, True, True),
        "routes": (_listOf(Route), False, True),
        "sender": (_str, False, True),
        "error": (_value(Reply), False, True),
    }


def listFromData(cls: Type[_V], data: Any, what: Optional[str] = None) -> List[_V]:
    """
    A C{list} of values of type C{cls} from plain data.

    @raise BadData: C{data} is not a list of such values.
    """
    what = what or cls._WHAT + "s"
    if not isinstance(data, (list, tuple)):
        raise BadData("%s: must be a list, not %s" % (what, _show(data)))
    return [cls.fromData(v, "%s[%d]" % (what, i)) for i, v in enumerate(data)]


def _plainLooksRight(value: Any, depth: int = 0) -> bool:
    """
    L{checkPlain} as a yes or no, without copying: C{True} only for data
    it takes (exact C{dict}, C{list}, C{tuple}, C{str}, ... types; C{False}
    may be wrong only the other way).
    """
    if depth > MAX_DEPTH:
        return False
    t = type(value)
    if t is str or t is int or t is bool or value is None:
        return True
    if t is float:
        return math.isfinite(value)
    if t is dict:
        for k, v in value.items():
            if type(k) is not str or not _plainLooksRight(v, depth + 1):
                return False
        return True
    if t is list or t is tuple:
        for v in value:
            if not _plainLooksRight(v, depth + 1):
                return False
        return True
    return False


def _looksRight(cls: Type[_Value], data: Any) -> bool:
    """
    Does C{data} have the shape of a value of type C{cls}?  A quick
    check that builds nothing and formats no message: C{True} only when
    C{cls.fromData(data)} would succeed (it may say C{False} for some
    data that C{fromData} takes, such as a C{Mapping} that is not a
    C{dict}: L{checked} then asks C{fromData}, which gives the error).
    """
    if type(data) is not dict:
        return False
    spec = cls._SPEC
    for name, (convert, required, _) in spec.items():
        value = data.get(name)
        if value is None:
            if required:
                return False
            continue
        t = type(value)
        if convert is _str:
            if t is not str:
                return False
        elif convert is _int:
            if t is not int:
                return False
        elif convert is _bool:
            if t is not bool:
                return False
        elif convert is _float:
            if not (t is int or (t is float and math.isfinite(value))):
                return False
        else:
            kind, arg = _KINDS.get(convert, ("", None))
            if kind == "oneOf":
                if t is not str or value not in arg:
                    return False
            elif kind == "value":
                if not _looksRight(arg, value):
                    return False
            elif kind == "list":
                if t is not list and t is not tuple:
                    return False
                for v in value:
                    if not _looksRight(arg, v):
                        return False
            else:
                return False
    for k, v in data.items():
        if type(k) is not str:
            return False
        if k not in spec and not _plainLooksRight(v, 1):
            return False
    if cls is Reply and not 200 <= data["code"] <= 599:
        return False
    return True


def checked(cls: Type[_Value], data: _T, what: Optional[str] = None) -> _T:
    """
    Check that C{data} has the shape of a value of type C{cls} and give it
    back unchanged (what crosses a process boundary: the receiver gets
    exactly what the sender sent, as in one process).  Data of the right
    shape is checked without building the value (L{_looksRight}); other
    data goes through C{cls.fromData}, whose L{BadData} names the field.

    @raise BadData: it has not.
    """
    if not _looksRight(cls, data):
        cls.fromData(data, what)
    return data


def checkedList(cls: Type[_Value], data: _T, what: Optional[str] = None) -> _T:
    """
    Like L{checked} for a list of values of type C{cls}.
    """
    t = type(data)
    if t is list or t is tuple:
        for v in data:  # type: ignore[attr-defined]
            if not _looksRight(cls, v):
                break
        else:
            return data
    listFromData(cls, data, what)
    return data


def optionalReply(data: Any, what: str = "reply") -> Optional[Reply]:
    """
    C{None}, or a L{Reply} from plain data (the answer of
    C{sessionOpen} and C{checkAcceptance}).
    """
    return None if data is None else Reply.fromData(data, what)


def replace(value: _T, **changes: Any) -> _T:
    """
    A copy of a value with some fields changed (L{dataclasses.replace}).
    """
    return dataclasses.replace(value, **changes)  # type: ignore[type-var]

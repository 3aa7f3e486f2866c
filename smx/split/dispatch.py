# -*- test-case-name: smx.split.test.test_dispatch -*-
"""
NAME
    smx.split.dispatch - AMP commands and their dispatch, with less work
    per box

SYNOPSIS
    class SessionOpen(FastCommand): ...
    class QuietAMP(LeanDispatch, FastBoxReceiver, amp.AMP): ...

DESCRIPTION
    A relayed message in split mode makes three AMP round trips between
    the processes (SessionOpen, CommitTransaction, Deliver) and sends two
    one-way boxes; each costs some 60 us of CPU, a good part of it
    Twisted's generic bookkeeping:

      - L{FastCommand} parses and makes its boxes from a table of its
        arguments computed once per command class, where L{amp.Command}
        derives each Python name from the wire name (twice per argument
        and box) and copies the box first;
      - L{LeanDispatch} answers a command without AMP's chain of five
        callbacks: parse, call, make the answer (at once, or when the
        responder's L{Deferred} fires), send it.  A responder that raises
        or fails, an answer that cannot be made, a command without
        responder: all go through AMP's own dispatch, from the result
        already obtained (the responder is not called twice), so errors
        are reported exactly as AMP reports them.

    The wire format and every outcome are AMP's; a socketpair round trip
    takes about 50 us instead of 66.
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.protocols import amp
from twisted.python.failure import Failure

from smx.split.boxes import LightBox
from smx._twistedcompat import (
    ampCommandReceived,
    ampResponder,
    ampSendAnswer,
    ampWrapResponder,
    writeDisconnecting,
)

#: per argument: its wire name, its Python name, its L{amp.Argument}, and
#: whether that argument is one value under its own name (so that its
#: C{fromStringProto}/C{toStringProto} can be called directly)
_Table = List[Tuple[bytes, str, Any, bool]]


def _table(arguments: Any) -> _Table:
    table = []  # type: _Table
    for wire, argument in arguments:
        kind = type(argument)
        plain = (
            kind.fromBox is amp.Argument.fromBox and kind.toBox is amp.Argument.toBox
        )
        table.append((wire, wire.replace(b"-", b"_").decode("ascii"), argument, plain))
    return table


def _parse(table: _Table, box: Any, proto: Any) -> Dict[str, Any]:
    objects = {}  # type: Dict[str, Any]
    for wire, name, argument, plain in table:
        if not plain:
            argument.fromBox(wire, box, objects, proto)
            continue
        text = box.get(wire)
        if text is None:
            if not argument.optional:
                raise KeyError(wire)
            objects[name] = None
        else:
            objects[name] = argument.fromStringProto(text, proto)
    return objects


def _make(table: _Table, objects: Dict[str, Any], box: Any, proto: Any) -> Any:
    for wire, name, argument, plain in table:
        if not plain:
            argument.toBox(wire, box, objects, proto)
            continue
        if argument.optional:
            value = objects.get(name)
            if value is None:
                continue
        else:
            value = objects[name]
        box[wire] = argument.toStringProto(value, proto)
    return box


class FastCommand(amp.Command):
    """
    An L{amp.Command} that parses and makes its boxes from tables of its
    arguments and response computed once per class (see the module
    docstring); the same boxes, the same errors.
    """

    #: send the answer at once (L{sendNow}) instead of at the reactor's
    #: next turn: for an answer whose loss costs more than a write
    answerAtOnce = False

    #: its boxes (AMP's, without the check of their keys: see L{LightBox})
    commandType = responseType = LightBox

    #: the tables of the arguments and the response, and the names of
    #: the arguments, made once per command class (L{__init_subclass__})
    _fastTables = ([], [], frozenset())  # type: Tuple[_Table, _Table, frozenset]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        arguments = _table(cls.arguments)
        cls._fastTables = (
            arguments,
            _table(cls.response),
            frozenset(a[1] for a in arguments),
        )

    def __init__(self, **kw: Any) -> None:
        # as amp.Command's, from the table
        self.structured = kw
        forgotten = [
            name
            for _, name, argument, _ in self._fastTables[0]
            if name not in kw and not argument.optional
        ]
        if forgotten:
            raise amp.InvalidSignature(
                "forgot %s for %r" % (", ".join(forgotten), self.commandName)
            )

    @classmethod
    def parseArguments(cls, box: Any, protocol: Any) -> Dict[str, Any]:
        return _parse(cls._fastTables[0], box, protocol)

    @classmethod
    def parseResponse(cls, box: Any, protocol: Any) -> Dict[str, Any]:
        return _parse(cls._fastTables[1], box, protocol)

    @classmethod
    def makeArguments(cls, objects: Dict[str, Any], proto: Any) -> Any:
        arguments, _, names = cls._fastTables
        for name in objects:
            if name not in names:
                raise amp.InvalidSignature("%s is not a valid argument" % (name,))
        return _make(arguments, objects, cls.commandType(), proto)

    @classmethod
    def makeResponse(cls, objects: Dict[str, Any], proto: Any) -> Any:
        return _make(cls._fastTables[1], objects, cls.responseType(), proto)


def sendNow(proto: Any) -> None:
    """
    Write what C{proto}'s transport holds now instead of at the reactor's
    next turn (L{twisted.internet.abstract.FileDescriptor.doWrite}).
    """
    transport: Any = getattr(proto, "transport", None)
    # the bytes a Unix transport of smx.net holds for the end of the turn
    sendTurnBytes = getattr(transport, "sendTurnBytes", None)
    if sendTurnBytes is not None:
        sendTurnBytes()
    doWrite = getattr(transport, "doWrite", None)
    if (
        doWrite is None
        or not getattr(transport, "connected", False)
        or transport.disconnecting
        or writeDisconnecting(transport)
    ):
        return
    # an error is the reactor's to find on its next write
    doWrite()


class LeanDispatch:
    """
    A mixin for L{amp.AMP} (put before it): commands answered without
    AMP's callback chain (see the module docstring).
    """

    #: the command box and what its responder gave, handed from
    #: L{_commandReceived} to L{dispatchCommand} (in the same call)
    _held = None  # type: Any

    def _commandReceived(self, box: Any) -> None:
        entry = None
        if self.locator is self:  # type: ignore[attr-defined]
            entry = ampResponder(self, box[amp.COMMAND])
        if entry is None:
            ampCommandReceived(self, box)
            return
        command, responder = entry
        try:
            result = responder(self, **command.parseArguments(box, self))
        except BaseException:
            self._asAMP(box, command, fail())
            return
        if isinstance(result, Deferred):
            # AMP's last errback too
            unhandled = self.unhandledError  # type: ignore[attr-defined]
            result.addCallbacks(
                self._answer,
                self._failed,
                callbackArgs=(box, command),
                errbackArgs=(box, command),
            ).addErrback(unhandled)
        else:
            self._answer(result, box, command)

    def _answer(self, result: Any, box: Any, command: Any) -> None:
        try:
            answer = command.makeResponse(result, self)
        except BaseException:
            # AMP reports it (BadLocalReturn)
            self._asAMP(box, command, succeed(result))
            return
        tag = box.get(amp.ASK)
        if tag is not None:  # else one-way: nothing to answer
            answer[amp.ANSWER] = tag
            ampSendAnswer(self, answer)
            if getattr(command, "answerAtOnce", False):
                sendNow(self)

    def _failed(self, reason: Failure, box: Any, command: Any) -> None:
        self._asAMP(box, command, fail(reason))

    def _asAMP(self, box: Any, command: Any, result: Deferred) -> None:
        """
        Go on AMP's own way with C{result}, what the responder gave: AMP
        makes the answer or the error box and sends it.
        """
        self._held = (box, command, result)
        ampCommandReceived(self, box)

    def dispatchCommand(self, box: Any) -> Deferred:
        held, self._held = self._held, None
        if held is None or held[0] is not box:
            return amp.AMP.dispatchCommand(self, box)  # type: ignore[arg-type]
        _, command, result = held
        doit = ampWrapResponder(self, lambda **kw: result, command)
        return maybeDeferred(doit, box)


__all__ = ["FastCommand", "LeanDispatch", "sendNow"]

# -*- test-case-name: smx.split.test.test_commands -*-
"""
NAME
    smx.split.commands - the AMP commands between the components of smx

DESCRIPTION
    One AMP command per method of L{smx.interfaces.IQueueManager},
    L{smx.interfaces.IAddressResolver} and
    L{smx.interfaces.IDeliveryAgent}.  Strings and numbers travel as AMP
    strings and integers; the structured values (envelopes, decisions,
    replies, delivery transactions, results) as L{PlainData}: their
    C{toData()} (L{smx.values}) encoded as JSON, cut into pieces of at
    most L{CHUNK} bytes, since one AMP value holds at most 65,535 bytes
    and an envelope with many recipients or a queue listing holds more.

    Which socket carries what (seed §5.4):

        - C{SMTPS_socket} (QMGR listens, SMTPS connects): the
          C{IQueueManager} commands, and L{Acceptance} from QMGR;
        - C{SMAR_socket} (SMAR listens, QMGR and SMTPS connect): the
          C{IAddressResolver} commands;
        - C{SMTPC_socket} (QMGR listens, SMTPC connects): L{Deliver},
          sent by QMGR over the connection SMTPC opened.

    Errors: C{ValueError} (a bad envelope, an unknown control command) and
    C{KeyError} (an unknown transaction) cross as themselves.
"""

from __future__ import annotations

from typing import Any, Dict

from twisted.protocols import amp

from smx import compactjson
from smx.split.dispatch import FastCommand
from smx.values import BadData

#: the most bytes of JSON in one AMP value (an AMP value holds 65,535)
CHUNK = 60000

#: the errors that cross the connection as themselves
ERRORS = {KeyError: b"KEY", ValueError: b"VALUE"}  # type: Dict[Any, bytes]


class PlainData(amp.Argument):
    """
    An AMP argument holding plain data (L{smx.values.checkPlain}) of any
    size: JSON in pieces of at most L{CHUNK} bytes, under the keys
    C{NAME} (the number of pieces), C{NAME.0}, C{NAME.1}, ...
    """

    def toBox(self, name: bytes, strings: Any, objects: Any, proto: Any) -> None:
        obj = objects.get(name.decode("ascii"))
        try:
            # json refuses what is not plain data (and NaN, infinities)
            text = compactjson.dumps(obj, allowNaN=False)
        except (TypeError, ValueError, RecursionError) as e:
            raise BadData("%s: not plain data: %s" % (name.decode("ascii"), e))
        data = text.encode("utf-8")
        pieces = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)] or [b""]
        strings[name] = b"%d" % (len(pieces),)
        for i, piece in enumerate(pieces):
            strings[name + b".%d" % (i,)] = piece

    def fromBox(self, name: bytes, strings: Any, objects: Any, proto: Any) -> None:
        count = strings.get(name)
        if count is None or not count.isdigit():
            raise BadData("%s: missing or bad piece count" % (name.decode("ascii"),))
        pieces = []
        for i in range(int(count)):
            piece = strings.get(name + b".%d" % (i,))
            if piece is None:
                raise BadData("%s: piece %d is missing" % (name.decode("ascii"), i))
            pieces.append(piece)
        try:
            value = compactjson.loads(b"".join(pieces).decode("utf-8"))
        except (ValueError, RecursionError) as e:
            raise BadData("%s: not JSON: %s" % (name.decode("ascii"), e))
        objects[name.decode("ascii")] = value


# -- IQueueManager (SMTPS_socket) -------------------------------------------


class SessionOpen(FastCommand):
    arguments = [(b"sessionId", amp.Unicode()), (b"clientAddress", amp.Unicode())]
    response = [(b"reply", PlainData())]


class SessionClose(FastCommand):
    arguments = [(b"sessionId", amp.Unicode()), (b"clientAddress", amp.Unicode())]
    response = []  # type: ignore[var-annotated]
    # nothing to wait for: one packet less per session
    requiresAnswer = False


class CheckAcceptance(FastCommand):
    arguments = [
        (b"size", amp.Integer()),
        (b"sessionId", amp.Unicode(optional=True)),
    ]
    response = [(b"reply", PlainData())]


class CommitTransaction(FastCommand):
    arguments = [(b"envelope", PlainData())]
    response = []  # type: ignore[var-annotated]
    errors = ERRORS


class ContentCommitted(FastCommand):
    arguments = [(b"transactionId", amp.Unicode()), (b"stored", amp.Boolean())]
    response = []  # type: ignore[var-annotated]
    # SMTPS answered 250 already and waits for nothing: QMGR logs a
    # failure (an unknown transaction) itself
    requiresAnswer = False


class Acceptance(FastCommand):
    """
    QMGR to SMTPS, over the connection SMTPS opened, at its start and when
    the state changes: SMTPS may answer C{checkAcceptance} itself for
    transactions whose C{SIZE=} together fit in C{budget} bytes (0: ask
    QMGR for each).
    """

    arguments = [(b"budget", amp.Integer())]
    response = []  # type: ignore[var-annotated]
    requiresAnswer = False


class Status(FastCommand):
    arguments = []  # type: ignore[var-annotated]
    response = [(b"status", PlainData())]


class ListQueue(FastCommand):
    arguments = []  # type: ignore[var-annotated]
    response = [(b"entries", PlainData())]


class Control(FastCommand):
    arguments = [
        (b"command", amp.Unicode()),
        (b"transactionId", amp.Unicode(optional=True)),
        (b"recipient", PlainData()),
    ]
    response = [(b"result", PlainData())]
    errors = ERRORS


# -- IAddressResolver (SMAR_socket) -----------------------------------------

#: with an answer SMAR may keep: the seconds it keeps it, which the asking
#: process may keep it too (L{smx.split.cache})
KEEP = (b"keep", amp.Float(optional=True))


class CheckClient(FastCommand):
    arguments = [(b"clientAddress", amp.Unicode())]
    response = [(b"decision", PlainData()), KEEP]


class CheckSender(FastCommand):
    arguments = [(b"sender", amp.Unicode()), (b"client", PlainData())]
    response = [(b"decision", PlainData()), KEEP]


class CheckRecipient(FastCommand):
    arguments = [(b"recipient", amp.Unicode()), (b"client", PlainData())]
    response = [(b"decision", PlainData()), KEEP]


class LookupAccess(FastCommand):
    arguments = [(b"tag", amp.Unicode()), (b"key", amp.Unicode())]
    response = [(b"decision", PlainData())]


class ResolveRecipient(FastCommand):
    arguments = [(b"address", amp.Unicode())]
    response = [(b"resolved", PlainData()), KEEP]


class Reload(FastCommand):
    arguments = []  # type: ignore[var-annotated]
    response = []  # type: ignore[var-annotated]


# -- IDeliveryAgent (SMTPC_socket) ------------------------------------------


class Deliver(FastCommand):
    arguments = [(b"transaction", PlainData())]
    response = [(b"results", PlainData())]
    # the results of mail the next hop took: an SMTPC killed before they
    # leave it has them delivered again (RFC 1047), so they do not wait
    # for the other events of the reactor's turn
    answerAtOnce = True


class Ready(FastCommand):
    """
    SMTPC's first command on each connection to QMGR: the deliveries it
    finished while it had no connection (QMGR was restarting), as a list
    of C{{"ss_ta": str, "results": [result, ...]}}; QMGR hands it
    deliveries only after this.
    """

    arguments = [(b"late", PlainData())]
    response = []  # type: ignore[var-annotated]

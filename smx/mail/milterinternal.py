# -*- test-case-name: smx.mail.test.test_milterhooks -*-
"""
The milters of the mail QMGR creates itself (qmgr's C{milters}: bounces,
delay warnings, success notices), Postfix's C{non_smtpd_milters}; see
doc/milter.md.  SMTPS's milters are in L{smx.mail.milterhooks}.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, List, Optional, Sequence, Tuple

from twisted.internet import defer

from smx import versionString
from smx.fastdefer import inlineCallbacks
from smx.interfaces import IMilterClient
from smx.log import Logger
from smx.mail.milterhooks import MessageResult, MilterChain, milterClients
from smx.milter.macros import connectMacros
from smx.milter.modifications import Envelope, Recipient
from smx.milter.protocol import CONTINUE, ConnectInfo
from smx.values import EnvelopeData

if TYPE_CHECKING:  # pragma: no cover
    from smx.config.model import Configuration


class InternalMilters:
    """
    The milters of the mail QMGR creates (qmgr's C{milters}: bounces,
    delay warnings, success notices), as Postfix's C{non_smtpd_milters}
    see its own mail: a session from C{localhost [127.0.0.1]} per
    message, with every stage, and their changes made to what is queued.

    A milter's rejection or discard drops the report (logged); a
    temporary failure, or a milter that failed (its default action),
    lets the report be queued as it is, with a C{sev=WARN} record: QMGR
    has nobody to give a 4xx to, and a lost bounce is worse than an
    unsigned one.
    """

    def __init__(
        self, clients: Sequence[IMilterClient], hostname: str, log: Logger
    ) -> None:
        self.clients = list(clients)
        self.hostname = hostname
        self.log = log

    def __call__(self, content: bytes, envelope: EnvelopeData) -> defer.Deferred:
        """
        @return: a L{Deferred} firing with C{(content, envelope)} to queue,
            or C{None} to drop the message.
        """
        return self._filter(content, envelope)

    @inlineCallbacks
    def _filter(self, content: bytes, envelope: EnvelopeData):
        taId = str(envelope["id"])
        chain = MilterChain(self.clients, taId)
        try:
            name, decision = yield self._envelope(chain, envelope)
            result = None  # type: Optional[MessageResult]
            if decision.action == "continue":
                recipients = tuple(
                    Recipient(r["address"]) for r in envelope["recipients"]
                )
                result = yield chain.message(
                    content, Envelope(envelope["sender"], recipients), {"i": taId}
                )
                name, decision = result.rejectedBy, result.decision or CONTINUE
        finally:
            chain.quit()
        if decision.action == "discard" or (
            decision.action == "reject" and decision.failure is None
        ):
            self.log.notice(
                ss_ta=taId,
                milter=name,
                stat="report dropped by the milter",
                reply=decision.reply().replace("\r\n", " ") or decision.action,
            )
            return None
        if decision.action != "continue" or result is None:
            self.log.warn(
                "InternalMilters",
                ss_ta=taId,
                milter=name,
                stat="report queued unfiltered",
                reply=decision.reply().replace("\r\n", " "),
            )
            return (content, envelope)
        out = dict(envelope)
        out["sender"] = result.envelope.sender
        out["recipients"] = [
            {"address": r.address, "index": i}
            for i, r in enumerate(result.envelope.recipients)
        ]
        if result.quarantine is not None:
            out["quarantine"] = result.quarantine
        for milter, modifications in result.modified:
            self.log.info(
                ss_ta=taId,
                milter=milter,
                modified="/".join(sorted({type(m).__name__ for m in modifications})),
            )
        if not out["recipients"]:
            self.log.notice(ss_ta=taId, stat="no recipients left", nrcpts=0)
            return None
        return (result.content, out)

    @inlineCallbacks
    def _envelope(self, chain: MilterChain, envelope: EnvelopeData):
        """connect, HELO, MAIL, RCPT and DATA; the first refusal."""
        taId = str(envelope["id"])
        info = ConnectInfo("localhost", "inet", "127.0.0.1", 0)
        macros = connectMacros(
            self.hostname,
            "127.0.0.1",
            clientName="localhost",
            daemonName="qmgr",
            version=versionString,
        )
        steps = [
            ("connect", (info, macros)),
            ("helo", (self.hostname, None)),
            ("mail", (envelope["sender"], (), {"i": taId})),
        ]  # type: List[Tuple[str, Tuple[Any, ...]]]
        for r in envelope["recipients"]:
            steps.append(("rcpt", (r["address"], (), None)))
        steps.append(("data", ({"i": taId},)))
        for stage, args in steps:
            name, decision = yield chain.ask(stage, *args)
            if decision.action != "continue":
                return (name, decision)
        return (None, CONTINUE)


def internalMilters(
    cfg: Configuration, reactor: Any, log: Logger
) -> Optional[InternalMilters]:
    """
    The milters of qmgr's C{milters} list, or C{None} when it is empty.
    """
    names = cfg.section("qmgr")["milters"]
    if not names:
        return None
    hostname = cfg.globals["hostname"]
    return InternalMilters(milterClients(cfg, names, reactor, log), hostname, log)

# -*- test-case-name: smx.mail.test.test_smtpc -*-
"""
NAME
    smx.mail.routeloop - one delivery transaction of SMTPC, route by route

SYNOPSIS
    loop = RouteLoop(transaction, sessions, contentStore, logger, daTa)
    results = await loop.run()       # one result per recipient

DESCRIPTION
    A L{RouteLoop} delivers one delivery transaction (see
    L{smx.interfaces.IDeliveryAgent}): it tries the routes SMAR found in
    order (MX preference).  On each route it gets a session from
    C{sessions} (L{smx.mail.smtpc.DeliveryAgent}: a cached one or a new
    connection) and runs one SMTP or LMTP transaction for the recipients
    that have no definitive answer yet; it goes on to the next route for
    those that got a temporary answer (or none), and for an 8-bit body
    that cannot be made 7-bit for a server without 8BITMIME (C{554
    5.6.3}: another MX may offer it), and likewise for a message that
    needs SMTPUTF8 and a server without it (C{553 5.6.7}, RFC 6531:
    received with SMTPUTF8 and an address or a header field is not
    ASCII; it is never downgraded), and for a REQUIRETLS message and a
    server without REQUIRETLS (C{550 5.7.30}, RFC 8689).  With a TLS
    policy (C{destination}), each session is asked for under it: a route
    the policy refuses, or whose session does not meet it, is skipped
    like one that cannot be connected to (L{smx.tlspolicy}).  A route whose session cannot be
    had (no connection, a 4xx/5xx greeting, a failed EHLO or TLS
    handshake) is skipped; if no route gives an answer for a recipient, the last such failure is its
    result (always temporary for a refused greeting).

    Recipients refused with "too many recipients" (C{452 4.5.3}, or
    C{552 5.5.3}) go at once in a new transaction (RFC 5321 4.5.3.1.10),
    on the same session if it can carry one, else on a new connection
    to the same route, until a transaction has no such refusal or gets
    it for its first recipient (the server takes none now: a temporary
    failure).  Each round is shorter than the one before, so it ends.

    A cached session the server closed meanwhile shows as no reply to
    MAIL: nothing of the transaction happened, and it runs again on a
    new connection.

    The content is read from the content store once per transaction; a
    body not declared 8BITMIME is read once more, the first time a
    server's extensions make it matter, to find out whether it has 8-bit
    octets (L{_Content}).  Content with 8-bit octets goes with
    C{BODY=8BITMIME} to a server that offers it; for one that does not it
    is converted to quoted-printable (L{smx.mail.downgrade}, RFC 6152
    section 3) in the reactor's thread pool, into a temporary file, and
    sent as 7-bit with the converted size; content that cannot be
    converted (8-bit headers, multipart/signed, ...) fails with C{554
    5.6.3} and the reason, without MAIL.

CONFIGURATION PARAMETERS
    None of its own (see L{smx.mail.smtpc}).

SECURITY
    Replies are logged in encoded form only (L{smx.log}).

DIAGNOSTICS
    App. C.2 records of each transaction::

      da_sess=C..., da_ta=C..., ss_ta=S..., mail=<a@b>, stat=0, reply=250 ...
      da_sess=C..., da_ta=C..., ss_ta=S..., rcpt=<c@d>, stat=0, reply=250 ...
      da_sess=C..., da_ta=C..., ss_ta=S..., where=final_dot, size=1177, stat=0
      da_sess=C..., da_ta=C..., ss_ta=S..., where=rcpt,
          too_many_recipients=50, status=new transaction

    A converted body is logged before MAIL::

      da_sess=C..., da_ta=C..., ss_ta=S..., body=8bit converted to 7bit,
          size=1302

    LMTP has one final record per recipient (with C{rcpt=}).  A content
    file that cannot be read is logged with C{sev=ERR} and C{deliver};
    its recipients fail with C{451 4.3.0 content missing}.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Optional, Protocol, Tuple

from twisted.internet import threads

from smx.mail.client import TransactionDone, enhancedStatus, tooManyRecipients
from smx.mail.clientprotocol import CHUNK_SIZE, ClientProtocol, SessionError
from smx.mail.downgrade import ConversionError, downgradeFile
from smx.interfaces import IContentStore
from smx.log import Logger
from smx.tlspolicy.policy import REQUIRETLS
from smx.values import DeliveryData, RecipientData, ResultData, RouteData

if TYPE_CHECKING:  # pragma: no cover
    from smx.tlspolicy.destination import Destination

__all__ = ["RouteLoop", "SessionSource", "remoteMTA"]


class SessionSource(Protocol):
    """
    Where a L{RouteLoop} gets its sessions (L{smx.mail.smtpc.DeliveryAgent}).
    """

    async def findSession(
        self,
        route: RouteData,
        cached: bool = True,
        destination: Optional[Destination] = None,
    ) -> Tuple[ClientProtocol, Any, bool]:
        """
        A session for C{route}: a cached one (if C{cached}) or a new
        connection.

        @param destination: the TLS policies of the recipients'
            next-hop domain (L{smx.tlspolicy.destination.Destination}),
            or C{None}: opportunistic TLS.

        @return: the session, its cache key, and whether it was cached.
        @raise SessionError: if no session could be had.
        """

    def doneSession(self, key: Any, proto: ClientProtocol, reusable: bool) -> None:
        """
        The transactions on C{proto} are over: cache it (if C{reusable})
        or close it.
        """


class RouteLoop:
    """
    One delivery transaction, delivered route by route.

    @ivar transaction: the delivery transaction.
    @ivar daTa: its id (C{da_ta} in the records).
    """

    def __init__(
        self,
        transaction: DeliveryData,
        sessions: SessionSource,
        contentStore: IContentStore,
        log: Logger,
        daTa: str,
        reactor: Any = None,
        destination: Optional[Destination] = None,
    ) -> None:
        """
        @param sessions: the sessions to use.
        @param destination: the TLS policies of the recipients' next-hop
            domain (L{smx.tlspolicy.destination.Destination}), or C{None}.
        @param contentStore: an L{smx.interfaces.IContentStore}.
        @param log: the L{smx.log.Logger} of SMTPC.
        @param reactor: a reactor with a thread pool to convert 8-bit
            content in (L{smx.mail.downgrade}); without one it is
            converted in the caller's thread.
        """
        self.reactor = reactor
        self.transaction = transaction
        self.sessions = sessions
        self.contentStore = contentStore
        self.log = log
        self.daTa = daTa
        self.destination = destination
        self._content = _Content(transaction)

    async def run(self) -> List[ResultData]:
        """
        Deliver over the routes in order.

        @return: one result per recipient, in their order (see
            L{smx.interfaces.IDeliveryAgent.deliver}).
        """
        recipients = self.transaction["recipients"]
        final = [None] * len(recipients)  # type: List[Optional[ResultData]]
        pending = list(range(len(recipients)))
        lastError = SessionError(
            "connect", 451, "451 4.4.0 no route to deliver to"
        )  # type: SessionError
        lastRoute = None  # type: Optional[RouteData]
        for route in self.transaction.get("routes") or []:
            if not pending:
                break
            lastRoute = route
            try:
                await self._deliverRoute(route, pending, final)
            except SessionError as e:
                lastError = e
                continue
            except (KeyError, OSError) as e:
                self.log.error(
                    "deliver",
                    da_ta=self.daTa,
                    ss_ta=self.transaction["ss_ta"],
                    error=str(e),
                )
                lastError = SessionError("data", 451, "451 4.3.0 content missing")
                break
            pending = [i for i in pending if _tryElsewhere(final[i])]
        results = []
        for i, rcpt in enumerate(recipients):
            result = final[i]
            if result is None:
                result = _sessionFailure(rcpt, lastError, lastRoute)
            results.append(result)
        return results

    async def _deliverRoute(
        self,
        route: RouteData,
        pending: List[int],
        final: List[Optional[ResultData]],
    ) -> None:
        """
        Deliver to the recipients C{pending} (indexes) over C{route},
        setting their results in C{final}; the rounds of "too many
        recipients" as the module documentation says.

        @raise SessionError: if no session for the first transaction
            could be had.
        @raise KeyError: the content is not in the content store.
        """
        recipients = self.transaction["recipients"]
        mta = remoteMTA(route)
        proto, key, cached = await self.sessions.findSession(
            route, destination=self.destination
        )
        batch = pending
        first = True
        while True:
            addresses = [recipients[i]["address"] for i in batch]
            try:
                done = await self._transaction(proto, addresses)
                if cached and done.mailReply is None and not done.reusable:
                    # the server had closed the cached session: nothing
                    # of this transaction happened; again on a new one
                    proto, key, cached = await self.sessions.findSession(
                        route, cached=False, destination=self.destination
                    )
                    done = await self._transaction(proto, addresses)
            except SessionError:
                if first:
                    raise
                # the rest keep their 452: the next route may take them
                return
            except (KeyError, OSError):
                self.sessions.doneSession(key, proto, False)
                raise
            self._logTransaction(proto, addresses, done)
            for i, result in zip(batch, done.results):
                final[i] = _makeResult(recipients[i], result, mta)
            more = [i for i, r in zip(batch, done.results) if tooManyRecipients(r)]
            if not more or tooManyRecipients(done.results[0]):
                self.sessions.doneSession(key, proto, done.reusable)
                return
            self.log.info(
                da_sess=proto.sessionId,
                da_ta=self.daTa,
                ss_ta=self.transaction.get("ss_ta"),
                where="rcpt",
                too_many_recipients=len(more),
                status="new transaction",
            )
            batch = more
            first = False
            if done.reusable and not proto.lost:
                # a session the server closes meanwhile shows at MAIL
                cached = True
                continue
            proto.quit()
            try:
                proto, key, cached = await self.sessions.findSession(
                    route, cached=False, destination=self.destination
                )
            except SessionError:
                return

    async def _transaction(
        self, proto: ClientProtocol, addresses: List[str]
    ) -> TransactionDone:
        """
        Run one transaction for C{addresses} on C{proto}.

        @raise KeyError: the content is not in the content store.
        """
        transaction = self.transaction
        bodyFile = self.contentStore.open(transaction["ss_ta"])
        try:
            bodyType = self._content.bodyType(proto.machine.extensions, bodyFile)
            smtputf8 = self._content.needsSmtputf8(bodyFile)
        except BaseException:
            bodyFile.close()
            raise
        size = int(transaction.get("size") or 0)
        if bodyType == "8BITMIME" and "8BITMIME" not in proto.machine.extensions:
            try:
                bodyFile, size = await self._content.downgrade(bodyFile, self.reactor)
            except ConversionError as e:
                return _refused(addresses, e.reply)
            bodyType = "7BIT"
            self.log.info(
                da_sess=proto.sessionId,
                da_ta=self.daTa,
                ss_ta=transaction.get("ss_ta"),
                body="8bit converted to 7bit",
                size=size,
            )
        return await proto.transaction(
            transaction.get("sender", ""),
            addresses,
            size,
            bodyType,
            bodyFile,
            smtputf8=smtputf8,
            dsn=self._dsn(addresses),
            requireTLS=bool(transaction.get(REQUIRETLS)) and not proto.machine.lmtp,
        )

    def _dsn(self, addresses: List[str]) -> Any:
        """The DSN parameters (RFC 3461) for the client machine."""
        byAddress = {}  # type: Dict[str, RecipientData]
        for r in self.transaction["recipients"]:
            byAddress.setdefault(r["address"], r)
        return (
            self.transaction.get("ret"),
            self.transaction.get("envid"),
            [
                (byAddress.get(a, {}).get("notify"), byAddress.get(a, {}).get("orcpt"))
                for a in addresses
            ],
        )

    def _logTransaction(
        self, proto: ClientProtocol, addresses: List[str], done: TransactionDone
    ) -> None:
        ssTa = self.transaction.get("ss_ta")
        sender = "<%s>" % (self.transaction.get("sender", ""),)
        if done.mailReply is not None:
            self.log.info(
                da_sess=proto.sessionId,
                da_ta=self.daTa,
                ss_ta=ssTa,
                mail=sender,
                stat=_stat(done.mailReply.code),
                reply=done.mailReply.text,
            )
        finals = []
        for address, reply, result in zip(addresses, done.rcptReplies, done.results):
            if reply is not None:
                self.log.info(
                    da_sess=proto.sessionId,
                    da_ta=self.daTa,
                    ss_ta=ssTa,
                    rcpt="<%s>" % (address,),
                    stat=_stat(reply.code),
                    reply=reply.text,
                )
            if reply is None or result["where"] not in ("rcpt", "mail"):
                finals.append((address, result))
        if not finals:
            return
        if proto.machine.lmtp:
            for address, result in finals:
                self._logFinal(proto, result, address)
        else:
            self._logFinal(proto, finals[0][1], None)

    def _logFinal(
        self, proto: ClientProtocol, result: ResultData, address: Optional[str]
    ) -> None:
        ok = result["status"] == "ok"
        self.log.info(
            da_sess=proto.sessionId,
            da_ta=self.daTa,
            ss_ta=self.transaction.get("ss_ta"),
            rcpt=None if address is None else "<%s>" % (address,),
            where=result["where"],
            size=self.transaction.get("size"),
            stat=0 if ok else result["code"],
            reply=None if ok and address is None else result["reply"],
        )


def remoteMTA(route: Optional[RouteData]) -> Optional[str]:
    """
    @return: the name of the next hop of C{route} for a DSN's
        C{Remote-MTA} (C{localhost} for local LMTP), or C{None}.
    """
    if route is None:
        return None
    if route.get("mailer") == "lmtp":
        return route.get("host") or "localhost"
    return route.get("host") or route.get("address") or None


def _sessionFailure(
    rcpt: RecipientData, e: SessionError, route: Optional[RouteData]
) -> ResultData:
    """The result of a recipient no session gave an answer for."""
    code = e.code or 451
    # a refused greeting is no verdict on the recipient: always retry
    status = "perm" if code >= 500 and e.where != "greeting" else "temp"
    text = e.reply
    if not text[:3].isdigit():
        text = "%d 4.4.2 %s" % (code, text)
    return {
        "index": rcpt["index"],
        "address": rcpt["address"],
        "status": status,
        "code": code,
        "reply": text,
        "remoteMTA": remoteMTA(route) if e.where != "connect" else None,
        "where": e.where if e.where in ("connect", "greeting") else "ehlo",
    }


class _Content:
    """
    The content of one delivery transaction and what SMTPC found out
    about it.

    @ivar transaction: the delivery transaction (see L{IDeliveryAgent}).
    @ivar eightBit: does the content have octets above 127?  C{None}
        until a server makes it matter.
    """

    def __init__(self, transaction: DeliveryData) -> None:
        self.transaction = transaction
        self.declared = (transaction.get("bodyType") or "7BIT").upper()
        self.eightBit = None  # type: Optional[bool]
        self.conversionError = None  # type: Optional[ConversionError]
        self.utf8 = None  # type: Optional[bool]

    def needsSmtputf8(self, bodyFile: Any) -> bool:
        """
        Does the message need SMTPUTF8 (RFC 6531)?  Only one received with
        it (the envelope's C{smtputf8}) whose addresses or header are not
        all ASCII; the header is read once (and C{bodyFile} rewound).
        """
        if not self.transaction.get("smtputf8"):
            return False
        if self.utf8 is None:
            t = self.transaction
            addresses = [t.get("sender") or ""]
            addresses += [r["address"] for r in t.get("recipients") or []]
            self.utf8 = not all(a.isascii() for a in addresses)
            if not self.utf8:
                self.utf8 = _headerHasEightBit(bodyFile)
                bodyFile.seek(0)
        return self.utf8

    def bodyType(self, extensions: Dict[str, str], bodyFile: Any) -> str:
        """
        The body type of MAIL for a server offering C{extensions}:
        C{"8BITMIME"} for content with 8-bit octets (declared or not),
        C{"7BIT"} otherwise (RFC 6152).  A body declared 8BITMIME goes as
        declared to a server that offers it; otherwise the content is
        read once (and C{bodyFile} rewound): a body declared 8-bit that
        is 7-bit can go to any server, one with 8-bit octets not declared
        gets C{BODY=8BITMIME} or, without the extension, the 5.6.3
        failure of L{smx.mail.client.ClientMachine.startTransaction}.
        """
        if self.declared == "8BITMIME" and "8BITMIME" in extensions:
            return "8BITMIME"
        if self.eightBit is None:
            self.eightBit = _hasEightBit(bodyFile)
            bodyFile.seek(0)
        return "8BITMIME" if self.eightBit else "7BIT"

    async def downgrade(self, bodyFile: Any, reactor: Any) -> Tuple[Any, int]:
        """
        The content made 7-bit (L{smx.mail.downgrade}) for a server
        without 8BITMIME, in C{reactor}'s thread pool if it has one;
        C{bodyFile} is closed.  A refusal is remembered: the content is
        not converted again for the next route.

        @return: a file with the converted content and its size.
        @raise ConversionError: the content cannot be converted.
        @raise OSError: the content cannot be read.
        """
        try:
            if self.conversionError is not None:
                raise self.conversionError
            getThreadPool = getattr(reactor, "getThreadPool", None)
            if getThreadPool is None:
                return downgradeFile(bodyFile)
            return await threads.deferToThreadPool(
                reactor, getThreadPool(), downgradeFile, bodyFile
            )
        except ConversionError as e:
            self.conversionError = e
            raise
        finally:
            bodyFile.close()


def _refused(addresses: List[str], reply: str) -> TransactionDone:
    """
    The transaction that did not happen: content that cannot be made
    7-bit for a server without 8BITMIME (C{554 5.6.3}; the session stays
    usable).
    """
    results = [
        {"status": "perm", "code": 554, "reply": reply, "where": "mail"}
        for _ in addresses
    ]
    return TransactionDone(results, None, [None] * len(addresses), True)


def _hasEightBit(bodyFile: Any) -> bool:
    while True:
        chunk = bodyFile.read(CHUNK_SIZE)
        if not chunk:
            return False
        if not chunk.isascii():
            return True


def _headerHasEightBit(bodyFile: Any) -> bool:
    tail = b""
    while True:
        chunk = bodyFile.read(CHUNK_SIZE)
        if not chunk:
            return not tail.isascii()
        data = tail + chunk
        end = data.find(b"\n\n")
        crlf = data.find(b"\n\r\n")
        if crlf >= 0 and (end < 0 or crlf < end):
            end = crlf
        if end >= 0:
            return not data[:end].isascii()
        if not data.isascii():
            return True
        tail = data[-2:]


def _tryElsewhere(result: Optional[ResultData]) -> bool:
    """
    Does a recipient with this result go on to the next route: no
    result, a temporary failure, or a server without 8BITMIME for an
    8-bit body or without SMTPUTF8 for a message that needs it (another
    MX may offer it; the 5.6.3 or 5.6.7 failure stands if none does)?
    """
    if result is None or result["status"] == "temp":
        return True
    return result["where"] == "mail" and enhancedStatus(result["reply"]) in (
        "5.6.3",
        "5.6.7",
        "5.7.30",
    )


def _stat(code: int) -> int:
    return 0 if 200 <= code < 300 else code


def _makeResult(
    rcpt: RecipientData, result: ResultData, mta: Optional[str]
) -> ResultData:
    made = {
        "index": rcpt["index"],
        "address": rcpt["address"],
        "status": result["status"],
        "code": result["code"],
        "reply": result["reply"],
        "remoteMTA": mta,
        "where": result["where"],
    }
    if result.get("dsnPassed"):
        # the next hop took NOTIFY (RFC 3461): it reports success
        made["dsnPassed"] = True
    return made

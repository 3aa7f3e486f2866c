# -*- test-case-name: smx.split.test.test_resolver -*-
"""
NAME
    smx.split.resolver - SMAR over C{SMAR_socket}: its AMP server and the
    proxy QMGR and SMTPS use

SYNOPSIS
    port = listenSocket(reactor, path, resolverFactory(resolver))  # SMAR
    resolver = AddressResolverProxy(reactor, path, waitForServer=10)
    resolver.startService()
    resolver.checkClient("192.0.2.1")              # IAddressResolver

DESCRIPTION
    L{AddressResolverProxy} provides L{smx.interfaces.IAddressResolver}
    by calling the address resolver of another process over AMP;
    L{ResolverServer} answers with the in-process resolver.  Decisions
    and resolved addresses are checked and converted with L{smx.values}
    on both sides.

    When SMAR cannot be reached within C{waitForServer}, a check is a
    C{tempfail} decision (451 4.3.0, as a map that cannot answer now,
    seed §5.8.3) and C{resolveRecipient} fails, which QMGR treats as a
    temporary failure of the recipient (it is tried again later).

DIAGNOSTICS
    A call that fails because SMAR is unreachable is logged with
    C{sev=WARN} and the call's name.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from twisted.application import service
from twisted.internet import defer
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure
from zope.interface import implementer

from smx._twistedcompat import succeeded
from smx.interfaces import IAddressResolver
from smx.log import Logger
from smx.maps.resolver import cacheKey
from smx.split import commands as c
from smx.split.cache import AnswerCache, keptFor
from smx.split.peer import PeerConnection, QuietAMP
from smx.values import Decision, Reply, Resolved, checked, checkedList, checkPlain

#: the reply of a check while SMAR cannot be reached
UNAVAILABLE = Reply(451, "4.3.0", "Temporary failure, try again later")


def _decision(value: Any) -> Dict[str, Any]:
    return {"decision": checked(Decision, value)}


class ResolverServer(QuietAMP):
    """
    A connection of QMGR or SMTPS to SMAR: answers the
    L{IAddressResolver} commands with C{resolver}.
    """

    def __init__(self, resolver: IAddressResolver) -> None:
        QuietAMP.__init__(self)
        self.resolver = resolver

    def _kept(self, answer: Dict[str, Any], call: str, *args: Any) -> Any:
        answer["keep"] = keptFor(self.resolver, call, *args)
        return answer

    @c.CheckClient.responder
    def checkClient(self, clientAddress: str) -> Any:
        d = defer.maybeDeferred(self.resolver.checkClient, clientAddress)
        return d.addCallback(_decision).addCallback(
            self._kept, "checkClient", clientAddress
        )

    @c.CheckSender.responder
    def checkSender(self, sender: str, client: Any) -> Any:
        client = checkPlain(client, "client")
        d = defer.maybeDeferred(self.resolver.checkSender, sender, client)
        return d.addCallback(_decision).addCallback(
            self._kept, "checkSender", sender, client
        )

    @c.CheckRecipient.responder
    def checkRecipient(self, recipient: str, client: Any) -> Any:
        client = checkPlain(client, "client")
        d = defer.maybeDeferred(self.resolver.checkRecipient, recipient, client)
        return d.addCallback(_decision).addCallback(
            self._kept, "checkRecipient", recipient, client
        )

    @c.LookupAccess.responder
    def lookupAccess(self, tag: str, key: str) -> Any:
        d = defer.maybeDeferred(self.resolver.lookupAccess, tag, key)
        return d.addCallback(_decision)

    @c.ResolveRecipient.responder
    def resolveRecipient(self, address: str) -> Any:
        d = defer.maybeDeferred(self.resolver.resolveRecipient, address)
        d.addCallback(lambda items: {"resolved": checkedList(Resolved, items)})
        return d.addCallback(self._kept, "resolveRecipient", address)

    @c.Reload.responder
    def reload(self) -> Any:
        d = defer.maybeDeferred(self.resolver.reload)
        return d.addCallback(lambda _: {})


def resolverFactory(resolver: IAddressResolver) -> Any:
    """
    The factory of SMAR's C{SMAR_socket}.
    """
    factory = Factory.forProtocol(lambda: ResolverServer(resolver))  # type: ignore[arg-type]
    factory.noisy = False
    return factory


@implementer(IAddressResolver)
class AddressResolverProxy(service.MultiService):
    """
    SMAR in another process (see the module docstring).

    @ivar peer: the L{PeerConnection} to C{SMAR_socket}.
    """

    name = "smar proxy"  # type: ignore[assignment]

    def __init__(
        self,
        reactor: Any,
        path: str,
        waitForServer: float,
        logger: Optional[Logger] = None,
    ) -> None:
        service.MultiService.__init__(self)
        self.logger = logger or Logger("smar")
        self.peer = PeerConnection(
            reactor, path, QuietAMP, waitForServer, "smar", self.logger
        )
        self.peer.setServiceParent(self)
        self.cache = AnswerCache(reactor)

    def _kept(self, key: Any) -> Any:
        """
        The answer kept under C{key}, but only while SMAR is connected:
        without SMAR the checks fail as they would without a cache.
        """
        if key is None or self.peer.protocol is None:
            return None
        return self.cache.get(key)

    def _remember(self, answer: Any, key: Any, keep: Optional[float]) -> Any:
        if key is not None:
            self.cache.put(key, answer, keep)
        return answer

    def _check(
        self,
        call: str,
        command: Any,
        extra: Dict[str, Any],
        cacheAs: Any = None,
        **kw: Any,
    ) -> Any:
        hit = self._kept(cacheAs)
        if hit is not None:
            return succeeded(hit)
        d = self.peer.callRemote(command, idempotent=True, **kw)
        d.addCallback(
            lambda r: self._remember(
                checked(Decision, r["decision"]), cacheAs, r.get("keep")
            )
        )

        def unavailable(reason: Failure) -> Dict[str, Any]:
            self.logger.warn(
                "AddressResolverProxy." + call, peer="smar", error=str(reason.value)
            )
            decision = Decision("tempfail", reply=UNAVAILABLE).toData()
            decision.update(extra)
            return decision

        return d.addErrback(unavailable)

    def checkClient(self, clientAddress):
        return self._check(
            "checkClient",
            c.CheckClient,
            {"clientName": None, "resolve": "no"},
            cacheKey("checkClient", clientAddress),
            clientAddress=clientAddress,
        )

    def checkSender(self, sender, client):
        return self._check(
            "checkSender",
            c.CheckSender,
            {},
            cacheKey("checkSender", sender, client),
            sender=sender,
            client=client,
        )

    def checkRecipient(self, recipient, client):
        return self._check(
            "checkRecipient",
            c.CheckRecipient,
            {"local": False, "relayAllowed": False},
            cacheKey("checkRecipient", recipient, client),
            recipient=recipient,
            client=client,
        )

    def lookupAccess(self, tag, key):
        return self._check("lookupAccess", c.LookupAccess, {}, tag=tag, key=key)

    def resolveRecipient(self, address):
        key = cacheKey("resolveRecipient", address)
        hit = self._kept(key)
        if hit is not None:
            return succeeded(hit)
        d = self.peer.callRemote(c.ResolveRecipient, idempotent=True, address=address)
        return d.addCallback(
            lambda r: self._remember(
                checkedList(Resolved, r["resolved"]), key, r.get("keep")
            )
        )

    def forget(self) -> None:
        """Empty the cache of SMAR's answers (SIGUSR1: maps reloaded)."""
        self.cache.clear()

    def reload(self):
        self.forget()
        d = self.peer.callRemote(c.Reload)
        d.addErrback(
            lambda f: self.logger.warn(
                "AddressResolverProxy.reload", peer="smar", error=str(f.value)
            )
        )
        return d

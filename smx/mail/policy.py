# -*- test-case-name: smx.mail.test.test_policy -*-
"""
The access decisions SMTPS makes for one session (seed §5.8.3, §5.11.2,
§6.3-§6.5, §5.9 items 4c, 4d, 4g, 18e, 19b), asking L{IAddressResolver}.

With the C{access} flag the client (C{cltaddr:}, C{cltname:}, ...), the
sender (C{from:}) and every recipient (C{to:}) are looked up:

  - C{error:}/C{reject} (and a temporary lookup failure) reject at the
    stage they were found, except that with C{delay_checks} a rejection
    of the client or the sender waits until RCPT, where a C{to:} entry
    C{quick:ok} or C{quick:relay} overrides it; C{quick:error} always
    rejects at once.
  - C{discard} at connect discards every transaction, at MAIL the
    transaction, at RCPT the recipient (C{quick:discard}: the
    transaction).
  - C{cltaddr:} C{quick:relay} skips every other check and allows
    relaying; C{quick:ok} skips the rejections of the other checks but
    not the relay decision.

Relaying (a recipient that is not local) is allowed only by: a C{to:}
C{relay} entry, a C{cltaddr:} C{relay} entry (both need C{access}), a
local domain (C{lmtp:} in the mailertable) unless
C{lmtp_does_not_imply_relaying}, a verified client certificate with
C{allow_relaying_if_verified} or, with C{check_access_map_for_relaying},
a C{certissuer:} entry C{relay} (or C{cont} and a C{certsubject:} entry
C{relay}), AUTH with a mechanism in C{trusted_mechs} (every offered
mechanism when the option is not set; see L{smx.mail.smtps}), and a client
address in C{relay_clients} (C{smtps -C address}, seed §3.2.1; it needs no
C{access} and skips no other check).

Recipients are normalised before all this (L{effectiveAddress}): a percent
hack, bang path or quoted C{@} is judged by the destination it names.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Dict, Iterable, Optional, Tuple

from twisted.internet import defer

from smx.fastdefer import inlineCallbacks
from smx.mail.address import effectiveAddress

Reply = Dict[str, Any]

REJECTED = {"code": 550, "dsn": "5.7.0", "text": "Rejected"}
RELAY_DENIED = {"code": 550, "dsn": "5.7.1", "text": "Relaying denied"}
TEMPFAIL = {"code": 451, "dsn": "4.3.0", "text": "Temporary lookup failure"}


def _sameAddress(address: str, addresses: Iterable[str]) -> bool:
    """
    Whether C{address} is one of C{addresses} (C{::1} and C{0:0::1} are
    the same; an IPv4-mapped IPv6 address is its IPv4 address).
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for other in addresses:
        try:
            if ipaddress.ip_address(other) == ip:
                return True
        except ValueError:
            continue
    return False


def decisionReply(decision: Dict[str, Any]) -> Optional[Reply]:
    """
    The reply a rejecting decision carries (C{reject} → 550 5.7.0), or
    C{None} if it does not reject.
    """
    action = decision.get("action")
    if action == "reject":
        return decision.get("reply") or REJECTED
    if action == "error":
        return decision.get("reply") or REJECTED
    if action == "tempfail":
        return decision.get("reply") or TEMPFAIL
    return None


class SessionPolicy:
    """
    The access state of one SMTP session.

    @ivar clientName: the verified client host name (C{access} only).
    @ivar relayClient: relaying is allowed for the whole session.
    @ivar discardSession: every transaction is discarded.
    @ivar discardTransaction: the current transaction is discarded.
    @ivar relayReason: why relaying is allowed (C{"relay_clients"},
        C{"cltaddr"}, C{"cert"},
        C{"auth"}), for the log.
    """

    def __init__(
        self,
        resolver: Any,
        clientAddress: str,
        hostname: str,
        *,
        access: bool,
        delayChecks: bool,
        lmtpImpliesRelaying: bool,
        allowRelayingIfVerified: bool,
        checkAccessMapForRelaying: bool,
        trustedMechanisms: Tuple[str, ...],
        relayClients: Iterable[str],
    ) -> None:
        """
        The settings are those of the C{smtps} section
        (L{smx.mail.listener.ServerSettings}).

        @param trustedMechanisms: the AUTH mechanisms that allow relaying.
        @param relayClients: IP addresses of clients that may relay
            (C{relay_clients}, C{smtps -C}).
        """
        self.resolver = resolver
        self.clientAddress = clientAddress
        self.hostname = hostname
        self.access = access
        self.delayChecks = delayChecks
        self.lmtpImpliesRelaying = lmtpImpliesRelaying
        self.allowRelayingIfVerified = allowRelayingIfVerified
        self.checkAccessMapForRelaying = checkAccessMapForRelaying
        self.trustedMechanisms = frozenset(m.upper() for m in trustedMechanisms)
        self.clientName = None  # type: Optional[str]
        self.relayClient = False
        self.relayReason = None  # type: Optional[str]
        self.skipChecks = False
        self.skipRejections = False
        self.discardSession = False
        self.discardTransaction = False
        self._clientDelayed = None  # type: Optional[Reply]
        self._senderDelayed = None  # type: Optional[Reply]
        if relayClients and _sameAddress(clientAddress, relayClients):
            self._setRelay("relay_clients")

    def _client(self) -> Dict[str, Any]:
        flags = [] if self.lmtpImpliesRelaying else ["lmtp_does_not_imply_relaying"]
        return {
            "address": self.clientAddress,
            "name": self.clientName,
            "relay": self.relayClient,
            "flags": flags,
        }

    # -- connection -----------------------------------------------------

    @inlineCallbacks
    def checkConnection(self):
        """
        @return: a L{Deferred} firing with a I{reply} to refuse the session,
            or C{None}.
        """
        if not self.access:
            return None
        decision = yield self.resolver.checkClient(self.clientAddress)
        self.clientName = decision.get("clientName")
        action = decision.get("action")
        quick = bool(decision.get("quick"))
        if action == "relay" or decision.get("relayClient"):
            self._setRelay("cltaddr")
            if quick and action == "relay":
                self.skipChecks = True
        if action == "ok" and quick:
            self.skipRejections = True
        if action == "discard":
            self.discardSession = True
        reply = decisionReply(decision)
        if reply is not None:
            if self.delayChecks and not quick and action != "tempfail":
                self._clientDelayed = reply
            else:
                return reply
        return None

    def _setRelay(self, reason: str) -> None:
        if not self.relayClient:
            self.relayClient = True
            self.relayReason = reason

    # -- TLS and AUTH -----------------------------------------------------

    @inlineCallbacks
    def tlsEstablished(self, info: Dict[str, Any]):
        """
        A TLS handshake finished; C{info} as L{smx.mail.tls.tlsInfo}.
        Decides relaying by client certificate.
        """
        if info.get("verify") != "OK":
            return None
        if self.allowRelayingIfVerified:
            self._setRelay("cert")
            return None
        if self.checkAccessMapForRelaying and self.access:
            issuer = yield self.resolver.lookupAccess("certissuer", info["issuer"])
            action = issuer.get("action")
            if action == "relay":
                self._setRelay("certissuer")
            elif action == "cont":
                subject = yield self.resolver.lookupAccess(
                    "certsubject", info["subject"]
                )
                if subject.get("action") == "relay":
                    self._setRelay("certsubject")
        return None

    def authenticated(self, mechanism: str) -> None:
        """A client authenticated with C{mechanism}."""
        if mechanism.upper() in self.trustedMechanisms:
            self._setRelay("auth")

    # -- transaction ----------------------------------------------------

    def resetTransaction(self) -> None:
        """RSET, a new MAIL or the end of a transaction."""
        self._senderDelayed = None
        self.discardTransaction = self.discardSession

    @inlineCallbacks
    def checkSender(self, sender: str):
        """
        @return: a L{Deferred} firing with a rejecting I{reply} or C{None}.
        """
        self.resetTransaction()
        if not self.access or self.skipChecks:
            return None
        decision = yield self.resolver.checkSender(sender, self._client())
        if decision.get("action") == "discard":
            self.discardTransaction = True
            return None
        reply = decisionReply(decision)
        if reply is None or (self.skipRejections and decision["action"] != "tempfail"):
            return None
        if self.delayChecks and not decision.get("quick"):
            self._senderDelayed = reply
            return None
        return reply

    @inlineCallbacks
    def checkRecipient(self, mailbox: str):
        """
        @param mailbox: the forward path as parsed (without brackets).
        @return: a L{Deferred} firing with C{(reply, address, discard)}: a
            rejecting I{reply} or C{None}, the normalised address to queue,
            and whether this recipient is to be dropped silently.
        """
        address = effectiveAddress(mailbox)
        postmaster = "@" not in address
        if postmaster:
            # <postmaster> (RFC 5321 §4.5.1) is always local
            address = "%s@%s" % (address, self.hostname)
        elif address.startswith("@") or address.endswith("@"):
            return (RELAY_DENIED, address, False)
        decision = yield self.resolver.checkRecipient(address, self._client())
        action = decision.get("action")
        quick = bool(decision.get("quick"))
        local = bool(decision.get("local"))
        reply = decisionReply(decision)
        if self.access and not self.skipChecks:
            override = quick and action in ("ok", "relay")
            if not override and not self.skipRejections:
                delayed = self._clientDelayed or self._senderDelayed
                if delayed is not None:
                    return (delayed, address, False)
            if reply is not None and not (self.skipRejections and action != "tempfail"):
                return (reply, address, False)
            if action == "discard":
                if quick:
                    self.discardTransaction = True
                return (None, address, True)
        elif reply is not None and (local or action == "tempfail"):
            # not the access map: a local user that does not exist
            return (reply, address, False)
        if not postmaster and not self._relayAllowed(decision, action, local):
            return (RELAY_DENIED, address, False)
        return (None, address, False)

    def _relayAllowed(self, decision: Dict[str, Any], action: Any, local: bool) -> bool:
        if self.relayClient:
            return True
        if self.access and action == "relay":
            return True
        if local:
            return self.lmtpImpliesRelaying
        return bool(self.access and decision.get("relayAllowed"))

# -*- test-case-name: smx.test.test_interfaces -*-
"""
The contracts between the components of smx (seed README §1.4, §10).

Every component is defined here by a zope Interface and implemented by a
provider that the tests check with C{verifyObject}.  The interfaces are
designed so that a call can cross a process boundary: every method that may
do I/O returns a L{Deferred}, and every argument and result is built from
plain, serialisable values (C{str}, C{bytes}, C{int}, C{float}, C{bool},
C{None}, and C{list}/C{dict} of those).  In split mode an AMP proxy provides
the same Interface as the in-process object, so no component needs to know
how it is deployed.

Shared value shapes
===================

B{reply}: a C{dict} C{{"code": 451, "dsn": "4.3.0", "text": "..."}}: an SMTP
reply code, its enhanced status code (RFC 3463) and the human text.

B{decision} (an access-map result, seed §5.8.3): a C{dict} with
  - C{"action"}: one of C{"none"} (no entry matched), C{"ok"}, C{"relay"},
    C{"reject"}, C{"error"}, C{"discard"}, C{"cont"}, C{"tempfail"} (a map or
    DNS lookup failed temporarily);
  - C{"quick"}: C{True} if the right-hand side carried C{quick:};
  - C{"reply"}: a I{reply} for C{"reject"}, C{"error"} and C{"tempfail"},
    else C{None};
  - optional extra keys documented by the method that returns it (for
    example C{"clientName"}, C{"local"}).

B{route}: a C{dict} C{{"mailer": "esmtp" | "lmtp", "host": str,
"address": str, "port": int, "preference": int}}; C{address} is an IP
address literal (empty for C{lmtp} over the Unix socket).

B{recipient}: a C{dict} C{{"address": str, "index": int}} plus, once
resolved, C{"routes": [route, ...]}.

B{result} (of one delivery attempt for one recipient): a C{dict}
C{{"index": int, "address": str, "status": "ok" | "temp" | "perm",
"code": int, "reply": str, "remoteMTA": str | None,
"where": "connect" | "greeting" | "ehlo" | "mail" | "rcpt" | "data" |
"final_dot"}}.
"""

from zope.interface import Attribute, Interface


class IContentStore(Interface):
    """
    CDB, the content database (seed §4.1, §10): message contents as files in
    the sixteen directories C{0}-C{9}, C{A}-C{F} under C{CDB_base_directory},
    named by the SMTPS transaction id.

    This store is shared through the file system: SMTPS writes, QMGR and
    SMTPC read, and so it is used as a library in every process rather
    than called over a socket.
    """

    def createWriter(transactionId):
        """
        Start storing the content of a new transaction.

        @param transactionId: the SMTPS transaction id (C{S...}, App. C.1).
        @type transactionId: C{str}
        @return: a writer with C{write(data: bytes)}, C{commit() -> Deferred}
            (fires once the file and its directory are on stable storage,
            errbacks with C{OSError} on a full disk) and C{abort()} (removes
            the partial file).
        """

    def open(transactionId):
        """
        Open stored content for reading.

        @param transactionId: the SMTPS transaction id.
        @return: a binary file object positioned at the start.
        @raise KeyError: if no content is stored under C{transactionId}.
        """

    def path(transactionId):
        """
        @return: the file name C{transactionId} is (or would be) stored
            under, a C{str}.
        """

    def remove(transactionId):
        """
        Remove the content of a finished transaction.  Removing content
        that does not exist is not an error.
        """

    def transactionIds():
        """
        @return: a C{list} of the ids of every stored content, for recovery
            and C{recover-from-log} (seed §6.10.2).
        """


class IQueueManager(Interface):
    """
    QMGR, the queue manager (seed §5.7, §10).  SMTPS asks it whether a
    client may connect and hands it accepted envelopes; the control program
    asks it for status and changes.
    """

    def sessionOpen(sessionId, clientAddress):
        """
        A client connected to SMTPS: apply the incoming connection limits
        (C{smtps_max_connection_rate}, C{smtps_max_open_connections}, the
        C{icr:} and C{ios:} entries of the conf map, seed §5.7.1).

        @param sessionId: the SMTPS session id.
        @param clientAddress: the client's IP address as text.
        @return: a L{Deferred} firing with C{None} to accept or a I{reply}
            (4xx) to refuse the session.
        """

    def sessionClose(sessionId, clientAddress):
        """
        The SMTPS session C{sessionId} ended.  Returns nothing.
        """

    def checkAcceptance(size, sessionId=None):
        """
        May a new transaction of about C{size} bytes be accepted now?  Called
        at MAIL; considers the free disk space (C{min_disk_space},
        C{ok_disk_space}, measured now, less the sizes of the transactions
        in flight) and whether AQ and IQDB have room.  An accepted C{size}
        is reserved for the session until its envelope is committed, its
        next C{checkAcceptance} or L{sessionClose}.

        @param size: the C{SIZE=} the client declared, or 0.
        @param sessionId: the SMTPS session id, or C{None}.
        @return: a L{Deferred} firing with C{None} or a I{reply} (452 4.3.1
            for a short disk, 451/452 for a full queue).
        """

    def commitTransaction(envelope):
        """
        Take responsibility for an accepted transaction whose content is
        committed to the content store, or (C{"contentPending"}) is being
        committed at the same time.

        @param envelope: a C{dict} with C{"id"} (SMTPS transaction id),
            C{"session"} (SMTPS session id), C{"sender"} (the reverse path
            without angle brackets, C{""} for the null sender),
            C{"recipients"} (a C{list} of I{recipient}s), C{"size"} (bytes of
            content), C{"client"} (the client address), C{"received"} (a
            POSIX timestamp), C{"bodyType"} (C{"7BIT"} or C{"8BITMIME"}),
            and optionally C{"envid"}, C{"ret"} (RFC 3461) and
            C{"contentPending"}: C{True} when the content is still being
            synced, so that both syncs run at once; the transaction then
            waits for L{contentCommitted} before anything is scheduled.
        @return: a L{Deferred} that fires with C{None} once the envelope is
            on stable storage (IBDB group commit), only then (and, with
            C{"contentPending"}, once the content is) may SMTPS answer
            250; it errbacks if it could not be stored, and SMTPS answers
            451.
        """

    def contentCommitted(transactionId, stored):
        """
        The content of a transaction committed with C{"contentPending"} is
        on stable storage (C{stored} true: the transaction may be
        delivered) or could not be stored (false: the transaction is
        forgotten; SMTPS answers 451).

        @return: a L{Deferred} firing with C{None}; it errbacks with
            C{KeyError} for a transaction that is not waiting.
        """

    def status():
        """
        @return: a L{Deferred} firing with a C{dict} of counters: queue
            sizes, AQ use, connection limits in force, rates (the report of
            C{smx qmgrctl}, seed §6.6.3).
        """

    def listQueue():
        """
        @return: a L{Deferred} firing with a C{list} of C{dict}s, one per
            queued transaction, with its recipients and their state (the
            data of C{smx mailq}, seed §6.6.2).
        """

    def control(command, transactionId=None, recipient=None):
        """
        Change the queue: C{command} is one of C{"flush"} (requeue now),
        C{"hold"}, C{"release"}, C{"delete"}, C{"reload"} (reopen maps,
        seed §6.7).

        @return: a L{Deferred} firing with a C{dict} describing what was
            done; it errbacks with C{KeyError} for an unknown transaction.
        """


class IMap(Interface):
    """
    A map (seed §5.8.1): a key/value table of type C{hash}, C{sequence},
    C{socket} or C{passwd}.  Keys are looked up lower-cased (seed §9.3).
    """

    name = Attribute("The name the map was declared with, a C{str}.")

    def lookup(key):
        """
        Look C{key} up.

        @param key: a C{str}, already lower-cased by the caller.
        @return: a L{Deferred} firing with the value (a C{str}) or C{None}
            when the key is not in the map; it errbacks with
            L{smx.maps.errors.MapTemporaryError} when the map cannot answer
            now (a temporary failure is never "not found").
        """

    def reopen():
        """
        Reopen the underlying file or connection (SIGUSR1, seed §6.7).
        """

    def close():
        """
        Release the map's resources.
        """


class IAddressResolver(Interface):
    """
    SMAR, the address resolver (seed §5.8, §5.11): access checks for SMTPS,
    alias expansion and routing for QMGR.
    """

    def checkClient(clientAddress):
        """
        Check a connecting client: DNSBLs, C{cltresolve:}, C{cltaddr:},
        C{cltname:} (seed §5.8.2, §5.8.3).

        @param clientAddress: the client's IP address as text.
        @return: a L{Deferred} firing with a I{decision} that also has
            C{"clientName"} (the verified host name, or C{None}) and
            C{"resolve"} (C{"ok"}, C{"no"}, C{"tempptr"} or C{"tempa"}).
        """

    def checkSender(sender, client):
        """
        Check the envelope sender (C{from:} entries).

        @param sender: the reverse path without angle brackets.
        @param client: a C{dict} with C{"address"} and C{"name"} of the
            client.
        @return: a L{Deferred} firing with a I{decision}.
        """

    def checkRecipient(recipient, client):
        """
        Check an envelope recipient (C{to:} entries), whether it is local
        (a C{lmtp:} domain in the mailertable) and, if so, valid (aliases,
        C{local_user_map}).

        @param recipient: the forward path without angle brackets, after
            normalisation by SMTPS.
        @param client: as for L{checkSender}.
        @return: a L{Deferred} firing with a I{decision} that also has
            C{"local"} (C{True} for a local domain) and C{"relayAllowed"}
            (C{True} if the rules allow relaying to this recipient).
        """

    def lookupAccess(tag, key):
        """
        Look up one access-map entry, for example C{("certissuer", dn)}.

        @return: a L{Deferred} firing with a I{decision}.
        """

    def resolveRecipient(address):
        """
        Expand aliases and route an address (mailertable, MX, A/AAAA).

        @param address: a forward path without angle brackets.
        @return: a L{Deferred} firing with a C{list} of C{dict}s
            C{{"address": str, "sender": str | None, "routes": [route, ...],
            "error": reply | None}}, one per final recipient; C{"sender"} is
            the C{owner-} address of a list, C{"error"} says why an address
            cannot be delivered (a 5xx or 4xx I{reply}).
        """

    def reload():
        """
        Reopen every map (SIGUSR1, seed §6.7).
        """


class IDeliveryAgent(Interface):
    """
    SMTPC, the delivery agent (seed §5.10): delivers one delivery
    transaction over ESMTP or LMTP.
    """

    def deliver(transaction):
        """
        Deliver a message to some recipients that share a destination.

        @param transaction: a C{dict} with C{"id"} (the delivery transaction
            id, C{C...}), C{"ss_ta"} (the SMTPS transaction id whose content
            is delivered), C{"sender"}, C{"recipients"} (a C{list} of
            I{recipient}s), C{"routes"} (the I{route}s to try in order),
            C{"size"}, C{"bodyType"}.
        @return: a L{Deferred} firing with a C{list} of I{result}s, one per
            recipient.  It never errbacks for a remote problem: those are
            C{"temp"} results.
        """


class IPolicyMilter(Interface):
    """
    A policy milter (seed §8, App. B): SMTPS replays the ESMTP dialogue to
    it and it accepts or rejects each step.  Every method returns a
    L{Deferred} firing with a C{dict} C{{"status": str, "reply": reply |
    None, "quick": bool}} where C{status} is one of C{"ok"}, C{"discard"},
    C{"cont"}, C{"shutdown"}, C{"temp"}, C{"perm"}, C{"syntax"} (App. B.9).
    """

    def negotiate(serverCapabilities):
        """
        @param serverCapabilities: a C{list} of the protocol stages SMTPS
            can pass on (C{"connect"}, C{"helo"}, C{"mail"}, C{"rcpt"},
            C{"data"}, C{"unknown"}, C{"body"}, C{"eom"}).
        @return: a L{Deferred} firing with the C{list} of stages wanted.
        """

    def connect(sessionId, hostname, address):
        """New SMTP session (App. B.4 C{pmfi_connect})."""

    def helo(sessionId, heloHost):
        """HELO or EHLO (C{pmfi_helo})."""

    def mail(sessionId, sender, arguments):
        """MAIL; C{arguments} is a C{list} of C{str} (C{pmfi_mail})."""

    def rcpt(sessionId, recipient, arguments):
        """RCPT (C{pmfi_rcpt})."""

    def data(sessionId):
        """DATA (C{pmfi_data})."""

    def unknown(sessionId, command):
        """An unknown or unimplemented command (C{pmfi_unknown})."""

    def body(sessionId, chunk):
        """A chunk of the body, C{bytes}, as received (C{pmfi_body})."""

    def endOfMessage(sessionId):
        """The final dot (C{pmfi_eom})."""

    def abort(sessionId):
        """The transaction was aborted, e.g. by RSET (C{pmfi_abort})."""

    def close(sessionId):
        """The session ended (C{pmfi_close})."""


class IPolicyClient(Interface):
    """
    The client of one Postfix SMTP access policy server (the policy
    delegation protocol of Postfix's C{check_policy_service}).
    """

    name = Attribute("The policy's name (C{policy NAME { }}), a C{str}.")

    def check(attributes):
        """
        Ask the policy server about one protocol state.

        @param attributes: a C{dict} of request attributes (C{str} names to
            C{str} or C{int} values), as L{smx.milter.policy.policyAttributes}
            builds them.
        @return: a L{Deferred} firing with a
            L{smx.milter.policy.PolicyDecision}; it never fails: when the
            server cannot answer, the decision is the policy's default
            action.
        """

    def close():
        """
        Close the connection to the server.

        @return: a L{Deferred} firing when it is closed.
        """


class IProcessSupervisor(Interface):
    """
    MCP, the main control program (seed §5.2, §6.1): starts the configured
    services, restarts crashed ones with their C{restartdependencies}.
    """

    def processes():
        """
        @return: a L{Deferred} firing with a C{list} of C{dict}s C{{"name":
            str, "pid": int | None, "state": str, "restarts": int}}.
        """

    def restart(name):
        """
        Restart the service C{name} and its restart dependencies.

        @return: a L{Deferred} firing when they are running again; it
            errbacks with C{KeyError} for an unknown service.
        """

    def stop(name):
        """
        Stop the service C{name}.

        @return: a L{Deferred} firing when it has exited.
        """


class ISASLAuthenticator(Interface):
    """
    An SMTP AUTH back end of SMTPS (seed §5.9 item 19): the password file,
    Dovecot's authentication server or Cyrus saslauthd.  It lives inside
    the SMTPS process; its exchanges are objects, not plain values.
    """

    def mechanisms():
        """
        @return: the SASL mechanism names (upper case, a C{tuple} of
            C{str}) to offer in EHLO now, after the C{auth} flags.
        """

    def exchange(mechanism, client):
        """
        Begin one SASL exchange.

        @param mechanism: an upper-case name from L{mechanisms}.
        @param client: an L{smx.mail.auth.ClientInfo}.
        @return: an L{ISASLExchange}.
        """

    def start(log=None):
        """
        Begin serving (connect to the server, if there is one); problems
        with the server are logged to C{log} (an L{smx.log.Logger}).
        """

    def stop():
        """
        Close connections to the server.

        @return: a L{Deferred} firing when they are closed.
        """


class ISASLExchange(Interface):
    """
    One SASL exchange: the lines of C{AUTH} and the client's responses in,
    a challenge (C{334}) or the end of the exchange out.  Both methods
    return a L{Deferred} firing with an L{smx.mail.auth.Challenge} or an
    L{smx.mail.auth.Success}; it errbacks with
    L{smx.mail.auth.AuthError} for a refusal (its code and text are the
    SMTP reply: 535 for wrong credentials, 501 for malformed input, 454
    when the server is unavailable).
    """

    mechanism = Attribute("the upper-case mechanism name")

    def start(initial):
        """
        @param initial: the initial response of C{AUTH} (base64 text, C{=}
            for an empty one) or C{None}.
        """

    def respond(line):
        """
        @param line: the client's base64 line after a C{334}.
        """

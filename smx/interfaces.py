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

Each shape is a value type of L{smx.values} (L{smx.values.Reply},
L{smx.values.Decision}, L{smx.values.Route}, L{smx.values.Recipient},
L{smx.values.Result}, L{smx.values.Envelope},
L{smx.values.DeliveryTransaction}, L{smx.values.Resolved}) with its
checked conversion to and from this plain data (C{fromData}/C{toData});
split mode sends every argument and result through it
(L{smx.split.commands}).  In annotations the plain data of each shape is
named by an alias of L{smx.values}: C{ReplyData}, C{DecisionData},
C{RouteData}, C{RecipientData}, C{ResultData}, C{EnvelopeData},
C{DeliveryData}, C{ResolvedData}, C{ClientData} (the client of
C{checkSender}) and C{StatusData} (a report of counters); the methods
below name the value type of each argument and result.

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

        @param transactionId: the SMTPS transaction id, a C{str}.
        """

    def transactionIds():
        """
        @return: a C{list} of the ids of every stored content, for recovery
            and C{recover-from-log} (seed §6.10.2).
        """


class QueueManagerUnavailable(Exception):
    """
    QMGR could not be reached, or its connection ended before it answered
    (it is restarting): what the call was to do is not known to be done.
    An expected event in split mode, not a defect: SMTPS answers 451 and
    the client sends the message again.
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

        @param sessionId: the SMTPS session id, a C{str}.
        @param clientAddress: the client's IP address as text.
        @return: a L{Deferred} firing with C{None} to accept or a I{reply}
            (L{smx.values.Reply}, C{ReplyData}; 4xx) to refuse the session.
        """

    def sessionClose(sessionId, clientAddress):
        """
        The SMTPS session C{sessionId} (a C{str}) of the client at
        C{clientAddress} (a C{str}) ended.  Returns nothing.
        """

    def checkAcceptance(size, sessionId=None):
        """
        May a new transaction of about C{size} bytes be accepted now?  Called
        at MAIL; considers the free disk space (C{min_disk_space},
        C{ok_disk_space}, measured now, less the sizes of the transactions
        in flight) and whether AQ and IQDB have room.  An accepted C{size}
        is reserved for the session until its envelope is committed, its
        next C{checkAcceptance} or L{sessionClose}.  (In split mode SMTPS
        answers it itself within the budget QMGR pushes it, and asks QMGR
        otherwise: L{smx.split.queue}.)

        @param size: the C{SIZE=} the client declared, or 0 (an C{int}).
        @param sessionId: the SMTPS session id (a C{str}), or C{None}.
        @return: a L{Deferred} firing with C{None} or a I{reply}
            (L{smx.values.Reply}, C{ReplyData}: 452 4.3.1 for a short
            disk, 451/452 for a full queue).
        """

    def commitTransaction(envelope):
        """
        Take responsibility for an accepted transaction whose content is
        committed to the content store, or (C{"contentPending"}) is being
        committed at the same time.

        @param envelope: an L{smx.values.Envelope} as plain data
            (C{EnvelopeData}): a C{dict} with C{"id"} (SMTPS transaction id),
            C{"session"} (SMTPS session id), C{"sender"} (the reverse path
            without angle brackets, C{""} for the null sender),
            C{"recipients"} (a C{list} of I{recipient}s), C{"size"} (bytes of
            content), C{"client"} (the client address), C{"received"} (a
            POSIX timestamp), C{"bodyType"} (C{"7BIT"} or C{"8BITMIME"}),
            and optionally C{"envid"}, C{"ret"} (RFC 3461) and
            C{"contentPending"}: C{True} when the content is still being
            synced, so that both syncs run at once; the transaction then
            waits for L{contentCommitted} before anything is scheduled;
            or C{"syncContent"}: C{True} when the content is written and
            not synced: QMGR syncs it in the commit of the envelope (for
            a QMGR whose content store is L{smx.queue.cdb.FileContentStore};
            one C{syncfs} covers many messages).
        @return: a L{Deferred} that fires with C{None} once the envelope is
            on stable storage (IBDB group commit), only then (and, with
            C{"contentPending"}, once the content is) may SMTPS answer
            250; it errbacks if it could not be stored
            (L{QueueManagerUnavailable} if QMGR did not answer), and SMTPS
            answers 451.
        """

    def contentCommitted(transactionId, stored):
        """
        The content of a transaction committed with C{"contentPending"} is
        on stable storage (C{stored} true: the transaction may be
        delivered) or could not be stored (false: the transaction is
        forgotten; SMTPS answers 451).

        @param transactionId: the SMTPS transaction id, a C{str}.
        @param stored: a C{bool}.
        @return: a L{Deferred} firing with C{None}; it errbacks with
            C{KeyError} for a transaction that is not waiting (in split
            mode the call is one-way: QMGR logs the error, and the
            proxy's L{Deferred} fires at once).
        """

    def status():
        """
        @return: a L{Deferred} firing with a C{dict} (C{StatusData}) of
            counters: queue sizes, AQ use, connection limits in force, rates (the report of
            C{smx qmgrctl}, seed §6.6.3).
        """

    def listQueue():
        """
        @return: a L{Deferred} firing with a C{list} of C{dict}s
            (C{StatusData}), one per queued transaction, with its recipients and their state (the
            data of C{smx mailq}, seed §6.6.2).
        """

    def control(command, transactionId=None, recipient=None):
        """
        Change the queue: C{command} is one of C{"flush"} (requeue now),
        C{"hold"}, C{"release"}, C{"delete"}, C{"reload"} (reopen maps,
        seed §6.7).

        @param transactionId: the SMTPS transaction id (a C{str}), or
            C{None} for C{flush} and C{reload}.
        @param recipient: one recipient's address (a C{str}), or C{None}:
            every recipient of the transaction.
        @return: a L{Deferred} firing with a C{dict} (C{StatusData})
            describing what was done; it errbacks with C{KeyError} for an unknown transaction.
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
        @return: a L{Deferred} firing with a I{decision}
            (L{smx.values.Decision}, C{DecisionData}) that also has
            C{"clientName"} (the verified host name, or C{None}) and
            C{"resolve"} (C{"ok"}, C{"no"}, C{"tempptr"} or C{"tempa"}).
        """

    def checkSender(sender, client):
        """
        Check the envelope sender (C{from:} entries).

        @param sender: the reverse path without angle brackets.
        @param client: a C{dict} (C{ClientData}) with C{"address"} and
            C{"name"} of the client.
        @return: a L{Deferred} firing with a I{decision}
            (L{smx.values.Decision}, C{DecisionData}).
        """

    def checkRecipient(recipient, client):
        """
        Check an envelope recipient (C{to:} entries), whether it is local
        (a C{lmtp:} domain in the mailertable) and, if so, valid (aliases,
        C{local_user_map}).

        @param recipient: the forward path without angle brackets, after
            normalisation by SMTPS.
        @param client: as for L{checkSender}.
        @return: a L{Deferred} firing with a I{decision}
            (L{smx.values.Decision}, C{DecisionData}) that also has
            C{"local"} (C{True} for a local domain) and C{"relayAllowed"}
            (C{True} if the rules allow relaying to this recipient).
        """

    def lookupAccess(tag, key):
        """
        Look up one access-map entry, for example C{("certissuer", dn)}.

        @param tag: the entry's tag, a C{str}.
        @param key: the key after the tag, a C{str}.
        @return: a L{Deferred} firing with a I{decision}
            (L{smx.values.Decision}, C{DecisionData}).
        """

    def resolveRecipient(address):
        """
        Expand aliases and route an address (mailertable, MX, A/AAAA).

        @param address: a forward path without angle brackets.
        @return: a L{Deferred} firing with a C{list} of
            L{smx.values.Resolved} as plain data (C{ResolvedData}):
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

        @param transaction: an L{smx.values.DeliveryTransaction} as plain
            data (C{DeliveryData}): a C{dict} with C{"id"} (the delivery transaction
            id, C{C...}), C{"ss_ta"} (the SMTPS transaction id whose content
            is delivered), C{"sender"}, C{"recipients"} (a C{list} of
            I{recipient}s), C{"routes"} (the I{route}s to try in order),
            C{"size"}, C{"bodyType"}.
        @return: a L{Deferred} firing with a C{list} of I{result}s
            (L{smx.values.Result}, C{ResultData}), one per recipient.  It never errbacks for a remote problem: those are
            C{"temp"} results.
        """


class IPolicyMilter(Interface):
    """
    A policy milter (seed §8, App. B): SMTPS replays the ESMTP dialogue to
    it and it accepts or rejects each step.  The API is L{smx.pmilter}
    (doc/pmilter.md); a pmilter that is a Twisted plugin provides
    L{twisted.plugin.IPlugin} too.

    Only C{name} and C{negotiate} are required.  The callbacks of App. B.4
    are optional methods; each is given a
    L{smx.pmilter.context.SessionContext} and returns a value of App. B.9
    (C{OK}, C{DISCARD}, C{CONT}, C{SSD}, C{TEMP}, C{SYNTAX}, C{PERM}, an
    C{int} reply code, any of them wrapped by C{quick()}) directly or as
    a L{Deferred}::

        connect(session, hostname, address)  helo(session, helohost)
        mail(session, address, args)         rcpt(session, address, args)
        data(session)                        unknown(session, command)
        body(session, chunk)                 eom(session)
        abort(session)                       close(session)

    C{abort} (RSET, a dropped session) comes instead of C{eom}, never
    both; the results of C{abort} and C{close} are ignored.  An optional
    C{reload()} is called on SIGUSR1.
    """

    name = Attribute(
        "The pmilter's name (C{str}): how smx.conf enables it "
        "(C{pmilter { plugins = { NAME }; }}) and how logs name it."
    )

    def negotiate(server):
        """
        An SMTP server begins to use the pmilter (App. B.3).

        @param server: its L{smx.pmilter.context.ServerContext}
            (C{server.context} is the pmilter's to set, C{server.options}
            its settings).
        @return: a L{smx.pmilter.Negotiation} (or a L{Deferred} of one):
            the stages, macros and capabilities it wants.
        """


class IPolicyMilterHost(Interface):
    """
    SMTPS's side of the policy milters of one SMTP server: the pmilters
    of the process (L{smx.pmilter.host.PolicyMilterHost}), those of a
    C{smx pmilter-server} behind a Unix socket
    (L{smx.pmilter.remote.RemotePolicyMilterHost}), or both in a row
    (L{smx.pmilter.host.HostChain}).  It is also an C{IService}.
    """

    def openSession(sessionId):
        """
        A new SMTP session.

        @param sessionId: its id (App. C.1).
        @return: an L{IPolicyMilterSession}.
        """

    def reload():
        """
        SIGUSR1: the pmilters read their files again.
        """


class IPolicyMilterSession(Interface):
    """
    The policy milters of one SMTP session.  Each stage returns a
    L{Deferred} firing with a L{smx.pmilter.decision.Decision}; C{body},
    C{abort} and C{close} fire with C{None}.  The integration notes for
    SMTPS are in L{smx.pmilter.host}.
    """

    def connect(hostname, address):
        """
        The session began: the client's name (a C{str}, or C{None}) and
        address (the connection's C{getPeer()}, an C{IAddress}).
        """

    def helo(helohost):
        """HELO or EHLO with its argument, a C{str}."""

    def mail(address, args, transactionId=None):
        """
        MAIL with the reverse path as written (C{"<a@b>"}, a C{str}), its
        parameters (a C{list} of C{str} such as C{"SIZE=100"}) and the
        SMTPS transaction id (a C{str}).
        """

    def rcpt(address, args, status=250):
        """
        RCPT: the forward path as written (a C{str}), its parameters (as
        for L{mail}) and SMTPS's reply code for it so far (an C{int},
        App. B.7).
        """

    def data():
        """DATA."""

    def unknown(command):
        """An unknown command line, a C{str}."""

    def body(chunk):
        """A chunk of the content as received (C{bytes})."""

    def eom(messageId=None):
        """The final dot; C{messageId} is the SMTPS transaction id."""

    def abort():
        """The transaction ended without 250 to the final dot."""

    def close():
        """The session ended."""


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
        @return: a L{Deferred} firing with a C{list} of C{dict}s
            (C{StatusData}) C{{"name": str, "pid": int | None, "state": str, "restarts": int}}.
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


class IMilterClient(Interface):
    """
    One sendmail milter SMTPS passes its sessions to (the MTA side of
    libmilter's protocol, L{smx.milter.client}).
    """

    name = Attribute("The milter's name, a C{str}.")

    def session(sessionId):
        """
        @param sessionId: the SMTP session's id, for log records.
        @return: a new L{IMilterSession}; it connects at C{connect}.
        """


class IMilterSession(Interface):
    """
    One SMTP session as one milter sees it.  Each stage returns a
    L{Deferred} firing with an L{smx.milter.protocol.Decision} (C{action}
    C{"continue"}, C{"accept"}, C{"reject"}, C{"tempfail"}, C{"discard"}
    or C{"shutdown"}, the reply C{code} and C{lines}, and at the end of the
    message the C{modifications}); it never fails: a milter that cannot
    answer gets its default action.  Stages are called in SMTP order, each
    after the previous decision.  C{macros} are C{dict}s of sendmail macro
    values (L{smx.milter.macros}).
    """

    wantsRejectedRecipients = Attribute(
        "C{True} if the milter wants C{rcpt} for recipients SMTPS rejected"
    )

    def connect(info, macros=None):
        """The client connected (an L{smx.milter.protocol.ConnectInfo})."""

    def helo(name, macros=None):
        """HELO or EHLO."""

    def mail(sender, parameters=(), macros=None):
        """
        MAIL: the sender without brackets (a C{str}), the ESMTP parameters
        (a sequence of C{str} such as C{"SIZE=100"}).
        """

    def rcpt(recipient, parameters=(), macros=None):
        """RCPT: the recipient without brackets, the parameters as for L{mail}."""

    def data(macros=None):
        """DATA."""

    def header(name, value):
        """One header field; C{value} is everything after the colon."""

    def headers(fields, macros=None):
        """Header fields, C{(name, value)} pairs."""

    def eoh(macros=None):
        """The end of the header."""

    def body(chunk):
        """Some of the body, C{bytes} with CRLF line ends."""

    def endOfMessage(macros=None):
        """The end of the message."""

    def unknown(command, macros=None):
        """An unknown SMTP command (the whole line)."""

    def abort():
        """The transaction ended before the end of the message."""

    def quit():
        """
        The session ended.

        @return: a L{Deferred} firing when the connection is closed.
        """

# -*- test-case-name: smx.pmilter.test.test_api -*-
"""
smx.pmilter - the policy milter API of sendmail X (seed §8, App. B)

A policy milter (pmilter) accepts or rejects each step of an SMTP session;
it cannot change the message.  It is an object that provides
L{smx.interfaces.IPolicyMilter}: a C{name}, C{negotiate(server)} and any
of the callbacks of App. B.4.  Installed as a Twisted plugin (it then
provides L{twisted.plugin.IPlugin} too) it runs inside SMTPS or inside
C{smx pmilter-server}, unchanged.  A minimal one::

    from twisted.plugin import IPlugin
    from zope.interface import implementer
    from smx.interfaces import IPolicyMilter
    from smx.pmilter import CONT, PERM, SMST_RCPT, Negotiation

    @implementer(IPlugin, IPolicyMilter)
    class NoRoot:
        name = "noroot"
        def negotiate(self, server):
            return Negotiation(stages={SMST_RCPT})
        def rcpt(self, session, address, args):
            if address.lower().startswith("<root@"):
                session.setreply("550 5.7.1 No mail to root")
                return PERM
            return CONT

    noroot = NoRoot()

See doc/pmilter.md.  This module is what a pmilter imports; the host side
(SMTPS's) is L{smx.pmilter.host}, the out-of-process protocol
L{smx.pmilter.remote} and L{smx.pmilter.server}.
"""

from smx.pmilter.api import (
    CAP_RCPT_ST,
    CONT,
    DISCARD,
    OK,
    PERM,
    PMM_DOT_MSGID,
    PMM_MAIL_TAID,
    PMM_SEID,
    PMM_SRVHOSTNAME,
    SMST_CONNECT,
    SMST_DATA,
    SMST_DOT,
    SMST_EHLO,
    SMST_MAIL,
    SMST_RCPT,
    SMST_UNKNOWN,
    SSD,
    SYNTAX,
    TEMP,
    MacroNotRequested,
    Negotiation,
    NegotiationError,
    PolicyMilterError,
    PolicyMilterUnavailable,
    Quick,
    Status,
    quick,
    version,
)
from smx.pmilter.context import ServerContext, SessionContext

__all__ = [
    "CAP_RCPT_ST",
    "CONT",
    "DISCARD",
    "OK",
    "PERM",
    "PMM_DOT_MSGID",
    "PMM_MAIL_TAID",
    "PMM_SEID",
    "PMM_SRVHOSTNAME",
    "SMST_CONNECT",
    "SMST_DATA",
    "SMST_DOT",
    "SMST_EHLO",
    "SMST_MAIL",
    "SMST_RCPT",
    "SMST_UNKNOWN",
    "SSD",
    "SYNTAX",
    "TEMP",
    "MacroNotRequested",
    "Negotiation",
    "NegotiationError",
    "PolicyMilterError",
    "PolicyMilterUnavailable",
    "Quick",
    "ServerContext",
    "SessionContext",
    "Status",
    "quick",
    "version",
]

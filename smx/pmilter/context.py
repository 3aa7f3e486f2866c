# -*- test-case-name: smx.pmilter.test.test_api -*-
"""
NAME
    smx.pmilter.context - what a pmilter's callbacks are given (App. B.1, B.5)

SYNOPSIS
    def negotiate(self, server):          # a ServerContext
        server.context = MyServerState(server.options)
        return Negotiation(stages={SMST_RCPT})

    def rcpt(self, session, address, args):   # a SessionContext
        state = session.server.context
        session.setreply("550 5.7.1 go away")
        return PERM

DESCRIPTION
    The three contexts of App. B.1 are Python objects: the pmilter object
    itself is the global one (C{pmg_ctx}), a L{ServerContext} stands for
    one SMTP server that uses the pmilter (C{pmss_ctx}), a
    L{SessionContext} for one SMTP session (C{pmse_ctx}).  Each has a
    C{context} attribute that belongs to the pmilter (App. B.5
    C{sm_pmfi_set_ctx_*}, C{sm_pmfi_get_ctx_*}); the links up are
    C{session.server} and C{server.pmilter}.

    C{session.getmac} (App. B.6), C{session.setreply} (App. B.8) and
    C{session.getstatus} (App. B.7) are the functions a callback may
    call.  The host (L{smx.pmilter.host}) fills the macros in, checks the
    reply against the value the callback returns and takes the reply back
    after each call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, FrozenSet, Mapping, Optional

from smx.pmilter.api import (
    CAPABILITIES,
    MACRO_STAGES,
    STAGES,
    MacroNotRequested,
    Negotiation,
)

if TYPE_CHECKING:  # pragma: no cover
    from smx.interfaces import IPolicyMilter
    from smx.log import Logger


class ServerContext:
    """
    One SMTP server as a pmilter sees it (App. B.1 C{pmss_ctx}).

    @ivar pmilter: the pmilter (its global context, App. B.5
        C{sm_pmfi_get_ctx_g_ss}).
    @ivar context: the pmilter's own object for this server
        (C{sm_pmfi_set_ctx_ss}); C{None} until it sets one.
    @ivar hostname: the host name of the SMTP server.
    @ivar stages: the stages the SMTP server offers (App. B.3 C{srv_cap}).
    @ivar capabilities: the further capabilities it offers (App. B.7).
    @ivar options: the pmilter's settings from smx.conf (its subsection
        of C{pmilter}, e.g. C{greylist { delay = 10m; }}, with defaults
        applied), or an empty mapping.
    @ivar reactor: the reactor (an C{IReactorTime} at least).
    @ivar log: an L{smx.log.Logger} for the pmilter's records.
    @ivar negotiation: what it asked for, once negotiated.
    """

    def __init__(
        self,
        pmilter: IPolicyMilter,
        hostname: str,
        reactor: Any,
        log: Logger,
        options: Optional[Mapping[str, Any]] = None,
        stages: FrozenSet[str] = frozenset(STAGES),
        capabilities: FrozenSet[str] = frozenset(CAPABILITIES),
    ) -> None:
        self.pmilter = pmilter
        self.context = None  # type: Any
        self.hostname = hostname
        self.reactor = reactor
        self.log = log
        self.options = dict(options or {})  # type: Dict[str, Any]
        self.stages = stages
        self.capabilities = capabilities
        self.negotiation = None  # type: Optional[Negotiation]

    def __repr__(self) -> str:
        return "<ServerContext of %s>" % (getattr(self.pmilter, "name", self.pmilter),)


class SessionContext:
    """
    One SMTP session as a pmilter sees it (App. B.1 C{pmse_ctx}).

    @ivar server: its L{ServerContext} (App. B.5 C{sm_pmfi_get_ctx_ss_se}).
    @ivar context: the pmilter's own object for this session
        (C{sm_pmfi_set_ctx_se}); C{None} until it sets one.
    """

    def __init__(self, server: ServerContext) -> None:
        self.server = server
        self.context = None  # type: Any
        negotiation = server.negotiation or Negotiation(frozenset())
        #: macro -> the stage it was requested at
        self._requested = negotiation.requested()
        self._macros = {}  # type: Dict[str, Optional[str]]
        self._reply = None  # type: Optional[str]
        self._status = None  # type: Optional[int]

    # -- for the pmilter ---------------------------------------------------

    def getmac(self, macro: str) -> Optional[str]:
        """
        The value of an MTA symbol (App. B.6 C{sm_pmfi_getmac}).

        @param macro: a C{PMM_*} name.
        @return: its value, or C{None} if it is not (yet) known.
        @raise MacroNotRequested: the pmilter did not request it at
            negotiation.
        """
        if macro not in self._requested:
            raise MacroNotRequested(
                "macro %r was not requested at negotiation" % (macro,)
            )
        return self._macros.get(macro)

    def setreply(self, reply: str) -> None:
        """
        Give the full SMTP reply for the value the current callback
        returns (App. B.8 C{sm_pmfi_setreply}): C{"XYZ D.S.N text"}, XYZ
        matching the value (4xx for L{smx.pmilter.TEMP}, exactly the code
        for an C{int}), D.S.N an enhanced status code of RFC 3463.  It
        is checked when the callback returns: a reply that does not
        match is a failure of the pmilter.
        """
        self._reply = reply

    def getstatus(self) -> Optional[int]:
        """
        The reply code SMTPS gives the current command so far (App. B.7
        C{sm_pmfi_getstatus}): for a pmilter with L{smx.pmilter.CAP_RCPT_ST},
        C{rcpt} is also called for recipients SMTPS rejected, and this is
        then their 4xx or 5xx code.
        """
        return self._status

    # -- for the host --------------------------------------------------------

    def takeReply(self) -> Optional[str]:
        """
        The reply set during the last callback, and forget it.
        """
        reply, self._reply = self._reply, None
        return reply

    def deliverMacros(self, stage: str, values: Mapping[str, Optional[str]]) -> None:
        """
        Make the requested macros known that are due at C{stage}.

        @param values: the values the host knows now; a macro it does not
            know (C{None}) is forgotten (e.g. the transaction id after the
            transaction).
        """
        if stage not in MACRO_STAGES:
            return
        index = MACRO_STAGES.index(stage)
        for macro, first in self._requested.items():
            if MACRO_STAGES.index(first) <= index:
                self._macros[macro] = values.get(macro)

    def forgetMacros(self, *macros: str) -> None:
        """
        Forget macros whose scope ended (the transaction id, the
        Message-Id).
        """
        for macro in macros:
            self._macros.pop(macro, None)

    def setStatus(self, status: Optional[int]) -> None:
        """
        Set what L{getstatus} returns during the next callback.
        """
        self._status = status

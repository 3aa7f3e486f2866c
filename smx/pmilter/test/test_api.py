# -*- test-case-name: smx.pmilter.test.test_api -*-
"""
Tests for the values of the policy milter API (L{smx.pmilter.api}) and
the contexts a pmilter is given (L{smx.pmilter.context}).
"""

from twisted.plugin import IPlugin
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

import smx.pmilter as pm
from smx.interfaces import IPolicyMilter
from smx.pmilter.api import STAGES, parseReply
from smx.pmilter.context import ServerContext, SessionContext
from smx.pmilter.greylist import Greylist
from smx.pmilter.rules import Rules
from smx.pmilter.testing import FakePolicyMilter


class NamesTests(SynchronousTestCase):
    """
    The names a pmilter author imports from L{smx.pmilter}.
    """

    def test_names(self):
        """
        The return values, stages, macros and capability of App. B exist
        under their documented names.
        """
        for name in (
            "OK",
            "DISCARD",
            "CONT",
            "SSD",
            "TEMP",
            "SYNTAX",
            "PERM",
            "quick",
            "SMST_CONNECT",
            "SMST_EHLO",
            "SMST_MAIL",
            "SMST_RCPT",
            "SMST_DATA",
            "SMST_DOT",
            "PMM_SRVHOSTNAME",
            "PMM_SEID",
            "PMM_MAIL_TAID",
            "PMM_DOT_MSGID",
            "CAP_RCPT_ST",
            "Negotiation",
            "version",
        ):
            self.assertTrue(hasattr(pm, name), name)
        self.assertEqual(
            len({pm.OK, pm.DISCARD, pm.CONT, pm.SSD, pm.TEMP, pm.SYNTAX, pm.PERM}), 7
        )

    def test_version(self):
        """
        C{version()} is C{(major, minor, patchlevel)} (App. B.8).
        """
        v = pm.version()
        self.assertEqual(len(v), 3)
        self.assertTrue(all(isinstance(n, int) for n in v))
        self.assertEqual(v[0], 1)

    def test_quick(self):
        """
        C{quick()} wraps a value once; C{repr} shows it.
        """
        self.assertEqual(pm.quick(pm.PERM).value, pm.PERM)
        self.assertEqual(pm.quick(pm.quick(451)).value, 451)
        self.assertEqual(repr(pm.quick(pm.OK)), "quick(OK)")

    def test_providers(self):
        """
        The shipped pmilters and the fake provide L{IPolicyMilter}; the
        shipped ones are plugins too.
        """
        for p in (Greylist(), Rules()):
            self.assertTrue(verifyObject(IPolicyMilter, p))
            self.assertTrue(verifyObject(IPlugin, p))
        self.assertTrue(verifyObject(IPolicyMilter, FakePolicyMilter()))


class NegotiationTests(SynchronousTestCase):
    """
    L{Negotiation.check}: what a pmilter may ask for (App. B.3, B.6, B.7).
    """

    def test_allStagesByDefault(self):
        """
        Without stages, a pmilter gets every stage the server offers.
        """
        n = pm.Negotiation().check()
        self.assertEqual(n.stages, frozenset(STAGES))
        n = pm.Negotiation().check([pm.SMST_RCPT])
        self.assertEqual(n.stages, frozenset([pm.SMST_RCPT]))

    def test_macroTooEarly(self):
        """
        C{PMM_MAIL_TAID} before C{SMST_MAIL} and C{PMM_DOT_MSGID} before
        C{SMST_DOT} are errors that say so (App. B.6).
        """
        for stage, macro, first in (
            (pm.SMST_CONNECT, pm.PMM_MAIL_TAID, "mail"),
            (pm.SMST_EHLO, pm.PMM_MAIL_TAID, "mail"),
            (pm.SMST_RCPT, pm.PMM_DOT_MSGID, "dot"),
        ):
            e = self.assertRaises(
                pm.NegotiationError,
                pm.Negotiation(macros={stage: [macro]}).check,
            )
            self.assertIn(repr(macro), str(e))
            self.assertIn("before stage %r" % (first,), str(e))
        pm.Negotiation(
            macros={pm.SMST_MAIL: [pm.PMM_MAIL_TAID], pm.SMST_DOT: [pm.PMM_DOT_MSGID]}
        ).check()

    def test_unknown(self):
        """
        Unknown or unoffered stages, macros and capabilities are errors.
        """
        for n, text in (
            (pm.Negotiation(stages={"helo"}), "unknown stage 'helo'"),
            (pm.Negotiation(macros={pm.SMST_MAIL: ["taid"]}), "unknown macro"),
            (pm.Negotiation(capabilities={"x"}), "unknown capability"),
            (pm.Negotiation(macros={pm.SMST_UNKNOWN: [pm.PMM_SEID]}), "cannot be"),
        ):
            e = self.assertRaises(pm.NegotiationError, n.check)
            self.assertIn(text, str(e))
        e = self.assertRaises(
            pm.NegotiationError,
            pm.Negotiation(stages={pm.SMST_DOT}).check,
            [pm.SMST_RCPT],
        )
        self.assertIn("not offered", str(e))
        e = self.assertRaises(
            pm.NegotiationError,
            pm.Negotiation(capabilities={pm.CAP_RCPT_ST}).check,
            STAGES,
            [],
        )
        self.assertIn("not offered", str(e))

    def test_notACollection(self):
        """
        A string where a collection belongs is an error, not a set of
        letters.
        """
        self.assertRaises(pm.NegotiationError, pm.Negotiation, stages="rcpt")
        self.assertRaises(pm.NegotiationError, pm.Negotiation, macros=[1])

    def test_requested(self):
        """
        L{Negotiation.requested} gives each macro's first stage.
        """
        n = pm.Negotiation(
            macros={pm.SMST_RCPT: [pm.PMM_SEID], pm.SMST_CONNECT: [pm.PMM_SEID]}
        )
        self.assertEqual(n.requested(), {pm.PMM_SEID: pm.SMST_CONNECT})


class ReplyTests(SynchronousTestCase):
    """
    L{parseReply}: the replies of C{setreply} (App. B.8).
    """

    def test_valid(self):
        """
        C{XYZ D.S.N text}, with or without CRLF.
        """
        self.assertEqual(
            parseReply("550 5.7.1 No mail from you\r\n"),
            (550, "5.7.1", "No mail from you"),
        )
        self.assertEqual(parseReply("451 4.7.1 "), (451, "4.7.1", ""))

    def test_invalid(self):
        """
        No enhanced status code, a class that differs, several lines,
        control characters, an overlong line, a non-string: errors.
        """
        for bad in (
            "550 No enhanced code",
            "550 4.7.1 wrong class",
            "550 5.7.1 a\r\n550 5.7.1 b",
            "550 5.7.1 bell\x07",
            "650 6.0.0 code",
            "55 5.7.1 short",
            "550 5.7.1 " + "x" * 600,
            b"550 5.7.1 bytes",
        ):
            self.assertRaises(ValueError, parseReply, bad)


class ContextTests(SynchronousTestCase):
    """
    L{ServerContext} and L{SessionContext} (App. B.1, B.5-B.8).
    """

    def setUp(self):
        self.pmilter = FakePolicyMilter("p")
        self.server = ServerContext(self.pmilter, "mx.example", None, None)
        self.server.negotiation = pm.Negotiation(
            macros={pm.SMST_MAIL: [pm.PMM_SEID, pm.PMM_MAIL_TAID]}
        ).check()
        self.session = SessionContext(self.server)

    def test_links(self):
        """
        The contexts link up to the server and the pmilter; C{context} is
        the pmilter's to set.
        """
        self.assertIs(self.session.server, self.server)
        self.assertIs(self.session.server.pmilter, self.pmilter)
        self.assertIsNone(self.session.context)
        self.assertIsNone(self.server.context)
        self.assertEqual(self.server.options, {})

    def test_getmac(self):
        """
        A macro not requested is an error; a requested one is C{None}
        until its stage, then its value.
        """
        self.assertRaises(pm.MacroNotRequested, self.session.getmac, pm.PMM_SRVHOSTNAME)
        self.assertRaises(LookupError, self.session.getmac, pm.PMM_DOT_MSGID)
        values = {pm.PMM_SEID: "S1", pm.PMM_MAIL_TAID: "T1"}
        self.session.deliverMacros(pm.SMST_CONNECT, values)
        self.assertIsNone(self.session.getmac(pm.PMM_SEID))
        self.session.deliverMacros(pm.SMST_MAIL, values)
        self.assertEqual(self.session.getmac(pm.PMM_SEID), "S1")
        self.assertEqual(self.session.getmac(pm.PMM_MAIL_TAID), "T1")
        self.session.forgetMacros(pm.PMM_MAIL_TAID)
        self.assertIsNone(self.session.getmac(pm.PMM_MAIL_TAID))

    def test_setreply(self):
        """
        C{setreply} keeps the reply for the host, which takes it once.
        """
        self.session.setreply("550 5.7.1 no")
        self.assertEqual(self.session.takeReply(), "550 5.7.1 no")
        self.assertIsNone(self.session.takeReply())

    def test_getstatus(self):
        """
        C{getstatus} is what the host set for the current command.
        """
        self.assertIsNone(self.session.getstatus())
        self.session.setStatus(550)
        self.assertEqual(self.session.getstatus(), 550)

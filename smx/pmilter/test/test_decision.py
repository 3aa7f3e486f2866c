# -*- test-case-name: smx.pmilter.test.test_decision -*-
"""
Tests for L{smx.pmilter.decision}: what a callback's value and reply make.
"""

from twisted.trial.unittest import SynchronousTestCase

from smx.pmilter.api import CONT, DISCARD, OK, PERM, SSD, SYNTAX, TEMP, quick
from smx.pmilter.decision import (
    CONTINUE,
    Combination,
    Decision,
    Nonsense,
    decide,
    failureDecision,
)


class DecideTests(SynchronousTestCase):
    """
    L{decide}: the values of App. B.9 with the replies of App. B.8.
    """

    def test_cont(self):
        """
        CONT (and C{None}) is no objection.
        """
        self.assertIs(decide(CONT, None, "p"), CONTINUE)
        self.assertIs(decide(None, None, "p"), CONTINUE)
        self.assertFalse(CONTINUE.rejected)
        self.assertIsNone(CONTINUE.reply())

    def test_ok(self):
        """
        OK accepts, with a 2xx reply if one was set.
        """
        d = decide(OK, None, "p")
        self.assertTrue(d.accept)
        self.assertIsNone(d.code)
        d = decide(OK, "250 2.1.0 fine", "p")
        self.assertEqual((d.code, d.enhanced, d.text), (250, "2.1.0", "fine"))
        d = decide(250, None, "p")
        self.assertTrue(d.accept)

    def test_discard(self):
        """
        DISCARD accepts and discards.
        """
        d = decide(DISCARD, None, "p")
        self.assertTrue(d.discard)
        self.assertFalse(d.rejected)
        self.assertTrue(d.final)

    def test_defaults(self):
        """
        Without C{setreply}, each rejection has its default reply.
        """
        self.assertEqual(decide(TEMP, None, "p").reply()["code"], 451)
        self.assertEqual(decide(PERM, None, "p").reply()["dsn"], "5.7.1")
        self.assertEqual(decide(SYNTAX, None, "p").code, 500)
        d = decide(SSD, None, "p")
        self.assertEqual(d.code, 421)
        self.assertTrue(d.ssd)
        d = decide(452, None, "p")
        self.assertEqual((d.code, d.enhanced), (452, "4.7.1"))
        self.assertEqual(decide(554, None, "p").enhanced, "5.7.1")
        self.assertTrue(decide(421, None, "p").ssd)

    def test_reply(self):
        """
        The reply set with the value is the decision's reply.
        """
        d = decide(TEMP, "451 4.7.1 greylisted", "greylist")
        self.assertEqual(d.reply(), {"code": 451, "dsn": "4.7.1", "text": "greylisted"})
        self.assertEqual(d.pmilter, "greylist")
        self.assertTrue(decide(TEMP, "421 4.7.0 bye", "p").ssd)
        self.assertEqual(decide(550, "550 5.7.1 x\r\n", "p").code, 550)

    def test_quick(self):
        """
        C{quick()} marks the decision quick; a quick acceptance is final.
        """
        d = decide(quick(OK), None, "p")
        self.assertTrue(d.quick and d.accept and d.final)
        self.assertTrue(decide(quick(PERM), None, "p").quick)
        self.assertFalse(decide(OK, None, "p").final)

    def test_nonsense(self):
        """
        A value that is not of App. B.9, a reply whose code does not match
        the value, a reply without an enhanced status code: L{Nonsense}.
        """
        for value, reply in (
            ("OK", None),
            (True, None),
            (354, None),
            (99, None),
            (object(), None),
            (TEMP, "550 5.7.1 permanent"),
            (PERM, "451 4.7.1 temporary"),
            (451, "452 4.7.1 other code"),
            (OK, "550 5.7.1 rejection"),
            (CONT, "550 5.7.1 with CONT"),
            (PERM, "550 no enhanced code"),
            (SSD, "451 4.7.1 not 421"),
        ):
            self.assertRaises(Nonsense, decide, value, reply, "p")

    def test_failure(self):
        """
        The failure policies: tempfail is 451 4.3.0, accept no objection;
        both flagged failed.
        """
        d = failureDecision("p", "tempfail")
        self.assertEqual((d.code, d.enhanced, d.failed), (451, "4.3.0", True))
        d = failureDecision("p", "accept")
        self.assertTrue(d.failed)
        self.assertFalse(d.rejected)

    def test_fields(self):
        """
        A decision survives L{Decision.toFields} and back; invalid fields
        are L{Nonsense}.
        """
        d = decide(quick(TEMP), "451 4.7.1 later", "p")
        self.assertEqual(Decision.fromFields(d.toFields()), d)
        self.assertEqual(Decision.fromFields(CONTINUE.toFields()), CONTINUE)
        self.assertRaises(
            Nonsense, Decision.fromFields, {"code": 451, "enhanced": "x", "text": ""}
        )


class CombinationTests(SynchronousTestCase):
    """
    L{Combination}: the decisions of a chain of pmilters.
    """

    def test_firstFinal(self):
        """
        The first rejection ends the chain and wins over an acceptance.
        """
        c = Combination()
        self.assertFalse(c.add(decide(OK, None, "a")))
        self.assertTrue(c.add(decide(PERM, None, "b")))
        self.assertEqual(c.result.pmilter, "b")
        self.assertTrue(c.add(decide(TEMP, None, "c")))
        self.assertEqual(c.result.pmilter, "b")

    def test_acceptance(self):
        """
        Without a final decision, the first acceptance; else CONTINUE.
        """
        c = Combination()
        c.add(CONTINUE)
        self.assertIs(c.result, CONTINUE)
        c.add(decide(OK, None, "a"))
        c.add(decide(OK, "250 2.0.0 b", "b"))
        self.assertEqual(c.result.pmilter, "a")

    def test_failedAccept(self):
        """
        A failure under C{accept} is kept (flagged) unless something else
        decides.
        """
        c = Combination()
        c.add(failureDecision("a", "accept"))
        self.assertTrue(c.result.failed)
        c.add(decide(OK, None, "b"))
        self.assertEqual(c.result.pmilter, "b")

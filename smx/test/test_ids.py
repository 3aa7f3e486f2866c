# -*- test-case-name: smx.test.test_ids -*-
"""
Tests for L{smx.ids}: the identifier formats of seed App. C.1.
"""

from twisted.trial import unittest

from smx import ids


class ServerIdTests(unittest.TestCase):
    """
    SMTPS ids: S, 64-bit counter, 8-bit process id.
    """

    def test_format(self):
        """An id is 'S', 16 and 2 upper-case hex digits."""
        g = ids.ServerIdGenerator(processId=0, clock=lambda: 1081926802.0)
        first = g.next()
        self.assertEqual(first, "S%016X00" % (1081926802 * 1000000,))
        self.assertTrue(ids.isServerId(first))
        self.assertTrue(ids.isServerId("S00000000407CE49200"))
        self.assertEqual(len(first), len("S00000000407CE49200"))

    def test_monotonic(self):
        """Ids increase even when the clock stands still or goes back."""
        now = [100.0]
        g = ids.ServerIdGenerator(processId=7, clock=lambda: now[0])
        a = g.next()
        b = g.next()
        now[0] = 50.0
        c = g.next()
        self.assertTrue(a < b < c)
        self.assertTrue(a.endswith("07"))

    def test_uniqueAcrossRestarts(self):
        """A new generator started later issues ids above the old ones."""
        now = [100.0]
        old = ids.ServerIdGenerator(clock=lambda: now[0])
        issued = [old.next() for _ in range(1000)]
        now[0] = 100.01
        new = ids.ServerIdGenerator(clock=lambda: now[0])
        self.assertGreater(new.next(), max(issued))

    def test_processIdBounds(self):
        """The process id is 8 bits."""
        self.assertRaises(ValueError, ids.ServerIdGenerator, 256)


class ClientIdTests(unittest.TestCase):
    """
    SMTPC ids: C, 8-bit process id, 32-bit counter, 32-bit thread index.
    """

    def test_format(self):
        """An id is 'C', 2, 8 and 8 upper-case hex digits."""
        g = ids.ClientIdGenerator(processId=1, clock=lambda: 0x137C)
        self.assertEqual(g.next(thread=2), "C010000137D00000002")
        self.assertTrue(ids.isClientId("C010000137D00000000"))
        self.assertFalse(ids.isClientId("S00000000407CE49200"))

    def test_stateFile(self):
        """With a state file a restart continues above reserved blocks."""
        state = self.mktemp()
        g = ids.ClientIdGenerator(stateFile=state, clock=lambda: 10)
        issued = [g.next() for _ in range(10)]
        again = ids.ClientIdGenerator(stateFile=state, clock=lambda: 10)
        self.assertGreater(again.next(), max(issued))

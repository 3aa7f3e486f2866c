# -*- test-case-name: smx.mail.test.test_sessions -*-
"""
Tests for L{smx.mail.sessions}: admission, slow sessions per address and
eviction, with fake sessions and a L{Clock}.
"""

from twisted.internet.task import Clock
from twisted.trial import unittest

from smx.mail import sessions
from smx.mail.sessions import SessionTable


class FakeSession:
    """A session whose client last sent a complete line at C{readySince}."""

    def __init__(self, table, address, readySince=0.0, busy=False):
        self.table = table
        self.clientAddress = address
        self.readySince = readySince
        self.busy = busy
        self.evicted = False

    def lag(self, now):
        return 0.0 if self.busy else now - self.readySince

    def evict(self):
        self.evicted = True
        self.table.remove(self)


class SessionTableTests(unittest.TestCase):
    def setUp(self):
        self.clock = Clock()

    def open(self, table, address, incomplete=False, **kw):
        """Admit a session from C{address}; return it and the refusal."""
        s = FakeSession(table, address, readySince=self.clock.seconds(), **kw)
        reply = table.admit(s)
        if reply is None and incomplete:
            table.setIncomplete(s, True)
        return s, reply

    def test_noLimit(self):
        """Without a session limit every session is admitted and counted."""
        table = SessionTable(0, self.clock)
        for i in range(100):
            s, reply = self.open(table, "192.0.2.1", incomplete=True)
            self.assertIsNone(reply)
        self.clock.advance(60)
        self.assertIsNone(self.open(table, "192.0.2.1")[1])
        self.assertEqual((table.count, table.held("192.0.2.1")), (101, 101))

    def test_behavedFillTheLimit(self):
        """
        Sessions that behave may take every session from one address,
        however long they are idle; the one beyond is refused with 421
        4.3.2 when no other address holds more.
        """
        table = SessionTable(16, self.clock)
        for i in range(16):
            self.assertIsNone(self.open(table, "192.0.2.1")[1])
        self.clock.advance(30)
        s, reply = self.open(table, "192.0.2.1")
        self.assertEqual(reply, (421, "4.3.2", "Too many sessions, try again later"))
        self.assertEqual(table.count, 16)

    def test_slowShare(self):
        """
        An address holding its share (1/8) of slow sessions, those with an
        unfinished line for SLOW_AFTER seconds, is refused with 421 4.7.0,
        well before the limit; other addresses are not.
        """
        table = SessionTable(64, self.clock)
        for i in range(8):
            self.open(table, "192.0.2.1", incomplete=True)
        self.assertIsNone(self.open(table, "192.0.2.1")[1])
        self.clock.advance(sessions.SLOW_AFTER)
        self.assertEqual(table.slow("192.0.2.1"), 8)
        s, reply = self.open(table, "192.0.2.1")
        self.assertEqual(reply, (421, "4.7.0", "Too many slow sessions from 192.0.2.1"))
        self.assertIsNone(self.open(table, "192.0.2.2")[1])
        self.assertEqual(table.refused, 1)

    def test_notSlowYet(self):
        """
        A line that is unfinished for less than SLOW_AFTER seconds, or a
        session the server itself works on, is not slow.
        """
        table = SessionTable(64, self.clock)
        for i in range(8):
            self.open(table, "192.0.2.1", incomplete=True, busy=(i == 0))
        self.clock.advance(sessions.SLOW_AFTER - 0.1)
        self.assertEqual(table.slow("192.0.2.1"), 0)
        self.clock.advance(0.1)
        self.assertEqual(table.slow("192.0.2.1"), 7)
        self.assertIsNone(self.open(table, "192.0.2.1")[1])

    def test_completedLine(self):
        """A session whose line is complete again is no longer slow."""
        table = SessionTable(8, self.clock)
        s, _ = self.open(table, "192.0.2.1", incomplete=True)
        self.clock.advance(5)
        self.assertEqual(table.slow("192.0.2.1"), 1)
        table.setIncomplete(s, False)
        self.assertEqual(table.slow("192.0.2.1"), 0)

    def test_nearlyFull(self):
        """
        When 3/4 of the sessions are taken, an address holding its share
        with a slow session among them is refused; one that holds its share
        of sessions that behave, or less than its share, is not.
        """
        table = SessionTable(32, self.clock)
        slowOne, _ = self.open(table, "192.0.2.1", incomplete=True)
        for i in range(3):
            self.open(table, "192.0.2.1")
        for i in range(4):
            self.open(table, "192.0.2.2")
        for i in range(16):
            self.open(table, "192.0.2.%d" % (10 + i,))
        self.assertEqual(table.count, 24)
        self.clock.advance(sessions.SLOW_AFTER)
        s, reply = self.open(table, "192.0.2.1")
        self.assertEqual(reply, (421, "4.7.0", "Too many sessions from 192.0.2.1"))
        self.assertIsNone(self.open(table, "192.0.2.2")[1])
        self.assertIsNone(self.open(table, "192.0.2.3")[1])
        table.setIncomplete(slowOne, False)
        self.assertIsNone(self.open(table, "192.0.2.1")[1])

    def test_evictForNewAddress(self):
        """
        When all sessions are taken, a client from an address that holds
        none gets the session of the address that holds the most which
        lags most, if it lags at least EVICT_AFTER seconds.
        """
        table = SessionTable(8, self.clock)
        crowd = []
        for i in range(5):
            crowd.append(self.open(table, "192.0.2.1")[0])
            self.clock.advance(0.1)
        others = [self.open(table, "192.0.2.2")[0] for i in range(3)]
        crowd[0].readySince = self.clock.seconds()
        self.clock.advance(sessions.EVICT_AFTER)
        s, reply = self.open(table, "192.0.2.9")
        self.assertIsNone(reply)
        self.assertEqual([c.evicted for c in crowd], [False, True, False, False, False])
        self.assertEqual([o.evicted for o in others], [False] * 3)
        self.assertEqual((table.count, table.evicted), (8, 1))
        self.assertEqual(table.held("192.0.2.1"), 4)

    def test_noVictim(self):
        """
        Nobody is closed for a client whose address holds as many sessions
        as the others, or while no session lags EVICT_AFTER seconds.
        """
        table = SessionTable(4, self.clock)
        for address in ["192.0.2.1", "192.0.2.1", "192.0.2.2", "192.0.2.3"]:
            self.open(table, address)
        self.clock.advance(sessions.EVICT_AFTER - 0.1)
        self.assertEqual(self.open(table, "192.0.2.4")[1][:2], (421, "4.3.2"))
        self.clock.advance(0.1)
        self.assertEqual(self.open(table, "192.0.2.1")[1][:2], (421, "4.3.2"))
        s, reply = self.open(table, "192.0.2.2")
        self.assertIsNone(reply)
        self.assertEqual(table.held("192.0.2.1"), 1)

    def test_busyNotEvicted(self):
        """A session the server works on (lag 0) is never closed."""
        table = SessionTable(2, self.clock)
        self.open(table, "192.0.2.1", busy=True)
        self.open(table, "192.0.2.1", busy=True)
        self.clock.advance(100)
        self.assertEqual(self.open(table, "192.0.2.9")[1][:2], (421, "4.3.2"))

    def test_lighterAddressesScanned(self):
        """
        When no session of the address holding the most lags, the one that
        lags most among addresses that hold more than the new client's is
        closed.
        """
        table = SessionTable(6, self.clock)
        for i in range(3):
            self.open(table, "192.0.2.1", busy=True)
        a = self.open(table, "192.0.2.2")[0]
        self.clock.advance(2)
        b = self.open(table, "192.0.2.2")[0]
        c = self.open(table, "192.0.2.3")[0]
        self.clock.advance(1)
        self.assertIsNone(self.open(table, "192.0.2.9")[1])
        self.assertEqual((a.evicted, b.evicted, c.evicted), (True, False, False))

    def test_evictedAddressWaits(self):
        """
        An address that lost a session to make room may not take another's
        for EVICTED_MEMORY seconds: clients that reconnect at once cannot
        take the sessions in turns.
        """
        table = SessionTable(3, self.clock)
        self.open(table, "192.0.2.1")
        self.clock.advance(0.5)
        kept = [self.open(table, "192.0.2.2")[0] for i in range(2)]
        self.clock.advance(1.5)
        self.assertIsNone(self.open(table, "192.0.2.3")[1])
        self.assertEqual([k.evicted for k in kept].count(True), 1)
        for k in kept:
            table.remove(k)
        self.assertIsNone(self.open(table, "192.0.2.4")[1])
        self.clock.advance(2)
        self.assertEqual(self.open(table, "192.0.2.2")[1][:2], (421, "4.3.2"))
        self.clock.advance(sessions.EVICTED_MEMORY)
        self.assertIsNone(self.open(table, "192.0.2.2")[1])
        self.assertEqual(table.held("192.0.2.1"), 0)

    def test_evictedMemoryBounded(self):
        """The addresses remembered for evictions are bounded."""
        table = SessionTable(1, self.clock)
        self.patch(sessions, "EVICTED_ENTRIES", 3)
        self.open(table, "192.0.2.0")
        for i in range(1, 10):
            self.clock.advance(2)
            self.assertIsNone(self.open(table, "192.0.2.%d" % (i,))[1])
        self.assertLessEqual(len(table._evictedAt), 3)
        self.assertEqual(table.evicted, 9)

    def test_remove(self):
        """Removing a session frees its place; removing twice is harmless."""
        table = SessionTable(1, self.clock)
        s, _ = self.open(table, "192.0.2.1", incomplete=True)
        table.remove(s)
        table.remove(s)
        self.assertEqual((table.count, table.held("192.0.2.1")), (0, 0))
        self.assertEqual(table._incomplete, {})
        self.assertIsNone(self.open(table, "192.0.2.1")[1])

    def test_ipv6Network(self):
        """
        IPv6 clients are counted by their /64: the addresses of one network
        share its share of slow sessions.
        """
        self.assertEqual(sessions.clientGroup("192.0.2.1"), "192.0.2.1")
        self.assertEqual(sessions.clientGroup("2001:db8:1:2:a::1"), "2001:db8:1:2::/64")
        self.assertEqual(sessions.clientGroup("no:such::address"), "no:such::address")
        table = SessionTable(16, self.clock)
        for i in range(2):
            self.open(table, "2001:db8:1:2::%x" % (i + 1,), incomplete=True)
        self.clock.advance(sessions.SLOW_AFTER)
        self.assertEqual(table.slow("2001:db8:1:2::99"), 2)
        s, reply = self.open(table, "2001:db8:1:2::3")
        self.assertEqual(
            reply, (421, "4.7.0", "Too many slow sessions from 2001:db8:1:2::/64")
        )
        self.assertIsNone(self.open(table, "2001:db8:1:3::1")[1])

    def test_incompleteUnknown(self):
        """Marking a session that was never admitted changes nothing."""
        table = SessionTable(1, self.clock)
        table.setIncomplete(FakeSession(table, "192.0.2.1"), True)
        self.assertEqual(table._incomplete, {})

# -*- test-case-name: smx.queue.test.test_limits -*-
"""
Tests for L{smx.queue.confmap}, L{smx.queue.connections} and
L{smx.queue.diskspace}; the conf map is a real Berkeley DB hash file.
"""

import os

from twisted.internet.task import Clock
from twisted.trial import unittest

from smx.bdb import db
from smx.queue.confmap import ConfigurationMap, lookupKeys
from smx.queue.connections import OPEN_GRACE, IncomingControl, SlowStart
from smx.queue.diskspace import FLOOR, DiskSpaceMonitor, leastFreeBytes
from smx.queue.testing import defaultQueueSettings

OCC_MAX_ENTRIES = defaultQueueSettings().occMaxEntries


def makeMap(path, entries, nul=False):
    d = db.DB()
    d.open(path, dbtype=db.DB_HASH, flags=db.DB_CREATE)
    for k, v in entries.items():
        d.put(k.encode() + (b"\0" if nul else b""), v.encode())
    d.close()


SEED_EXAMPLE = {
    "oci:127.0.0.1": "5",
    "ocm:127.0.0.1": "10",
    "oci:10": "10",
    "ocm:10": "50",
    "oci:": "1",
    "ocm:": "4",
    "icr:10": "5",
    "icr:127.0.0.1": "100",
    "ios:127.0.0.1": "120",
}


class ConfigurationMapTests(unittest.TestCase):
    """
    Tests for L{ConfigurationMap}.
    """

    def setUp(self):
        self.path = self.mktemp() + ".db"
        self.reports = []

    def test_lookupKeys(self):
        """
        An IPv4 address is looked up from the full address to the first
        octet, then as the bare tag.
        """
        self.assertEqual(
            lookupKeys("oci", "10.1.2.3"),
            ["oci:10.1.2.3", "oci:10.1.2", "oci:10.1", "oci:10", "oci:"],
        )

    def test_seedExample(self):
        """
        The example of seed §5.7.1 gives the documented limits.
        """
        makeMap(self.path, SEED_EXAMPLE)
        conf = ConfigurationMap(self.path, self.reports.append)
        conf.open()
        self.assertEqual(conf.lookup("oci", "127.0.0.1"), 5)
        self.assertEqual(conf.lookup("ocm", "10.9.8.7"), 50)
        self.assertEqual(conf.lookup("oci", "192.0.2.1"), 1)
        self.assertEqual(conf.lookup("icr", "10.0.0.1"), 5)
        self.assertIsNone(conf.lookup("ios", "10.0.0.1"))
        self.assertEqual(self.reports, [])

    def test_nulTerminated(self):
        """
        Keys and values written with a terminating NUL (makemap -N) work.
        """
        makeMap(self.path, {"ios:": "7"}, nul=True)
        conf = ConfigurationMap(self.path)
        conf.open()
        self.assertEqual(conf.lookup("ios", "1.2.3.4"), 7)

    def test_missing(self):
        """
        A missing map is not an error: nothing is found.
        """
        conf = ConfigurationMap(self.path, self.reports.append)
        conf.open()
        self.assertIsNone(conf.lookup("oci", "1.2.3.4"))
        self.assertEqual(self.reports, [])

    def test_damaged(self):
        """
        A file that is not a Berkeley DB map is reported with its name and
        the old entries stay in force after a reopen.
        """
        makeMap(self.path, {"oci:": "3"})
        conf = ConfigurationMap(self.path, self.reports.append)
        conf.open()
        with open(self.path, "wb") as f:
            f.write(b"garbage" * 100)
        conf.reopen()
        self.assertEqual(conf.lookup("oci", "1.2.3.4"), 3)
        self.assertEqual(len(self.reports), 1)
        self.assertIn(self.path, self.reports[0])

    def test_badValue(self):
        """
        A value that is not a number is reported and ignored.
        """
        makeMap(self.path, {"oci:": "many", "ocm:": "4"})
        conf = ConfigurationMap(self.path, self.reports.append)
        conf.open()
        self.assertIsNone(conf.lookup("oci", "1.2.3.4"))
        self.assertEqual(conf.lookup("ocm", "1.2.3.4"), 4)
        self.assertIn("oci:", self.reports[0])


class SlowStartTests(unittest.TestCase):
    """
    Tests for L{SlowStart}.
    """

    def test_growAndShrink(self):
        """
        The limit starts at C{initial}, grows by one per success up to
        C{maximum} and halves on failure.
        """
        s = SlowStart(
            Clock(), initial=2, maximum=4, cacheSize=OCC_MAX_ENTRIES, deadTime=0
        )
        s.opened("a")
        s.opened("a")
        self.assertFalse(s.mayOpen("a"))
        s.closed("a", True)
        self.assertEqual(s.state()["a"], {"limit": 3, "open": 1})
        for i in range(5):
            s.opened("a")
            s.closed("a", True)
        self.assertEqual(s.state()["a"]["limit"], 4)
        s.closed("a", False)
        self.assertEqual(s.state()["a"], {"limit": 2, "open": 0})

    def test_confMap(self):
        """
        C{oci:} and C{ocm:} entries override the defaults per address.
        """
        path = self.mktemp()
        makeMap(path, SEED_EXAMPLE)
        conf = ConfigurationMap(path)
        conf.open()
        s = SlowStart(
            Clock(),
            initial=10,
            maximum=100,
            conf=conf,
            cacheSize=OCC_MAX_ENTRIES,
            deadTime=0,
        )
        self.assertEqual(s.limits("127.0.0.1"), (5, 10))
        self.assertEqual(s.limits("192.0.2.1"), (1, 4))

    def test_cacheTimeout(self):
        """
        An idle entry older than the cache timeout starts again at the
        initial limit.
        """
        clock = Clock()
        s = SlowStart(
            clock,
            initial=1,
            maximum=5,
            cacheSize=OCC_MAX_ENTRIES,
            cacheTimeout=10,
            deadTime=0,
        )
        s.opened("a")
        s.closed("a", True)
        self.assertEqual(s.state()["a"]["limit"], 2)
        clock.advance(11)
        self.assertTrue(s.mayOpen("a"))
        self.assertEqual(s.state()["a"]["limit"], 1)

    def test_cacheSize(self):
        """
        At most C{cacheSize} idle entries are kept.
        """
        s = SlowStart(Clock(), initial=10, maximum=100, cacheSize=2, deadTime=0)
        for a in "abc":
            s.mayOpen(a)
        self.assertEqual(sorted(s.state()), ["b", "c"])


class IncomingControlTests(unittest.TestCase):
    """
    Tests for L{IncomingControl}.
    """

    def test_rate(self):
        """
        More than C{maxRate} sessions in 60 s are refused with 421; after 60
        s they are accepted again.
        """
        clock = Clock()
        c = IncomingControl(clock, maxRate=2, maxOpen=10)
        self.assertIsNone(c.sessionOpen("s1", "1.2.3.4"))
        self.assertIsNone(c.sessionOpen("s2", "1.2.3.4"))
        reply = c.sessionOpen("s3", "1.2.3.4")
        self.assertEqual(reply["code"], 421)
        self.assertIsNone(c.sessionOpen("s4", "5.6.7.8"))
        clock.advance(60)
        self.assertIsNone(c.sessionOpen("s5", "1.2.3.4"))

    def test_open(self):
        """
        More than C{maxOpen} concurrent sessions are refused until one
        closes.
        """
        c = IncomingControl(Clock(), maxRate=100, maxOpen=1)
        self.assertIsNone(c.sessionOpen("s1", "1.2.3.4"))
        self.assertEqual(c.sessionOpen("s2", "1.2.3.4")["code"], 421)
        c.sessionClose("s1", "1.2.3.4")
        self.assertIsNone(c.sessionOpen("s3", "1.2.3.4"))
        self.assertEqual(c.openSessions(), 1)

    def test_admitWaitsForClose(self):
        """
        L{IncomingControl.admit} keeps a session over the open limit
        waiting: a close of its address (which in split mode may come
        after the open, from another SMTPS process) lets the first waiting
        session in; another address's close does not.
        """
        clock = Clock()
        c = IncomingControl(clock, maxRate=100, maxOpen=1)
        self.assertIsNone(self.successResultOf(c.admit("s1", "1.2.3.4")))
        self.assertIsNone(self.successResultOf(c.admit("o1", "5.6.7.8")))
        d2 = c.admit("s2", "1.2.3.4")
        d3 = c.admit("s3", "1.2.3.4")
        self.assertNoResult(d2)
        c.sessionClose("o1", "5.6.7.8")
        self.assertNoResult(d2)
        clock.advance(OPEN_GRACE / 2)
        c.sessionClose("s1", "1.2.3.4")
        self.assertIsNone(self.successResultOf(d2))
        self.assertNoResult(d3)
        self.assertEqual(c.refused, 0)
        clock.advance(OPEN_GRACE)
        self.assertEqual(self.successResultOf(d3)["code"], 421)
        self.assertEqual(c.refused, 1)
        self.assertEqual(c.openSessions(), 1)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_admitRateExact(self):
        """
        A session that waited for a close is checked against the rate
        limit again when it is let in: the sessions accepted meanwhile
        count, and the one refused is not counted as accepted.
        """
        clock = Clock()
        c = IncomingControl(clock, maxRate=2, maxOpen=1)
        self.assertIsNone(self.successResultOf(c.admit("s1", "1.2.3.4")))
        d = c.admit("s2", "1.2.3.4")
        self.assertNoResult(d)
        c.sessionClose("s1", "1.2.3.4")
        self.assertIsNone(self.successResultOf(d))
        c.sessionClose("s2", "1.2.3.4")
        reply = self.successResultOf(c.admit("s3", "1.2.3.4"))
        self.assertEqual(reply["text"], "connection rate limit exceeded for 1.2.3.4")

    def test_admitStop(self):
        """
        L{IncomingControl.stop} answers the waiting sessions at once.
        """
        clock = Clock()
        c = IncomingControl(clock, maxRate=100, maxOpen=1)
        self.successResultOf(c.admit("s1", "1.2.3.4"))
        d = c.admit("s2", "1.2.3.4")
        c.stop()
        self.assertEqual(self.successResultOf(d)["code"], 421)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_confMap(self):
        """
        C{icr:} and C{ios:} override the limits per address.
        """
        path = self.mktemp()
        makeMap(path, SEED_EXAMPLE)
        conf = ConfigurationMap(path)
        conf.open()
        c = IncomingControl(Clock(), maxRate=2, maxOpen=2, conf=conf)
        self.assertEqual(c.limits("127.0.0.1"), (100, 120))
        self.assertEqual(c.limits("10.1.1.1"), (5, 2))


MB = 1024 * 1024


class Stat:
    def __init__(self, free):
        self.f_bavail = free
        self.f_frsize = 1


class LeastFreeBytesTests(unittest.TestCase):
    """
    Tests for L{leastFreeBytes}, the measure of QMGR's monitor and of
    DEFEDB's head room.
    """

    def test_least(self):
        """
        The least free space of the paths counts; C{None} and empty paths
        (no separate DEFEDB log directory) are skipped, and a path that
        cannot be measured is left out.
        """
        free = {"/a": 7 * MB, "/b": 3 * MB}

        def statvfs(p):
            if p not in free:
                raise OSError(2, "No such file or directory")
            return Stat(free[p])

        self.assertEqual(leastFreeBytes(["/a", None, "", "/b", "/c"], statvfs), 3 * MB)
        self.assertEqual(leastFreeBytes(["/a", "/c"], statvfs), 7 * MB)

    def test_noneMeasured(self):
        """
        With nothing measured the space counts as unlimited, never as 0
        (which would refuse all mail for a path that vanished).
        """
        self.assertGreater(leastFreeBytes([None, "/nonexistent/smx"]), 1 << 60)


class DiskSpaceMonitorTests(unittest.TestCase):
    """
    Tests for L{DiskSpaceMonitor}.
    """

    def test_hysteresis(self):
        """
        Below the minimum new mail gets 452 4.3.1 until the ok level is
        reached again.
        """
        free = [10 * MB]
        m = DiskSpaceMonitor(["/"], 5 * MB, 8 * MB, statvfs=lambda p: Stat(free[0]))
        self.assertIsNone(m.check())
        free[0] = 4 * MB
        reply = m.check()
        self.assertEqual((reply["code"], reply["dsn"]), (452, "4.3.1"))
        free[0] = 7 * MB
        self.assertIsNotNone(m.check())
        free[0] = 8 * MB
        self.assertIsNone(m.check())

    def test_measuredPerTransaction(self):
        """
        The free space is measured for every transaction, not once a
        second: a disk that filled a moment ago refuses the next one.
        """
        free = [10 * MB]
        m = DiskSpaceMonitor(["/"], 5 * MB, 8 * MB, statvfs=lambda p: Stat(free[0]))
        self.assertIsNone(m.check())
        free[0] = 0
        self.assertIsNotNone(m.check())

    def test_floor(self):
        """
        Whatever C{min_disk_space} says (0 here), a disk with less than
        L{FLOOR} bytes free takes nothing new.
        """
        free = [FLOOR - 1]
        m = DiskSpaceMonitor(["/"], 0, 0, statvfs=lambda p: Stat(free[0]))
        self.assertIsNotNone(m.check())
        free[0] = FLOOR
        self.assertIsNone(m.check())

    def test_sizesInFlight(self):
        """
        The C{SIZE=} of admitted transactions is reserved per session until
        released, and the content bytes not yet written count too: a burst
        of large transactions is refused before the disk fills.
        """
        m = DiskSpaceMonitor(["/"], 5 * MB, 8 * MB, statvfs=lambda p: Stat(20 * MB))
        self.assertIsNone(m.check(6 * MB, session="s1"))
        self.assertIsNone(m.check(6 * MB, session="s2"))
        # 20 - 12 reserved - 6 < 5
        self.assertIsNotNone(m.check(6 * MB, session="s3"))
        self.assertEqual(m.reserved, 12 * MB)
        # s1's transaction was stored: its reservation goes
        m.release("s1")
        self.assertIsNone(m.check(6 * MB, session="s3"))
        # a session's next transaction replaces its reservation
        self.assertIsNone(m.check(1 * MB, session="s3"))
        self.assertEqual(m.reserved, 7 * MB)
        # content received, not yet written
        self.assertIsNotNone(m.check(1 * MB, inFlight=8 * MB, session="s4"))
        self.assertFalse(m.short)

    def test_real(self):
        """
        The real C{statvfs} of an existing directory works.
        """
        m = DiskSpaceMonitor([os.getcwd()], 0, 0)
        self.assertIsNone(m.check())
        self.assertGreater(m.free, 0)

# -*- test-case-name: smx.test.test_logobserver -*-
"""
Tests for L{smx.logobserver}: smx's records formatted cheaply, exactly as
Twisted's text log would.
"""

import io
import time

from twisted.logger import (
    FileLogObserver,
    Logger,
    LogLevel,
    LogPublisher,
    textFileLogObserver,
)
from twisted.python.failure import Failure
from twisted.trial import unittest

from smx import log as smxlog
from smx.logobserver import TurnLog, speedUp


class CountingFile(io.StringIO):
    """A file that counts its C{write} calls."""

    writes = 0

    def write(self, text):
        self.writes += 1
        return io.StringIO.write(self, text)


def lines(observer_factory, emit):
    out = io.StringIO()
    publisher = LogPublisher(observer_factory(out))
    emit(Logger(namespace="smx.smtps", observer=publisher))
    return out.getvalue()


class ClassicFormatterTests(unittest.TestCase):
    """
    L{speedUp} leaves every line as Twisted writes it.
    """

    def emit(self, log):
        log.info("{line}", line="ss_sess=S1, client_ipv4=127.0.0.1, relay=1")
        log.warn("{line}", line="sev=WARN, func=f, peer=qmgr")
        log.error("{line}", line="sev=ERR, x=%s" % ("y" * 300,))
        log.info("{line}", line="two\nlines")
        log.info("{line}", line=17)
        log.info("other {thing}", thing="format")
        log.info("{line}", line="with a system", log_system="sys")
        try:
            1 / 0
        except ZeroDivisionError:
            log.failure("{line}", Failure(), line="a failure")

    def test_sameLines(self):
        """
        smx's records, records with a newline, of another format, with a
        system or a failure: the same text with and without L{speedUp}.
        """
        for _ in range(3):
            before = lines(textFileLogObserver, self.emit)
            after = lines(lambda f: speedUp(textFileLogObserver(f)), self.emit)
            if before.split()[0] == after.split()[0]:
                break  # not across a change of second
        self.assertEqual(after, before)
        self.assertIn("[smx.smtps#warn] sev=WARN, func=f, peer=qmgr\n", after)
        self.assertIn("ZeroDivisionError", after)

    def test_stampPerSecond(self):
        """
        The time stamp follows the events' time, second by second.
        """
        observer = speedUp(textFileLogObserver(io.StringIO()))
        event = {
            "log_format": "{line}",
            "line": "a=1",
            "log_level": LogLevel.info,
            "log_namespace": "smx.qmgr",
        }
        now = time.time()
        for when in (now, now + 0.5, now + 1.0, now + 3600.2, now):
            fast = observer.formatEvent(dict(event, log_time=when))
            slow = textFileLogObserver(io.StringIO()).formatEvent(
                dict(event, log_time=when)
            )
            self.assertEqual(fast, slow)

    def test_otherObservers(self):
        """
        An observer that is not a L{FileLogObserver} is left as it is; a
        L{FileLogObserver} becomes a L{TurnLog} on the same file.
        """
        observer = object()
        self.assertIs(speedUp(observer), observer)
        out = io.StringIO()
        turn = speedUp(textFileLogObserver(out))
        self.assertIsInstance(turn, TurnLog)
        turn({"log_format": "x", "log_level": LogLevel.info, "log_time": 0.0})
        self.assertIn("x\n", out.getvalue())

    def test_fastPath(self):
        """
        An smx record is formatted without Twisted's formatter; another
        event goes to it.
        """
        from smx.logobserver import classicFormatter

        formatter = classicFormatter(lambda event: "twisted\n")
        event = {
            "log_format": "{line}",
            "line": "a=1",
            "log_level": LogLevel.info,
            "log_namespace": "smx.qmgr",
            "log_time": time.time(),
        }
        self.assertTrue(formatter(event).endswith(" [smx.qmgr#info] a=1\n"))
        self.assertEqual(formatter(dict(event, log_format="{x}")), "twisted\n")


class TurnLogTests(unittest.TestCase):
    """
    L{TurnLog}: the text of a reactor turn in one write, and smx's records
    taken directly (L{smx.log.writeTwistedRecordsTo}) written as the
    events would have been.
    """

    def setUp(self):
        self.addCleanup(smxlog.writeTwistedRecordsTo, None)

    def test_directSameLines(self):
        """
        A record of each severity through a L{smx.log.Logger} writing to
        Twisted's log: the same line whether it goes through Twisted's
        log or straight to the L{TurnLog}.
        """

        def emit(logger):
            logger.info(ss_sess="S1", client_ipv4="127.0.0.1")
            logger.warn("f", peer="qmgr")
            logger.error("g", error="two\nlines, and a comma")
            logger.critical("h", x=1)

        for _ in range(3):
            slowOut = io.StringIO()
            publisher = LogPublisher(textFileLogObserver(slowOut))
            slow = smxlog.Logger("smtps")
            slow.sink._log = Logger(namespace="smx.smtps", observer=publisher)
            emit(slow)
            fastOut = io.StringIO()
            turn = speedUp(textFileLogObserver(fastOut))
            turn.startDirect()
            emit(smxlog.Logger("smtps"))
            turn.stopDirect()
            if slowOut.getvalue().split()[0] == fastOut.getvalue().split()[0]:
                break  # not across a change of second
        self.assertEqual(fastOut.getvalue(), slowOut.getvalue())
        self.assertEqual(len(fastOut.getvalue().splitlines()), 4)
        self.assertIn("[smx.smtps#error] sev=CRIT, func=h, x=1\n", fastOut.getvalue())

    def test_stopDirect(self):
        """
        After L{TurnLog.stopDirect} records go through Twisted's log
        again.
        """
        out = io.StringIO()
        turn = speedUp(textFileLogObserver(out))
        turn.startDirect()
        turn.stopDirect()
        self.assertIsNone(smxlog._direct)
        events = []
        logger = smxlog.Logger("qmgr")
        logger.sink._log = Logger(namespace="smx.qmgr", observer=events.append)
        logger.info(a=1)
        self.assertEqual(out.getvalue(), "")
        self.assertEqual([e["line"] for e in events], ["a=1"])

    def test_oneWritePerTurn(self):
        """
        In a running reactor's turn the records and events go to the file
        with one C{write}, in order, at the end of the turn.
        """
        from twisted.internet import reactor
        from twisted.internet.defer import Deferred

        out = CountingFile()
        turn = speedUp(textFileLogObserver(out))
        logger = smxlog.Logger("smtpc")
        seen = Deferred()

        def inTurn():
            turn.startDirect()
            logger.info(a=1)
            turn(
                {
                    "log_format": "twisted",
                    "log_level": LogLevel.info,
                    "log_time": time.time(),
                }
            )
            logger.info(b=2)
            seen.callback((out.getvalue(), out.writes))

        reactor.callLater(0, inTurn)

        def check(during):
            self.assertEqual(during, ("", 0))
            d = Deferred()
            reactor.callLater(0, d.callback, None)
            return d.addCallback(lambda _: self.assertWrittenOnce(out))

        return seen.addCallback(check)

    def assertWrittenOnce(self, out):
        smxlog.writeTwistedRecordsTo(None)
        self.assertEqual(out.writes, 1)
        text = out.getvalue()
        self.assertRegex(
            text,
            r"^\S+ \[smx.smtpc#info\] a=1\n\S+ \[-#info\] twisted\n"
            r"\S+ \[smx.smtpc#info\] b=2\n$",
        )

    def test_flushAll(self):
        """
        L{smx.log.flushAll} (at exit and before a fork) writes what the
        direct L{TurnLog} collected.
        """
        out = io.StringIO()
        turn = speedUp(textFileLogObserver(out))
        turn.startDirect()
        turn._buffer._pending.append("kept\n")
        smxlog.flushAll()
        self.assertEqual(out.getvalue(), "kept\n")

    def test_writeFails(self):
        """
        A log file that cannot be written (a full disk, a closed standard
        output) drops the text; the record's caller sees no exception and
        the next write goes through again.
        """

        class Full(io.StringIO):
            full = True

            def write(self, text):
                if self.full:
                    raise OSError(28, "No space left on device")
                return io.StringIO.write(self, text)

        out = Full()
        turn = speedUp(textFileLogObserver(out))
        turn.startDirect()
        smxlog.Logger("qmgr").info(a=1)
        self.assertEqual(out.getvalue(), "")
        out.full = False
        smxlog.Logger("qmgr").info(b=2)
        self.assertTrue(out.getvalue().endswith(" [smx.qmgr#info] b=2\n"))

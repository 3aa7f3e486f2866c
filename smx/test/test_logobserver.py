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

from smx.logobserver import speedUp


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
        An observer that is not a L{FileLogObserver} is left as it is.
        """
        observer = object()
        self.assertIs(speedUp(observer), observer)
        self.assertIsInstance(
            speedUp(textFileLogObserver(io.StringIO())), FileLogObserver
        )

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

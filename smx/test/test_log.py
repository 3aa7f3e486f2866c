# -*- test-case-name: smx.test.test_log -*-
"""
Tests for L{smx.log}: the record format of seed App. C.2, severities,
levels and destinations.
"""

import os
import shutil
import socket

from twisted.trial import unittest

from smx import log
from smx.unixsocket import socketName


class EncodingTests(unittest.TestCase):
    """
    Field values are encoded as App. C.2 says.
    """

    def test_seedExample(self):
        """The seed's own example is encoded exactly."""
        self.assertEqual(
            log.encodeValue("550 5.7.1 no, not now, 99% usage"),
            "550 5.7.1 no%2C not now%2C 99%25 usage",
        )

    def test_controlCharacters(self):
        """CR, LF, NUL and other control characters never reach a record."""
        encoded = log.encodeValue("a\r\nb\x00c\td")
        self.assertEqual(encoded, "a%0D%0Ab%00c%09d")

    def test_nonASCII(self):
        """Non-ASCII text is written as the %XX of its UTF-8 bytes."""
        self.assertEqual(log.encodeValue("é"), "%C3%A9")
        self.assertEqual(log.encodeValue(b"\xff<x>"), "%FF<x>")

    def test_roundTrip(self):
        """L{decodeValue} undoes L{encodeValue}."""
        for text in ["plain", "a,b%c", "x\r\ny", "müller, 100%"]:
            self.assertEqual(log.decodeValue(log.encodeValue(text)), text)

    def test_formatAndParse(self):
        """A record is name=value pairs joined by ', ' and parses back."""
        line = log.formatRecord(
            {"ss_sess": "S1", "mail": "<a,b@x>", "skipped": None, "stat": 0}
        )
        self.assertEqual(line, "ss_sess=S1, mail=<a%2Cb@x>, stat=0")
        self.assertEqual(
            log.parseRecord("2026-01-01 smtps[1]: " + line),
            {"ss_sess": "S1", "mail": "<a,b@x>", "stat": "0"},
        )

    def test_formatEncodesEachValue(self):
        """
        L{log.formatRecord} writes each value as L{log.encodeValue} does,
        whether its shortcut for plain text applies or not.
        """

        class Text(str):
            pass

        values = [
            "plain<a@b>",
            "a,b",
            "100%",
            "x\r\ny",
            "tab\there",
            "müller",
            "",
            b"bytes,\xff",
            1.5,
            True,
            Text("sub,class"),
        ]
        for value in values:
            self.assertEqual(
                log.formatRecord({"v": value}), "v=" + log.encodeValue(value)
            )


class LoggerTests(unittest.TestCase):
    """
    L{log.Logger} filters by level and marks problems with sev=.
    """

    def setUp(self):
        self.sink = log.MemorySink()
        self.logger = log.Logger("smtps", level=9, sink=self.sink)

    def test_info(self):
        """Normal records carry no sev= field and keep field order."""
        self.logger.info(ss_sess="S1", client_ipv4="127.0.0.1")
        self.assertEqual(self.sink.lines(), ["ss_sess=S1, client_ipv4=127.0.0.1"])

    def test_levelFilter(self):
        """Records above the configured level are dropped."""
        self.logger.debug(level=12, detail="x")
        self.logger.info(level=9, kept="y")
        self.assertEqual(self.sink.lines(), ["kept=y"])
        self.assertFalse(self.logger.enabled(10))

    def test_problems(self):
        """Problems start with sev= and func= so egrep finds them."""
        self.logger.error("openIBDB", file="/q/ibdb/1", error="EIO")
        self.logger.warn("check", what="x")
        self.logger.critical("c")
        self.logger.alert("a")
        self.assertEqual(
            self.sink.lines(),
            [
                "sev=ERR, func=openIBDB, file=/q/ibdb/1, error=EIO",
                "sev=WARN, func=check, what=x",
                "sev=CRIT, func=c",
                "sev=ALERT, func=a",
            ],
        )

    def test_problemsIgnoreLevel(self):
        """Problems are written even at the lowest log level."""
        quiet = log.Logger("q", level=0, sink=self.sink)
        quiet.error("f")
        self.assertEqual(self.sink.lines(), ["sev=ERR, func=f"])


class FileSinkTests(unittest.TestCase):
    """
    L{log.FileSink} appends records and reopens its file (seed §6.8.1).
    """

    def test_reopen(self):
        """After the file is moved away, reopen() starts a new file."""
        path = self.mktemp()
        sink = log.FileSink(path, "qmgr")
        self.addCleanup(sink.close)
        logger = log.Logger("qmgr", sink=sink)
        logger.info(a=1)
        os.rename(path, path + ".0")
        logger.info(b=2)
        sink.reopen()
        logger.info(c=3)
        sink.flush()
        with open(path + ".0") as f:
            old = f.read()
        with open(path) as f:
            new = f.read()
        self.assertIn("qmgr[%d]: a=1\n" % (os.getpid(),), old)
        self.assertIn("b=2", old)
        self.assertNotIn("c=3", old)
        self.assertIn("c=3", new)

    def test_rewindAfterCopy(self):
        """
        After C{cp qmgr.log qmgr.log.0} (the path still names the open
        file), reopen() rewinds it: it starts again from empty, holds only
        the new records and no NUL bytes, and the copy keeps the old ones.
        """
        path = self.mktemp()
        sink = log.FileSink(path, "qmgr")
        self.addCleanup(sink.close)
        logger = log.Logger("qmgr", sink=sink)
        logger.info(a=1)
        logger.info(b=2)
        sink.flush()
        shutil.copyfile(path, path + ".0")
        sink.reopen()
        self.assertEqual(os.path.getsize(path), 0)
        logger.info(c=3)
        sink.flush()
        with open(path, "rb") as f:
            new = f.read()
        with open(path + ".0", "rb") as f:
            old = f.read()
        self.assertRegex(new, rb"^\S+ qmgr\[%d\]: c=3\n$" % (os.getpid(),))
        self.assertNotIn(b"\0", new)
        self.assertIn(b"a=1", old)
        self.assertIn(b"b=2", old)

    def test_reopenAfterRemove(self):
        """After the file is removed, reopen() creates it again."""
        path = self.mktemp()
        sink = log.FileSink(path, "qmgr")
        self.addCleanup(sink.close)
        logger = log.Logger("qmgr", sink=sink)
        logger.info(a=1)
        sink.flush()
        os.unlink(path)
        sink.reopen()
        logger.info(b=2)
        sink.flush()
        with open(path) as f:
            self.assertEqual(f.read().split(": ", 1)[1], "b=2\n")

    def test_sharedFileKeepsOrder(self):
        """
        Two components logging to one file: their records appear in the
        order they were written.
        """
        path = self.mktemp()
        a = log.FileSink(path, "smtps")
        b = log.FileSink(path, "qmgr")
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        for i in range(3):
            log.Logger("smtps", sink=a).info(n=2 * i)
            log.Logger("qmgr", sink=b).info(n=2 * i + 1)
        a.flush()
        with open(path) as f:
            lines = f.read().splitlines()
        self.assertEqual([line.rsplit("n=", 1)[1] for line in lines], list("012345"))
        self.assertIn(" smtps[", lines[0])
        self.assertIn(" qmgr[", lines[1])

    def test_writtenAtEndOfTurn(self):
        """
        In the running reactor's thread, records are written together once
        the reactor's turn ends, without a flush.
        """
        from twisted.internet import reactor, task

        path = self.mktemp()
        sink = log.FileSink(path, "smtps")
        self.addCleanup(sink.close)
        log.Logger("smtps", sink=sink).info(a=1)
        log.Logger("smtps", sink=sink).info(b=2)

        def check():
            with open(path) as f:
                text = f.read()
            self.assertIn("a=1", text)
            self.assertIn("b=2", text)

        return task.deferLater(reactor, 0.01, check)

    def test_closeWrites(self):
        """Closing the last sink of a file writes what was collected."""
        path = self.mktemp()
        sink = log.FileSink(path, "smtps")
        log.Logger("smtps", sink=sink).info(a=1)
        sink.close()
        with open(path) as f:
            self.assertIn("a=1", f.read())


class SyslogSinkTests(unittest.TestCase):
    """
    L{log.SyslogSink} sends RFC 3164 style datagrams to a syslog socket.
    """

    def test_datagram(self):
        """The datagram has the facility/severity priority and the ident."""
        path = os.path.abspath(self.mktemp())
        server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        server.bind(socketName(path))
        self.addCleanup(server.close)
        sink = log.SyslogSink("smX-MTA", "mail", frozenset(), path=path)
        self.addCleanup(sink.close)
        log.Logger("smtps", sink=sink).error("f", x="1")
        data = server.recv(1024)
        # mail (2) * 8 + err (3) = 19
        self.assertEqual(data, b"<19>smX-MTA: sev=ERR, func=f, x=1")

    def test_noSyslogFallsBack(self):
        """Without a syslog socket records go to the fallback sink."""
        fallback = log.MemorySink()
        sink = log.SyslogSink(
            "smx", "daemon", frozenset(), path=self.mktemp(), fallback=fallback
        )
        log.Logger("smtps", sink=sink).info(a="b")
        self.assertEqual(fallback.lines(), ["a=b"])

# -*- test-case-name: smx.mail.test.test_cleanupfailures -*-
"""
A cleanup that fails after a failed transaction is logged with C{sev=},
not swallowed: SMTPS's abort of a content writer and removal of stored
content (L{smx.mail.commit}), SMTPC's closing of a content file
(L{smx.mail.clientprotocol}).
"""

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from smx.log import Logger, MemorySink, parseRecord
from smx.mail.client import ClientMachine
from smx.mail.clientprotocol import ClientProtocol
from smx.mail.test.test_smtps import Harness

_SESSION = b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@local.test>\r\nDATA\r\n"


class CommitCleanupTests(unittest.TestCase):
    """
    SMTPS answers 451 when a sync fails; if cleaning up after it fails
    too, that is a C{sev=ERR} record naming what failed.
    """

    def test_abortFails(self):
        """
        The content sync failed and aborting the writer raises: 451, and
        an ERR record for C{writer.abort} with the error.
        """
        h = Harness()
        h.store.failCommit = OSError("full")
        createWriter = h.store.createWriter

        def failingWriter(transactionId):
            writer = createWriter(transactionId)

            def abort():
                raise OSError("cannot unlink")

            writer.abort = abort
            return writer

        h.store.createWriter = failingWriter
        h.connect()
        h.send(_SESSION)
        out = h.send(b"x\r\n.\r\n")
        self.assertTrue(out.startswith(b"451 4.3.0 "), out)
        [record] = [r for r in h.records() if r.get("func") == "writer.abort"]
        self.assertEqual(record["sev"], "ERR")
        self.assertIn("cannot unlink", record["error"])
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 2)

    def test_removeFails(self):
        """
        QMGR failed and removing the stored content raises: 451, and an
        ERR record for C{contentStore.remove}.
        """
        h = Harness()
        h.qmgr.failCommit = OSError("disk")

        def remove(transactionId):
            raise OSError("read-only file system")

        h.store.remove = remove
        h.connect()
        h.send(_SESSION)
        out = h.send(b"x\r\n.\r\n")
        self.assertTrue(out.startswith(b"451 4.3.0 "), out)
        [record] = [r for r in h.records() if r.get("func") == "contentStore.remove"]
        self.assertEqual(record["sev"], "ERR")
        self.assertIn("read-only file system", record["error"])
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 2)


class _Unclosable:
    """A content file whose close fails."""

    def read(self, n=-1):
        return b""

    def close(self):
        raise OSError("I/O error")


class BodyCloseTests(unittest.TestCase):
    """
    SMTPC closes the content file when a transaction ends; a failure to
    close it is a C{sev=WARN} record.
    """

    def test_closeFails(self):
        """
        The content file cannot be closed: a WARN record for
        C{closeBody} with the error, and the session goes on failing the
        way it would have.
        """
        sink = MemorySink()
        p = ClientProtocol(
            ClientMachine("me.test"),
            Clock(),
            60,
            logger=Logger("smtpc", sink=sink),
            sessionId="S1",
        )
        p.makeConnection(StringTransport())
        p.whenReady()
        p.dataReceived(b"220 mx.test ESMTP\r\n")
        p.dataReceived(b"250 mx.test\r\n")
        p.transaction("a@b.test", ["c@d.test"], 10, "7BIT", _Unclosable())
        p.bodyFailed("test")
        records = [parseRecord(line) for line in sink.lines()]
        [warn] = [r for r in records if r.get("func") == "closeBody"]
        self.assertEqual(warn["sev"], "WARN")
        self.assertEqual(warn["da_sess"], "S1")
        self.assertIn("I/O error", warn["error"])
        self.assertIsNone(p._bodyFile)

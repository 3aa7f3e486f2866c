# -*- test-case-name: smx.queue.test.test_recovery -*-
"""
Tests for L{smx.queue.recovery.recoverQueue}: the queue rebuilt from real
IBDB files (records in the format L{smx.queue.ibdb} writes), a real
Berkeley DB DEFEDB and real CDB files in a temporary directory.
"""

import os
import zlib

from twisted.trial import unittest

from smx.queue import ibdb
from smx.queue.cdb import FileContentStore
from smx.queue.recovery import recoverQueue
from smx.queue.testing import defaultDefedb

CONTENT = b"From: a@x.test\r\nSubject: test\r\n\r\nhello\r\n"
A = "S0000000000001000"
B = "S0000000000002000"


def envelope(taId, recipients=("b@y.test",), **extra):
    data = {
        "id": taId,
        "session": "S0",
        "sender": "a@x.test",
        "recipients": [
            {"address": address, "index": i} for i, address in enumerate(recipients)
        ],
        "size": len(CONTENT),
        "received": 1000.0,
    }
    data.update(extra)
    return data


class RecoverQueueTests(unittest.TestCase):
    """
    Tests for L{recoverQueue}.
    """

    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        self.ibdbDir = os.path.join(self.dir, "ibdb")
        os.makedirs(self.ibdbDir)
        self.cdb = FileContentStore(os.path.join(self.dir, "cdb"))
        self.defedb = defaultDefedb(os.path.join(self.dir, "defedb"))
        self.defedb.open()
        self.addCleanup(self.defedb.close)
        self.problems = []
        self.records = b""

    def log(self, recordType, payload):
        self.records += ibdb.encodeRecord(recordType, payload)

    def content(self, taId, data=CONTENT):
        writer = self.cdb.createWriter(taId)
        writer.write(data)
        self.successResultOf(writer.commit())

    def recover(self, defedb=True, complete=True):
        with open(os.path.join(self.ibdbDir, "ibdb.0000000001"), "wb") as f:
            f.write(self.records)
        return recoverQueue(
            self.ibdbDir,
            self.defedb if defedb else None,
            self.cdb,
            self.problems.append,
            defedbComplete=complete,
        )

    def states(self, result, taId):
        ta = result.transactions[taId]
        return [r.state for _, r in sorted(ta.recipients.items())]

    def test_queuedAgain(self):
        """
        Recipients that were queued or being delivered at the crash are
        queued again; final states from C{R} records stay.
        """
        self.log(ibdb.TRANSACTION, envelope(A, ("b@y.test", "c@y.test", "d@y.test")))
        self.log(ibdb.RECIPIENTS, {"id": A, "rcpts": [[0, "delivered"], [1, "active"]]})
        self.content(A)
        result = self.recover()
        self.assertEqual(list(result.transactions), [A])
        self.assertEqual(self.states(result, A), ["delivered", "queued", "queued"])
        self.assertEqual(self.problems, [])

    def test_finished(self):
        """
        A transaction with a C{D} record, or whose recipients are all
        final, is finished: not queued, and its content is no orphan.
        """
        self.log(ibdb.TRANSACTION, envelope(A))
        self.log(ibdb.DONE, {"id": A})
        self.log(ibdb.TRANSACTION, envelope(B))
        self.log(ibdb.RECIPIENTS, {"id": B, "rcpts": [[0, "failed"]]})
        self.content(A)
        self.content(B)
        result = self.recover()
        self.assertEqual(result.transactions, {})
        self.assertEqual(result.finished, {A, B})
        self.assertEqual(result.orphans, [])

    def test_defedbWins(self):
        """
        A recipient DEFEDB has is deferred with DEFEDB's state, whatever
        IBDB says (the move to DEFEDB is committed before IBDB notes it).
        """
        self.log(ibdb.TRANSACTION, envelope(A, ("b@y.test", "c@y.test")))
        self.log(ibdb.RECIPIENTS, {"id": A, "rcpts": [[0, "active"]]})
        self.content(A)
        self.defedb.putRecipients(
            envelope(A),
            [
                {
                    "index": 0,
                    "address": "b@y.test",
                    "state": "deferred",
                    "tries": 2,
                    "nextTry": 5000.0,
                }
            ],
        )
        result = self.recover()
        r = result.transactions[A].recipients[0]
        self.assertEqual(
            (r.state, r.tries, r.nextTry, r.inDefedb), ("deferred", 2, 5000.0, True)
        )
        self.assertEqual(self.states(result, A), ["deferred", "queued"])
        self.assertEqual(result.fromDefedb, 1)

    def test_deferredNotInDefedb(self):
        """
        A recipient IBDB marks deferred that DEFEDB does not have was
        finished there; it is delivered again if DEFEDB could not be
        opened, and shown deferred when DEFEDB is only as checkpointed.
        """
        self.log(ibdb.TRANSACTION, envelope(A, ("b@y.test", "c@y.test")))
        self.log(ibdb.RECIPIENTS, {"id": A, "rcpts": [[0, "deferred"]]})
        self.content(A)
        result = self.recover()
        self.assertEqual(self.states(result, A), ["delivered", "queued"])
        result = self.recover(defedb=False)
        self.assertEqual(self.states(result, A), ["queued", "queued"])
        result = self.recover(complete=False)
        self.assertEqual(self.states(result, A), ["deferred", "queued"])

    def test_onlyInDefedb(self):
        """
        A transaction whose IBDB record is gone (every recipient was in
        DEFEDB) is rebuilt from DEFEDB.
        """
        self.content(A)
        self.defedb.putRecipients(
            envelope(A),
            [{"index": 0, "address": "b@y.test", "state": "deferred", "tries": 1}],
        )
        result = self.recover()
        ta = result.transactions[A]
        self.assertEqual(ta.sender, "a@x.test")
        self.assertEqual(self.states(result, A), ["deferred"])

    def test_staleDefedb(self):
        """
        DEFEDB records of a transaction IBDB says is finished are listed
        for removal, not queued.
        """
        self.log(ibdb.TRANSACTION, envelope(A))
        self.log(ibdb.DONE, {"id": A})
        self.defedb.putRecipients(
            envelope(A), [{"index": 0, "address": "b@y.test", "state": "deferred"}]
        )
        result = self.recover()
        self.assertEqual(result.transactions, {})
        self.assertEqual(result.staleDefedb, [(A, [0])])

    def test_missingContent(self):
        """
        A queued transaction whose content is missing is reported and its
        recipients are held.
        """
        self.log(ibdb.TRANSACTION, envelope(A))
        result = self.recover()
        self.assertEqual(result.missing, [A])
        self.assertEqual(self.states(result, A), ["held"])
        [problem] = self.problems
        self.assertIn("missing", problem)
        self.assertIn(A, problem)

    def test_orphans(self):
        """
        Content without an envelope is reported and left alone; an empty
        content file (made ahead for a transaction that never ended) is
        finished, without a report.
        """
        self.content(A)
        self.content(B, b"")
        result = self.recover()
        self.assertEqual(result.orphans, [A])
        self.assertIn(B, result.finished)
        [problem] = self.problems
        self.assertIn("no envelope", problem)
        self.assertTrue(self.cdb.exists(A))

    def test_unacknowledged(self):
        """
        A transaction stored while its content was being synced, whose
        content is missing or short and to which nothing happened, never
        got a 250: it is dropped.  One with complete content is queued.
        """
        self.log(ibdb.TRANSACTION, envelope(A, contentPending=True))
        self.log(ibdb.TRANSACTION, envelope(B, contentPending=True))
        self.log(ibdb.TRANSACTION, envelope("S0000000000003000", contentPending=True))
        self.content(B, CONTENT[:5])
        self.content("S0000000000003000")
        result = self.recover()
        self.assertEqual(sorted(result.unacknowledged), [A, B])
        self.assertEqual(list(result.transactions), ["S0000000000003000"])
        self.assertEqual(len(self.problems), 2)

    def test_recycledContentChecked(self):
        """
        A transaction stored while its content was being synced into a
        recycled file (its envelope gives the content's CRC-32), to which
        nothing happened, never got a 250 when the file holds other bytes
        of the same length (a power failure kept the rename and not the
        overwrite): it is dropped.  One whose content matches is queued.
        """
        other = CONTENT.replace(b"hello", b"HELLO")
        self.log(
            ibdb.TRANSACTION,
            envelope(A, contentPending=True, contentCrc=zlib.crc32(CONTENT)),
        )
        self.log(
            ibdb.TRANSACTION,
            envelope(B, contentPending=True, contentCrc=zlib.crc32(CONTENT)),
        )
        self.content(A, other)
        self.content(B)
        result = self.recover()
        self.assertEqual(result.unacknowledged, [A])
        self.assertEqual(list(result.transactions), [B])
        self.assertEqual(result.transactions[B].contentCrc, zlib.crc32(CONTENT))

    def test_recycledNeverWritten(self):
        """
        A content without an envelope that begins with smx's C{Received:}
        header of another transaction is a recycled file whose writer died
        before writing to it: it is removed, not reported.  One whose
        header names its own transaction is reported and kept.
        """
        received = (
            "Received: from client.test ([127.0.0.1])\r\n"
            "\tby smx.test (smx 0.1.0) with ESMTP\r\n"
            "\tid %s; Tue, 01 Dec 2026 23:55:01 +0000\r\n"
        )
        self.content(A, (received % (B,)).encode() + CONTENT)
        self.content(B, (received % (B,)).encode() + CONTENT)
        result = self.recover()
        self.assertIn(A, result.finished)
        self.assertEqual(result.orphans, [B])
        [problem] = self.problems
        self.assertIn(B, problem)

    def test_recycledContentAfterAttempt(self):
        """
        Once a delivery was attempted the content had been committed: a
        CRC-32 that does not match drops nothing.
        """
        self.log(
            ibdb.TRANSACTION,
            envelope(
                A,
                ("b@y.test", "c@y.test"),
                contentPending=True,
                contentCrc=zlib.crc32(b"other"),
            ),
        )
        self.log(ibdb.RECIPIENTS, {"id": A, "rcpts": [[0, "failed"]]})
        self.content(A)
        result = self.recover()
        self.assertEqual(result.unacknowledged, [])
        self.assertEqual(list(result.transactions), [A])

    def test_damagedRecord(self):
        """
        A damaged IBDB record is reported once and skipped; the records
        after it are read.
        """
        self.log(ibdb.TRANSACTION, envelope(A))
        good = ibdb.encodeRecord(ibdb.TRANSACTION, envelope(B))
        self.records += good[:-3] + b"XYZ"
        self.log(ibdb.RECIPIENTS, {"id": A, "rcpts": [[0, "delivered"]]})
        self.content(B)
        result = self.recover()
        self.assertEqual(result.transactions, {})
        self.assertIn(A, result.finished)
        damaged, orphan = self.problems
        self.assertIn("checksum mismatch", damaged)
        self.assertIn("ibdb.0000000001", damaged)
        # the content of the transaction whose record was lost is kept
        self.assertEqual(result.orphans, [B])
        self.assertIn("no envelope", orphan)

# -*- test-case-name: smx.queue.test.test_defedb -*-
"""
Tests for L{smx.queue.defedb}: a real Berkeley DB environment in a
temporary directory.
"""

import os

from twisted.trial import unittest

from smx.queue import defedb

ENV = {
    "id": "S00000000407CE49200",
    "sender": "a@x.test",
    "size": 10,
    "received": 1000.0,
    "recipients": [{"address": "ignored"}],
}


def rcpt(index, nextTry, address=None):
    return {
        "index": index,
        "address": address or "r%d@y.test" % (index,),
        "nextTry": nextTry,
        "tries": 1,
    }


class DeferredEnvelopeDBTests(unittest.TestCase):
    """
    Tests for L{defedb.DeferredEnvelopeDB}.
    """

    def setUp(self):
        self.dir = self.mktemp()
        self.reports = []
        self.db = defedb.DeferredEnvelopeDB(self.dir, report=self.reports.append)
        self.db.open()
        self.addCleanup(self.db.close)

    def reopen(self):
        self.db.close()
        self.db = defedb.DeferredEnvelopeDB(self.dir, report=self.reports.append)
        self.db.open()

    def test_putAndLoad(self):
        """
        Stored recipients and their envelope are read back after the
        environment is closed and reopened (with recovery); the envelope
        is stored without its recipient list.
        """
        self.db.putRecipients(ENV, [rcpt(0, 50.0), rcpt(2, 20.0)])
        self.reopen()
        [(envelope, rcpts)] = self.db.loadAll()
        self.assertEqual(envelope["sender"], "a@x.test")
        self.assertNotIn("recipients", envelope)
        self.assertEqual(sorted(r["index"] for r in rcpts), [0, 2])

    def test_dueOrdered(self):
        """
        C{due} lists recipients by next-time-to-try, only those due.
        """
        other = dict(ENV, id="S00000000407CE49300")
        self.db.putRecipients(ENV, [rcpt(0, 50.0), rcpt(1, 10.0)])
        self.db.putRecipients(other, [rcpt(0, 30.0)])
        self.assertEqual(
            list(self.db.due(40.0)),
            [(10.0, ENV["id"], 1), (30.0, other["id"], 0)],
        )
        self.assertEqual(list(self.db.due(100.0, limit=1)), [(10.0, ENV["id"], 1)])

    def test_updateMovesDueEntry(self):
        """
        Storing a recipient again with a new next-time-to-try replaces its
        entry in the due index.
        """
        self.db.putRecipients(ENV, [rcpt(0, 10.0)])
        self.db.putRecipients(ENV, [rcpt(0, 90.0)])
        self.assertEqual(list(self.db.due(50.0)), [])
        self.assertEqual(list(self.db.due(100.0)), [(90.0, ENV["id"], 0)])

    def test_remove(self):
        """
        Removing recipients removes their due entries; the envelope goes
        with the last recipient.
        """
        self.db.putRecipients(ENV, [rcpt(0, 10.0), rcpt(1, 10.0)])
        self.assertFalse(self.db.removeRecipients(ENV["id"], [0]))
        self.assertEqual(list(self.db.due(100.0)), [(10.0, ENV["id"], 1)])
        self.assertTrue(self.db.removeRecipients(ENV["id"], [1]))
        self.assertEqual(self.db.loadAll(), [])
        self.assertEqual(list(self.db.due(100.0)), [])

    def test_checkpoint(self):
        """
        A checkpoint can be taken at any time.
        """
        self.db.putRecipients(ENV, [rcpt(0, 10.0)])
        self.db.checkpoint()
        self.db.checkpoint(force=True)
        self.reopen()
        self.assertEqual(len(self.db.loadAll()), 1)

    def test_damagedRecord(self):
        """
        A recipient record that cannot be decoded is reported and skipped;
        the other records load.
        """
        self.db.putRecipients(ENV, [rcpt(0, 10.0), rcpt(1, 10.0)])
        self.db._rcpts.put(defedb.recipientKey(ENV["id"], 1), b"{not json")
        [(envelope, rcpts)] = self.db.loadAll()
        self.assertEqual([r["index"] for r in rcpts], [0])
        self.assertEqual(len(self.reports), 1)
        self.assertIn("cannot be decoded", self.reports[0])

    def test_unusable(self):
        """
        A base directory that cannot be created raises L{defedb.DefedbError}
        naming it.
        """
        blocker = self.mktemp()
        with open(blocker, "w") as f:
            f.write("x")
        bad = defedb.DeferredEnvelopeDB(os.path.join(blocker, "defedb"))
        e = self.assertRaises(defedb.DefedbError, bad.open)
        self.assertIn(blocker, str(e))

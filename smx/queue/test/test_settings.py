# -*- test-case-name: smx.queue.test.test_settings -*-
"""
Tests for L{smx.queue.settings} and L{QueueManager.fromConfiguration} with
real smx.conf text.
"""

import os

from twisted.internet.task import Clock
from twisted.trial import unittest

from smx.config import configurationFromText
from smx.log import Logger, MemorySink
from smx.mail.testing import FakeDeliveryAgent
from smx.maps.testing import FakeAddressResolver
from smx.queue.qmgr import QueueManager, contentStoreFromConfiguration
from smx.queue.settings import QueueSettings

CONF = """
qmgr {
    AQ_max_entries = 500;
    retry_min_delay = 2m;
    retry_max_delay = 2h;
    min_disk_space = 2000;
    ok_disk_space = 4000;
    flags = { header_only_in_bounce };
    IBDB { max_commit_delay = 5000; max_open_TAs = 7; size = 1MB; }
    DEFEDB { base_directory = mydefedb; }
    smtpc_initial_connections = 3;
}
"""


class OptionsTests(unittest.TestCase):
    """
    The QMGR options are read by their seed names with units converted.
    """

    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.cfg = configurationFromText(CONF, queueDirectory=self.dir)

    def test_settings(self):
        """
        Times in seconds, sizes in bytes, flags, paths relative to the
        queue directory.
        """
        settings = QueueSettings.fromConfiguration(self.cfg)
        args = {name: getattr(settings, name) for name in settings.__slots__}
        self.assertEqual(args["aqMaxEntries"], 500)
        self.assertEqual(args["retryMinDelay"], 120.0)
        self.assertEqual(args["retryMaxDelay"], 7200.0)
        self.assertEqual(args["minDiskSpace"], 2000 * 1024)
        self.assertEqual(args["okDiskSpace"], 4000 * 1024)
        self.assertTrue(args["headerOnlyInBounce"])
        self.assertEqual(args["maxCommitDelay"], 0.005)
        self.assertEqual(args["maxOpenTransactions"], 7)
        self.assertEqual(args["ibdbFileSize"], 1024 * 1024)
        self.assertEqual(args["defedbDirectory"], os.path.join(self.dir, "mydefedb"))
        self.assertEqual(args["defedbLogDirectory"], os.path.join(self.dir, "defedb"))
        self.assertEqual(args["cdbDirectory"], self.dir)
        self.assertEqual(args["smtpcInitialConnections"], 3)

    def test_fromConfiguration(self):
        """
        C{fromConfiguration} builds a working queue manager.
        """
        cdb = contentStoreFromConfiguration(self.cfg)
        self.assertEqual(cdb.baseDirectory, self.dir)
        clock = Clock()
        qmgr = QueueManager.fromConfiguration(
            self.cfg,
            cdb,
            FakeAddressResolver(),
            FakeDeliveryAgent(),
            clock,
            logger=Logger("qmgr", sink=MemorySink()),
        )
        self.assertEqual(qmgr.scheduler.aqMaxEntries, 500)
        self.assertEqual(qmgr.slowStart.initial, 3)
        qmgr.controlSocket = None  # the Clock is no reactor to listen with
        qmgr.startService()
        self.addCleanup(qmgr.stopService)
        self.assertTrue(os.path.isdir(os.path.join(self.dir, "mydefedb")))

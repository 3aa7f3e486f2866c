# -*- test-case-name: smx.test.test_tools -*-
"""
Tests for the configuration the queue tools (C{smx mailq}, C{smx qmgrctl})
work with.
"""

import io
import os
import sys

from twisted.trial import unittest

from smx.config import ConfigError
from smx.scripts import qmgrctl
from smx.scripts.qmgrctl import controlSocketPath, loadToolConfiguration


class ToolConfigurationTests(unittest.TestCase):
    """
    L{loadToolConfiguration}: C{-f}, else the queue directory's smx.conf,
    else the defaults.
    """

    def setUp(self):
        self.queue = os.path.abspath(self.mktemp())
        os.makedirs(self.queue)

    def write(self, name, text):
        path = os.path.join(self.queue, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_queueDirectoryConfiguration(self):
        """The smx.conf of the queue directory names the control socket."""
        self.write("smx.conf", 'qmgr { control_socket = "qmgr.ctl"; }\n')
        self.assertEqual(
            controlSocketPath(None, None, self.queue),
            os.path.join(self.queue, "qmgr.ctl"),
        )

    def test_explicitFile(self):
        """-f wins over the queue directory's smx.conf."""
        self.write("smx.conf", 'qmgr { control_socket = "a.ctl"; }\n')
        other = self.write("other.conf", 'qmgr { control_socket = "b.ctl"; }\n')
        cfg = loadToolConfiguration(other, self.queue)
        self.assertEqual(
            cfg.section("qmgr")["control_socket"], os.path.join(self.queue, "b.ctl")
        )

    def test_defaults(self):
        """Without any file the built-in default applies."""
        cfg = loadToolConfiguration(None, self.queue)
        self.assertEqual(
            cfg.section("qmgr")["control_socket"],
            os.path.join(self.queue, "qmgrctl.sock"),
        )

    def test_badFile(self):
        """A broken smx.conf is a ConfigError, not a silent default."""
        self.write("smx.conf", "qmgr {\n")
        self.assertRaises(ConfigError, loadToolConfiguration, None, self.queue)


class QmgrctlUsageTests(unittest.TestCase):
    """
    C{smx qmgrctl} refuses arguments a command does not take, before it
    talks to QMGR.
    """

    def test_statusTakesNoArgument(self):
        """
        C{status}, C{processes} and C{reload} with an argument: exit 2 and
        one line naming it (C{status} would otherwise check the health and
        ignore it, so that a mistyped command line looked healthy).
        """
        for command in ("status", "processes", "reload"):
            err = io.StringIO()
            self.patch(sys, "stderr", err)
            status = qmgrctl.run(["-S", "/nonexistent/qmgr.ctl", command, "extra"])
            self.assertEqual(status, 2, command)
            self.assertEqual(
                err.getvalue(),
                "smx qmgrctl: %s takes no argument (got extra)\n" % (command,),
            )

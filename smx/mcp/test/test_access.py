# -*- test-case-name: smx.mcp.test.test_access -*-
"""
Tests of L{smx.mcp.access}: the MCP refuses, before it starts anything, a
service whose user cannot run its program, enter the queue directory or
read its configuration file, with real directories, modes and the user
C{nobody} (as root).
"""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from typing import Any

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from smx.config import ConfigError, configurationFromText
from smx.mcp.access import accessProblem, configurationFile
from smx.mcp.settings import servicesFromConfiguration


class ConfigurationFileTests(SynchronousTestCase):
    """
    L{configurationFile} finds the file a program is given.
    """

    def test_forms(self) -> None:
        """
        C{-f FILE}, C{-fFILE}, C{--config FILE}, C{--config=FILE}; none.
        """
        for argv, expected in (
            (["smx-qmgr", "-f", "/etc/smx/smx.conf"], "/etc/smx/smx.conf"),
            (["smx-qmgr", "-i", "1", "-fsmx.conf"], "smx.conf"),
            (["twistd", "smx", "--config", "a.conf"], "a.conf"),
            (["twistd", "smx", "--config=b.conf"], "b.conf"),
            (["procmail", "-z"], None),
            (["prog", "-f"], None),
        ):
            self.assertEqual(configurationFile(argv), expected, argv)


class AccessTests(SynchronousTestCase):
    """
    Real directories and the user C{nobody}.
    """

    def setUp(self) -> None:
        if os.geteuid() != 0:
            raise SkipTest("needs root to judge another user's access")
        try:
            self.nobody = pwd.getpwnam("nobody")
        except KeyError:
            raise SkipTest("no user nobody")
        # under /tmp, which every user can enter (the checkout may not be)
        self.top = tempfile.mkdtemp(prefix="smx-access-")
        self.addCleanup(shutil.rmtree, self.top)
        os.chmod(self.top, 0o755)
        self.queue = os.path.join(self.top, "q")
        os.mkdir(self.queue)
        os.chown(self.queue, self.nobody.pw_uid, self.nobody.pw_gid)
        self.etc = os.path.join(self.top, "etc")
        os.mkdir(self.etc)
        self.conf = os.path.join(self.etc, "smx.conf")
        with open(self.conf, "w") as f:
            f.write("")
        os.chmod(self.conf, 0o644)

    def services(self, path: str = "/bin/true", keyword: str = "qmgr") -> Any:
        text = '%s { mcp_type = wait; user = nobody;\n  path = "%s";\n' % (
            keyword,
            path,
        ) + '  arguments = "smx-%s -f %s"; }' % (keyword, self.conf)
        c = configurationFromText(text, queueDirectory=self.queue)
        return servicesFromConfiguration(c, 0)

    def error(self, **kw: Any) -> str:
        return str(self.assertRaises(ConfigError, self.services, **kw))

    def test_fine(self) -> None:
        """
        A user that can do everything: the service is accepted.
        """
        [qmgr] = self.services()
        self.assertEqual(qmgr.user, "nobody")

    def test_queueDirectory(self) -> None:
        """
        A queue directory the user cannot enter (a C{mktemp -d} of root,
        0700) is refused naming the section, C{user}, the directory, its
        owner and mode; QMGR must also be able to write there.
        """
        os.chown(self.queue, 0, 0)
        os.chmod(self.queue, 0o700)
        self.assertEqual(
            self.error(),
            "smx.conf:1:25: option 'user' in section 'qmgr': user nobody "
            "cannot enter the queue directory %s, where the MCP starts it: "
            "it is root:root 0700 (smx setup makes it smxq:smxq 0755)" % (self.queue,),
        )
        os.chmod(self.queue, 0o755)
        qmgr = os.path.join(self.top, "smx-qmgr")
        shutil.copy("/bin/true", qmgr)
        self.assertIn(
            "user nobody cannot write to the queue directory", self.error(path=qmgr)
        )
        # the other components, and other programs, only enter it
        self.services(keyword="smar")
        self.services()

    def test_configurationFile(self) -> None:
        """
        A configuration file (C{-f} in C{arguments}) the user cannot read,
        because of its directory or its own mode.
        """
        os.chmod(self.etc, 0o700)
        self.assertEqual(
            self.error(),
            "smx.conf:3:3: option 'arguments' in section 'qmgr': user nobody "
            "cannot read %s: directory %s is root:root 0700" % (self.conf, self.etc),
        )
        os.chmod(self.etc, 0o755)
        os.chmod(self.conf, 0o600)
        self.assertIn(
            "cannot read %s: it is root:root 0600" % (self.conf,), self.error()
        )

    def test_program(self) -> None:
        """
        A program under a directory the user cannot enter (a checkout
        under /root), and a script whose C{#!} interpreter lies there.
        """
        private = os.path.join(self.top, "private")
        os.mkdir(private, 0o700)
        program = os.path.join(private, "true")
        shutil.copy("/bin/true", program)
        self.assertIn(
            "option 'path' in section 'qmgr': user nobody cannot run %s: "
            "directory %s is root:root 0700" % (program, private),
            self.error(path=program),
        )
        script = os.path.join(self.top, "smx-qmgr")
        with open(script, "w") as f:
            f.write("#!%s\n" % (program,))
        os.chmod(script, 0o755)
        self.assertIn(
            "user nobody cannot run %s: directory %s" % (program, private),
            self.error(path=script),
        )
        os.chmod(private, 0o755)
        self.services(path=script)

    def test_root(self) -> None:
        """
        Root may do anything; a missing file is left to the other checks.
        """
        self.assertIsNone(accessProblem("/root/nonexistent", 0, 0, "r"))
        self.assertIsNone(
            accessProblem("/nonexistent/x", self.nobody.pw_uid, self.nobody.pw_gid, "r")
        )

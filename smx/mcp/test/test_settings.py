# -*- test-case-name: smx.mcp.test.test_settings -*-
"""
Tests of L{smx.mcp.settings}: the services of a split configuration and
the bad input the MCP refuses before it starts anything.
"""

from __future__ import annotations

import os
import pwd
import socket
from typing import Any

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from smx.config import ConfigError, configurationFromText
from smx.mcp.settings import (
    dependents,
    isSplitConfiguration,
    servicesFromConfiguration,
)
from smx.mcp.sockets import ListenError, bindService

#: a program that exists and runs
PROGRAM = "/bin/true"

LAYOUT = """\
qmgr {
    mcp_type = wait; user = root;
    restartdependencies = { smtps, smtpc, smar };
    path = /bin/true; arguments = "qmgr -f /etc/smx/smx.conf";
}
smtps { port = 2525; address = 127.0.0.1; mcp_type = pass;
    pass_fd_socket = smtpsfd; min_processes = 2; max_processes = 2;
    pass_id = "-i"; use_id_in_logfile_name = yes;
    path = /bin/true; arguments = "smtps -f /etc/smx/smx.conf"; }
smtpc { mcp_type = wait; path = "/bin/true"; arguments = "smtpc -f 'x y.conf'"; }
smar { mcp_type = wait; restartdependencies = { smtps, qmgr };
    path = /bin/true; arguments = "smar"; }
procmail { mcp_type = accept; socket { name = lmtp.sock; umask = 007; }
    path = /bin/true; arguments = "procmail -z"; }
"""


class SettingsTests(SynchronousTestCase):
    """
    The services of a configuration.
    """

    def configuration(self, text: str) -> Any:
        self.queue = os.path.abspath(self.mktemp())
        os.makedirs(self.queue)
        return configurationFromText(text, queueDirectory=self.queue)

    def error(self, text: str, mcpUid: Any = None) -> str:
        c = self.configuration(text)
        return str(self.assertRaises(ConfigError, servicesFromConfiguration, c, mcpUid))

    def test_split(self) -> None:
        """
        A configuration is in split mode when a top-level section sets
        C{path}.
        """
        self.assertTrue(isSplitConfiguration(self.configuration(LAYOUT)))
        self.assertFalse(
            isSplitConfiguration(self.configuration("smtps { port = 2525; }"))
        )

    def test_seedWarnings(self) -> None:
        """
        The warnings about the seed §5.3 example's inert options do not
        say that smx has no split mode: C{CDB_gid} names what smx does
        instead (C{smx setup}'s set-group-id CDB directories).
        """
        c = self.configuration(
            LAYOUT.replace("smtps { ", "smtps { CDB_gid = 261; flags = {8bitmime};")
        )
        [line] = [w for w in c.warnings if "CDB_gid" in w]
        self.assertNotIn("does not have yet", line)
        self.assertIn("set-group-id", line)

    def test_services(self) -> None:
        """
        Every section that sets C{path} is a service, in start order
        (smar, qmgr, other services, smtpc, smtps); C{arguments} is split
        as a shell would; C{pass_id} is inserted after the program's
        name; C{use_id_in_logfile_name} adds the number to the log file.
        """
        services = servicesFromConfiguration(self.configuration(LAYOUT), 0)
        self.assertEqual(
            [s.name for s in services], ["smar", "qmgr", "procmail", "smtpc", "smtps"]
        )
        byName = {s.name: s for s in services}
        smtps = byName["smtps"]
        self.assertEqual(
            smtps.arguments(1), ["smtps", "-i", "1", "-f", "/etc/smx/smx.conf"]
        )
        self.assertEqual(
            smtps.logFileName("/var/log/smx", 1), "/var/log/smx/smtps1.log"
        )
        self.assertEqual(byName["qmgr"].logFileName("/l", 0), "/l/qmgr.log")
        self.assertEqual(smtps.passFdSocket, os.path.join(self.queue, "smtpsfd"))
        self.assertEqual((smtps.minProcesses, smtps.port), (2, 2525))
        self.assertEqual(byName["smtpc"].argv, ("smtpc", "-f", "x y.conf"))
        self.assertEqual(byName["qmgr"].uid, 0)
        self.assertIsNone(byName["smtpc"].uid)
        procmail = byName["procmail"]
        self.assertEqual(procmail.socketName, os.path.join(self.queue, "lmtp.sock"))
        self.assertEqual(procmail.socketUmask, 0o007)
        self.assertTrue(procmail.listens())
        self.assertEqual(
            [s.name for s in dependents(services, "qmgr")], ["smar", "smtpc", "smtps"]
        )

    def test_missingProgram(self) -> None:
        """
        A C{path} that does not exist or cannot be executed: the error
        names the file, line, section and option.
        """
        message = self.error(
            "qmgr {\n  mcp_type = wait;\n  path = /nonexistent/qmgr; arguments = q; }"
        )
        self.assertEqual(
            message,
            "smx.conf:3:3: option 'path' in section 'qmgr': cannot run "
            "/nonexistent/qmgr: No such file or directory",
        )
        self.assertIn(
            "not executable",
            self.error("qmgr { mcp_type = wait; path = /etc/passwd; arguments = q; }"),
        )

    def test_unknownUser(self) -> None:
        """
        A C{user} or C{group} that does not exist.
        """
        self.assertEqual(
            self.error(
                "smar { mcp_type = wait; user = smxnosuchuser; path = /bin/true; "
                "arguments = s; }"
            ),
            "smx.conf:1:25: option 'user' in section 'smar': no user "
            "'smxnosuchuser' on this system",
        )
        self.assertIn(
            "option 'group' in section 'smar': no group 'smxnosuchgroup'",
            self.error(
                "smar { mcp_type = wait; group = smxnosuchgroup; path = /bin/true; "
                "arguments = s; }"
            ),
        )

    def test_notRoot(self) -> None:
        """
        An MCP that is not root cannot start a service as another user.
        """
        self.assertIn(
            "option 'user' in section 'smar': the MCP runs as",
            self.error(
                "smar { mcp_type = wait; user = root; path = /bin/true; arguments = s; }",
                mcpUid=12345,
            ),
        )

    def test_missingOptions(self) -> None:
        """
        A section with C{path} needs C{mcp_type} and C{arguments}; C{pass}
        needs C{pass_fd_socket} (checked when the file is read); a
        listening type needs C{port} or C{socket}; restart dependencies
        must be services.
        """
        self.assertIn(
            "section 'smar' sets 'path' but not 'mcp_type'",
            self.error("smar { path = /bin/true; arguments = s; }"),
        )
        self.assertIn(
            "section 'smar' sets 'path' but not 'arguments'",
            self.error("smar { mcp_type = wait; path = /bin/true; }"),
        )
        e = self.assertRaises(
            ConfigError,
            self.configuration,
            "smtps { port = 25; mcp_type = pass; path = /bin/true; arguments = s; }",
        )
        self.assertIn("mcp_type = pass requires 'pass_fd_socket'", str(e))
        self.assertIn(
            "mcp_type = accept requires 'port' or 'socket { name }' in section 'x'",
            self.error("x { mcp_type = accept; path = /bin/true; arguments = s; }"),
        )
        self.assertEqual(
            self.error(
                "smar { mcp_type = wait; restartdependencies = { qmgr };\n"
                "  path = /bin/true; arguments = s; }"
            ),
            "smx.conf:1:25: option 'restartdependencies' in section 'smar': no "
            "service 'qmgr' is started by the MCP (known: smar)",
        )

    def test_socketDirectoryOwner(self) -> None:
        """
        The directory of C{pass_fd_socket} must belong to root or to the
        service's user: one that belongs to somebody else is refused,
        naming the option.
        """
        if os.geteuid() != 0:
            raise SkipTest("needs root to give a directory to another user")
        nobody = pwd.getpwnam("nobody")
        c = self.configuration(
            "smtps { port = 2525; mcp_type = pass; pass_fd_socket = s/fd;\n"
            "  path = /bin/true; arguments = s; }"
        )
        os.mkdir(os.path.join(self.queue, "s"))
        os.chown(os.path.join(self.queue, "s"), nobody.pw_uid, -1)
        message = str(self.assertRaises(ConfigError, servicesFromConfiguration, c, 0))
        self.assertEqual(
            message,
            "smx.conf:1:39: option 'pass_fd_socket' in section 'smtps': "
            "directory %s/s belongs to nobody, not to root" % (self.queue,),
        )
        os.rmdir(os.path.join(self.queue, "s"))
        message = str(self.assertRaises(ConfigError, servicesFromConfiguration, c, 0))
        self.assertIn(
            "directory %s/s: No such file or directory" % (self.queue,), message
        )

    def test_portInUse(self) -> None:
        """
        A port that is in use is a L{ListenError} that names the section
        and option.
        """
        busy = socket.socket()
        self.addCleanup(busy.close)
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        [smtps] = servicesFromConfiguration(
            self.configuration(
                "smtps { port = %d; address = 127.0.0.1; mcp_type = accept;\n"
                "  path = /bin/true; arguments = s; }" % (port,)
            ),
            0,
        )
        e = self.assertRaises(ListenError, bindService, smtps)
        self.assertEqual(
            str(e),
            "option 'port' in section 'smtps' (smx.conf:1:1): cannot listen on "
            "127.0.0.1:%d: Address already in use" % (port,),
        )

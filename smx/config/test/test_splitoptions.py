# -*- test-case-name: smx.config.test.test_splitoptions -*-
"""
Tests for L{smx.config.splitoptions}: the options only split mode reads
warn in embedded mode and are quiet in split mode.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from smx.config import configurationFromText
from smx.config.splitoptions import EMBEDDED

SETS = """\
SMAR_socket = s/smar;
SMTPS_socket = s/smtps;
SMTPC_socket = s/smtpc;
qmgr { wait_for_client = 4s; %s }
smtpc { wait_for_server = 4s; }
"""


class SplitOnlyTests(SynchronousTestCase):
    """
    The sockets of seed §5.4 and the waits for a peer have an effect only
    in split mode.
    """

    def test_embedded(self) -> None:
        """
        Without a section that sets C{path} (embedded mode), each one is a
        warning naming it and saying why.
        """
        warnings = configurationFromText(SETS % "", queueDirectory="/q").warnings
        found = [w for w in warnings if EMBEDDED in w]
        self.assertEqual(len(found), 5, warnings)
        for name in ("SMAR_socket", "SMTPS_socket", "SMTPC_socket"):
            self.assertTrue(any("'%s'" % name in w for w in found), name)
        self.assertTrue(any("'wait_for_client' in section 'qmgr'" in w for w in found))
        self.assertTrue(any("'wait_for_server' in section 'smtpc'" in w for w in found))

    def test_split(self) -> None:
        """
        In split mode (a section sets C{path}) none of them is a warning.
        """
        text = SETS % (
            'mcp_type = wait; path = "/usr/bin/smx-qmgr"; '
            'arguments = "smx-qmgr -f smx.conf";'
        )
        warnings = configurationFromText(text, queueDirectory="/q").warnings
        self.assertEqual([w for w in warnings if EMBEDDED in w], [])
        for name in ("SMAR_socket", "wait_for_client", "wait_for_server"):
            self.assertFalse(any("'%s'" % name in w for w in warnings), warnings)

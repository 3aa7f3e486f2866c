# -*- test-case-name: smx.tlspolicy.test.test_integration_policymapfile -*-
"""
Integration tests of a C{tls_policy_map} whose file does not exist, as an
administrator meets it: C{smx config -f} and C{twistd -n smx} run as
programs, mail from swaks relayed to Postfix's C{smtp-sink} on
127.0.0.2 (mailertable), then the map made with C{smx createmap} and
C{smx qmgrctl reload}.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

from twisted.internet import defer

from smx.test.mta import (
    SMTP_SINK,
    SMX,
    SWAKS,
    MTATestCase,
    SmtpSink,
    configuration,
    swaks,
    until,
)


class MissingPolicyMapTests(MTATestCase):
    """
    An C{smtpc} section whose C{tls_policy_map} names a missing file.
    """

    @defer.inlineCallbacks
    def test_missingMap(self) -> Any:
        """
        C{smx config} warns (exit 0) at the option, naming the file and
        the reason; C{twistd -n smx} prints the same warning at start and
        logs the map it cannot open; the relayed mail is deferred (4.3.0,
        a logged error naming the file; nothing reaches the next hop, not
        even in clear, since no policy is known); once the map is made
        and C{smx qmgrctl reload} run, the mail is delivered.
        """
        self.need(SMTP_SINK, SWAKS)
        sink = SmtpSink(self, self.root)
        sink.start()
        self.mta.write(
            configuration(
                self.mta.port,
                smtpc='remote_port = %d;\n    tls_policy_map = "tls_policy.db";'
                % (sink.port,),
            ),
            mt="localhost lmtp:\nremote.test [127.0.0.2]\n",
            access="cltaddr:127.0.0.1 relay\n",
        )
        path = self.mta.path("tls_policy.db")
        p = subprocess.run(
            [SMX, "config", "-f", self.mta.config],
            capture_output=True,
            text=True,
            timeout=30,
        )
        self.assertEqual(p.returncode, 0, p.stderr)
        lines = [w for w in p.stderr.splitlines() if "tls_policy_map" in w]
        self.assertEqual(len(lines), 1, p.stderr)
        line = lines[0]
        with open(self.mta.config) as f:
            number = [i for i, text in enumerate(f, 1) if "tls_policy_map" in text][0]
        self.assertTrue(line.startswith("%s:%d:" % (self.mta.config, number)), line)
        self.assertIn(
            ": warning: option 'tls_policy_map' in section 'smtpc': %s: cannot "
            "open hash map: No such file or directory" % (path,),
            line,
        )

        self.mta.start()
        self.addCleanup(self.mta.stop)
        self.assertIn(line, self.mta.log())
        out, err, status = yield swaks(
            self.mta.port, "--from", "a@client.test", "--to", "u@remote.test"
        )
        self.assertEqual(status, 0, out)

        def deferred() -> bool:
            return any(
                "tlsPolicy" in r and path in r for r in self.mta.records("smtpc")
            ) and any("4.3.0" in r for r in self.mta.records("qmgr"))

        yield until(deferred, 10)
        self.assertEqual(sink.messages(), [])

        self.mta.createmap("tls_policy", "remote.test may\n")
        out, err, status = yield self.mta.smx("qmgrctl", "reload")
        self.assertEqual(status, 0, err)
        out, err, status = yield self.mta.smx("qmgrctl", "flush")
        yield until(lambda: sink.messages(), 10)

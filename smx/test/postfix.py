# -*- test-case-name: smx.mail.test.test_integration_chunking,smx.mail.test.test_integration_smtputf8,smx.tlspolicy.test.test_integration_postfix -*-
"""
A private Postfix for integration tests (see /work/shared/PEERS.md): its
own configuration, queue and log in a temporary directory, started and
stopped with C{postfix -c}, its daemons not chrooted, every SMTP command
of its smtpd and smtp client logged (C{debug_peer_list}) to
C{root/maillog}.  Tests add their own C{main.cf} settings and say which
listeners replace the C{smtp inet} line of Debian's C{master.cf}.
Starting one needs root.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any, Callable, List

from smx.test.mta import readMaildir

POSTFIX = "/usr/sbin/postfix"

#: the settings every private Postfix has (C{%(root)s}: its directory)
MAIN_CF = """\
compatibility_level = 3.6
queue_directory = %(root)s/spool
data_directory = %(root)s/data
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = loopback-only
inet_protocols = ipv4
maillog_file = %(root)s/maillog
maillog_file_prefixes = %(root)s
smtp_dns_support_level = disabled
smtpd_peername_lookup = no
myhostname = pf.test
mydestination =
mynetworks = 127.0.0.0/8
smtpd_recipient_restrictions = permit_mynetworks, reject
alias_maps =
alias_database =
debug_peer_list = 127.0.0.1
debug_peer_level = 1
"""

#: C{main.cf} lines storing the mail of C{virtual_mailbox_domains} (to be
#: set by the test) in the Maildir C{root/vmail/box/}
VIRTUAL_MAILBOX = """\
virtual_mailbox_base = %(root)s/vmail
virtual_mailbox_maps = static:box/
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
"""


class PrivatePostfix:
    """
    A Postfix instance of its own in C{root}.

    @ivar port: the port of its smtpd listeners.
    """

    def __init__(
        self,
        testCase: Any,
        root: str,
        port: int,
        settings: str,
        listeners: Callable[[List[str]], List[List[str]]],
    ) -> None:
        """
        @param settings: C{main.cf} lines added to L{MAIN_CF}.
        @param listeners: given the fields of Debian's C{smtp inet} line
            (not chrooted), the fields of the lines that replace it.
        """
        self.testCase = testCase
        self.root = root
        self.port = port
        self.etc = os.path.join(root, "etc")
        for name in ("etc", "spool", "data", "vmail"):
            os.makedirs(os.path.join(root, name))
        os.chmod(root, 0o755)
        subprocess.run(["chown", "postfix:postfix", os.path.join(root, "data")])
        subprocess.run(["chown", "65534:65534", os.path.join(root, "vmail")])
        with open(os.path.join(self.etc, "main.cf"), "w") as f:
            f.write(MAIN_CF % dict(root=root) + settings)
        lines = []
        with open("/etc/postfix/master.cf") as f:
            for line in f:
                fields = line.split()
                if line[:1].isalnum() and len(fields) >= 8:
                    fields[4] = "n"  # no chroot
                    replaced = [fields]
                    if fields[:2] == ["smtp", "inet"]:
                        replaced = listeners(fields)
                    lines.extend("  ".join(f) + "\n" for f in replaced)
                    continue
                lines.append(line)
        with open(os.path.join(self.etc, "master.cf"), "w") as f:
            f.writelines(lines)

    def start(self) -> None:
        subprocess.run(
            [POSTFIX, "-c", self.etc, "start"], check=True, capture_output=True
        )
        self.testCase.addCleanup(self.stop)

    def stop(self) -> None:
        subprocess.run([POSTFIX, "-c", self.etc, "stop"], capture_output=True)

    def log(self) -> str:
        try:
            with open(os.path.join(self.root, "maillog"), encoding="utf-8") as f:
                return f.read()
        except OSError:
            return ""

    def report(self) -> str:
        """
        Its log and its queue (C{postqueue -p}), for a failure message: a
        message missing at the far end may still wait in Postfix's queue,
        and then the queue says why.
        """
        queue = subprocess.run(
            ["/usr/sbin/postqueue", "-c", self.etc, "-p"],
            capture_output=True,
            text=True,
        )
        return "%s\n--- postqueue -p\n%s%s" % (self.log(), queue.stdout, queue.stderr)

    def mailbox(self) -> List[bytes]:
        """The messages stored in C{root/vmail/box/}."""
        return readMaildir(os.path.join(self.root, "vmail", "box"))

# -*- test-case-name: smx.scripts.test.test_setup -*-
"""
NAME
    smx setup - install smx on a host: users, directories, configuration

SYNOPSIS
    smx setup [--users] [--dry-run] [--port N] [--address IP] [--hostname NAME]
              [--programs DIR] [--no-check]
              [--install-sendmail [--sbindir DIR] [--bindir DIR] [--force]]

DESCRIPTION
    The seed's C{sm.setup.sh} (seed §4, §4.1) for smx's split mode, where
    the MCP runs as root and starts every component under its own user.

    With C{--users}, creates the system groups and users C{smxs} (SMTPS),
    C{smxq} (QMGR), C{smxc} (SMTPC), C{smxm} (SMAR, "misc") and C{smx}
    (the configuration), without a home directory or a login shell, with
    the group memberships of seed §4 (C{smxs} in C{smxc} and C{smxm},
    C{smxq} in C{smxm}), and the maildrop group C{smxdrop} with the
    pickup user (C{smxq}) in it.

    Then it creates, if they are missing, with the owners and modes of
    seed §4.1:

      SMXCONFDIR/            smx:smx 0755
        smx.conf             smx:smx 0644   split mode, the §5.3 form
        mt, mt.db            smxm:smxm 0644 an empty mailertable (text
                                            and its map, made by createmap)
      SMXQDIR/               smxq:smxq 0755 the queue directory; the MCP
                                            and the components run in it
        0/ ... F/            smxs:smxq 2771 CDB (set-group-id: files get
                                            smxq; a default ACL lets smxc
                                            read them)
        ibdb/, defedb/       smxq:smxq 0700 IBDB, DEFEDB
        qmsmar/              smxq:smxm 2770 the SMAR socket
        qmsmtpc/             smxq:smxc 2770 the SMTPC socket
        qmsmtps/             smxq:smxs 2770 the SMTPS socket
        smtps/               smxs:smxs 0750 the socket MCP passes port 25 on
        maildrop/            smxq:smxdrop 3730 smx sendmail's maildrop
      SMXLOGDIR/             (default: SMXQDIR)
        qmgr.log, smar.log, smtpc.log, smtps.log
                             their user, group SMXLG, 0640

    and makes C{smx-postdrop} (beside the interpreter, built by
    C{tools/bootstrap.sh} from C{contrib/smx-postdrop.c}) set-group-id
    C{smxdrop}, so that every user's C{smx sendmail} can drop mail while
    smx is down, as Postfix's C{postdrop}.

    It never overwrites a file or changes an existing directory: it says
    what it kept, and what it would have made differently.

    Before it reports success it checks that each component user can
    run the installed programs (C{runuser -u smxq -- PYTHON -c 'import
    smx, twisted'}): an interpreter under C{/root}, or a checkout other
    users cannot read, cannot run the components.

    C{--install-sendmail} also links C{SBINDIR/sendmail},
    C{BINDIR/mailq} and C{BINDIR/newaliases} to C{smx-sendmail}; a file
    of another MTA in the way is not replaced unless C{--force} is given.

ENVIRONMENT
    As C{sm.setup.sh} (seed §4): C{SMXCONFDIR} [/etc/smx], C{SMXQDIR}
    [/var/spool/smx], C{SMXLOGDIR} [. (relative to SMXQDIR)], C{SMXS}
    [smxs], C{SMXC} [smxc], C{SMXQ} [smxq], C{SMXM} [smxm], C{SMX} [smx],
    C{SMXLG} (group of the log files; default: the first of operator,
    sysadmin, root that exists); and C{SMXDROP} [smxdrop], the maildrop
    group.

EXIT STATUS
    0 done (or, with C{--dry-run}, nothing to say against it); 1 a user
    cannot run the programs, or a link was not made; 64 a usage error;
    67 a user or group is missing (give C{--users}); 77 not root; 78
    a step failed (the message says which).

SEE ALSO
    doc/setup.md, contrib/smx.service, seed §4 and §4.1.
"""

from __future__ import annotations

import argparse
import grp
import os
import pwd
import shlex
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Callable, List, Mapping, Optional, TextIO, Tuple

EX_OK = 0
EX_FAILED = 1
EX_USAGE = 64
EX_NOUSER = 67
EX_NOPERM = 77
EX_CONFIG = 78

#: the component roles, their environment variable and default name
ROLES = (
    ("smtps", "SMXS", "smxs", "SMTP server"),
    ("qmgr", "SMXQ", "smxq", "queue manager"),
    ("smtpc", "SMXC", "smxc", "SMTP client"),
    ("smar", "SMXM", "smxm", "address resolver (misc)"),
    ("smx", "SMX", "smx", "configuration"),
)

#: the installed program of each component (console scripts)
PROGRAMS = {
    "qmgr": "smx-qmgr",
    "smtps": "smx-smtps",
    "smtpc": "smx-smtpc",
    "smar": "smx-smar",
    "mcp": "smx-mcp",
}

#: the set-group-id helper of smx sendmail
POSTDROP = "smx-postdrop"


class SetupError(Exception):
    """
    A step failed; C{status} is the exit status, the text one line.
    """

    def __init__(self, message: str, status: int = EX_CONFIG) -> None:
        Exception.__init__(self, message)
        self.status = status


@dataclass(frozen=True)
class Layout:
    """
    Where things go and who owns them.

    @ivar users: role (C{smtps}, C{qmgr}, C{smtpc}, C{smar}, C{smx}) ->
        user (and group) name.
    @ivar dropGroup: the maildrop group.
    @ivar logGroup: the group of the log files.
    @ivar programs: the directory of the installed programs (C{smx},
        C{smx-qmgr}, ..., C{python}).
    """

    confDir: str
    queueDir: str
    logDir: str
    users: Mapping[str, str]
    dropGroup: str
    logGroup: str
    programs: str
    port: int = 25
    hostname: Optional[str] = None
    address: Optional[str] = None

    @classmethod
    def fromEnvironment(
        cls,
        environ: Mapping[str, str],
        programs: Optional[str] = None,
        port: int = 25,
        hostname: Optional[str] = None,
        address: Optional[str] = None,
    ) -> "Layout":
        """
        The layout of seed §4 with the overrides of C{environ}.
        """
        confDir = os.path.abspath(environ.get("SMXCONFDIR") or "/etc/smx")
        queueDir = os.path.abspath(environ.get("SMXQDIR") or "/var/spool/smx")
        logDir = os.path.normpath(
            os.path.join(queueDir, environ.get("SMXLOGDIR") or ".")
        )
        users = {role: environ.get(var) or name for role, var, name, _ in ROLES}
        logGroup = environ.get("SMXLG") or defaultLogGroup()
        return cls(
            confDir=confDir,
            queueDir=queueDir,
            logDir=logDir,
            users=users,
            dropGroup=environ.get("SMXDROP") or "smxdrop",
            logGroup=logGroup,
            programs=programs or os.path.dirname(os.path.abspath(sys.executable)),
            port=port,
            hostname=hostname,
            address=address,
        )

    @property
    def config(self) -> str:
        return os.path.join(self.confDir, "smx.conf")

    def program(self, component: str) -> str:
        return os.path.join(self.programs, PROGRAMS[component])

    def startCommand(self) -> str:
        """
        How the MCP is started by hand (seed §6.1): in the queue
        directory, the components' logs in the log directory.
        """
        return "cd %s && %s -f %s -L %s" % (
            self.queueDir,
            self.program("mcp"),
            self.config,
            self.logDir,
        )

    def groupMemberships(self) -> List[Tuple[str, str]]:
        """
        C{(user, supplementary group)} of seed §4 (C{smxc: smxs},
        C{smxm: smxs, smxq}) and the pickup user in the maildrop group.
        """
        u = self.users
        return [
            (u["smtps"], u["smtpc"]),
            (u["smtps"], u["smar"]),
            (u["qmgr"], u["smar"]),
            (u["qmgr"], self.dropGroup),
        ]


def defaultLogGroup() -> str:
    """
    The group of the log files: the first of C{operator}, C{sysadmin},
    C{root} that exists (as C{sm.setup.sh}).
    """
    for name in ("operator", "sysadmin"):
        try:
            grp.getgrnam(name)
            return name
        except KeyError:
            continue
    return "root"


def splitConfiguration(layout: Layout) -> str:
    """
    The smx.conf of split mode, in the form of seed §5.3: one section per
    component with its MCP options (C{mcp_type}, C{user}, C{path},
    C{arguments}, C{restartdependencies}) naming the installed programs.
    """
    conf = layout.config
    u = layout.users

    def program(component: str) -> str:
        name = PROGRAMS[component]
        return 'path = "%s";\n    arguments = "%s -f %s";' % (
            layout.program(component),
            name,
            conf,
        )

    hostname = ""
    if layout.hostname:
        hostname = "hostname = %s;\n" % (layout.hostname,)
    return (
        '# smx in split mode (seed §4, §5.3), written by "smx setup".\n'
        "# The MCP runs as root in %(queue)s:\n"
        "#     %(start)s\n"
        "# (contrib/smx.service) and starts each component below under its\n"
        "# own user.  Check it with: smx config -f %(conf)s\n"
        "# See doc/setup.md and doc/configuration.md.\n"
        "\n"
        "%(hostname)s"
        'CDB_base_directory = "%(queue)s/";\n'
        'SMAR_socket = "%(queue)s/qmsmar/smarsock";\n'
        'SMTPC_socket = "%(queue)s/qmsmtpc/smtpcsock";\n'
        'SMTPS_socket = "%(queue)s/qmsmtps/smtpssock";\n'
        "\n"
        "qmgr {\n"
        '    control_socket = "%(queue)s/qmgrctl.sock";\n'
        "    wait_for_server = 4s; wait_for_client = 4s;\n"
        "    mcp_type = wait; user = %(qmgr)s;\n"
        "    restartdependencies = { smtps, smtpc, smar };\n"
        "    %(qmgrProgram)s\n"
        "}\n"
        "\n"
        "smtps {\n"
        "    flags = { 8bitmime };\n"
        "    %(address)sport = %(port)d; mcp_type = pass;\n"
        '    pass_fd_socket = "%(queue)s/smtps/smtpsfd";\n'
        "    min_processes = 2; max_processes = 2;\n"
        "    user = %(smtps)s;\n"
        "    %(smtpsProgram)s\n"
        "}\n"
        "\n"
        "smtpc {\n"
        "    wait_for_server = 4s;\n"
        "    mcp_type = wait; user = %(smtpc)s;\n"
        "    %(smtpcProgram)s\n"
        "}\n"
        "\n"
        "smar {\n"
        '    mailertable { name = "mt.db"; }\n'
        "    mcp_type = wait; user = %(smar)s;\n"
        "    restartdependencies = { smtps, qmgr };\n"
        "    %(smarProgram)s\n"
        "}\n"
        "\n"
        "# smx sendmail keeps mail here while smx is down; any user may drop\n"
        "# through the set-group-id smx-postdrop (doc/sendmail.md)\n"
        "pickup {\n"
        '    maildrop_directory = "%(queue)s/maildrop";\n'
        "    maildrop_group = %(drop)s;\n"
        "}\n"
    ) % {
        "queue": layout.queueDir,
        "conf": conf,
        "start": layout.startCommand(),
        "hostname": hostname,
        "port": layout.port,
        "address": 'address = "%s"; ' % (layout.address,) if layout.address else "",
        "qmgr": u["qmgr"],
        "smtps": u["smtps"],
        "smtpc": u["smtpc"],
        "smar": u["smar"],
        "drop": layout.dropGroup,
        "qmgrProgram": program("qmgr"),
        "smtpsProgram": program("smtps"),
        "smtpcProgram": program("smtpc"),
        "smarProgram": program("smar"),
    }


MAILERTABLE = (
    '# smx mailertable (seed §5.8.3): "domain  [port^][mailer:]hosts".\n'
    "# Empty: mail goes to the MX hosts of its domain.  After a change:\n"
    "#     smx createmap -F mt.db < mt; kill -USR1 <MCP>\n"
    "# e.g.  example.org  lmtp:     (local delivery over LMTP_socket)\n"
)


@dataclass
class Setup:
    """
    Plans and runs the steps; C{say} reports them.

    @ivar problems: lines that make the exit status non-zero.
    """

    layout: Layout
    out: TextIO
    dryRun: bool = False
    force: bool = False
    createUsers: bool = False
    runner: Callable[..., "subprocess.CompletedProcess[bytes]"] = subprocess.run
    problems: List[str] = field(default_factory=list)
    status: int = EX_OK

    def say(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()

    def problem(self, line: str, status: int = EX_FAILED) -> None:
        self.problems.append(line)
        self.status = max(self.status, status)
        self.say("smx setup: " + line)

    def do(self, text: str, action: Callable[[], None]) -> None:
        if self.dryRun:
            self.say("would " + text)
            return
        action()
        self.say(_pastTense(text))

    def command(self, argv: List[str]) -> None:
        result = self.runner(argv, capture_output=True)
        if result.returncode != 0:
            raise SetupError(
                "%s failed: %s"
                % (
                    " ".join(argv),
                    result.stderr.decode("utf-8", "replace").strip()
                    or "exit status %d" % (result.returncode,),
                )
            )

    # users and groups

    def groups(self) -> None:
        """
        The groups of seed §4 and the maildrop group.
        """
        names = [self.layout.users[role] for role, _, _, _ in ROLES]
        for name in names + [self.layout.dropGroup]:
            if _gid(name) is not None:
                continue
            if not self.createUsers:
                raise SetupError(
                    "there is no group %s: give --users to create the users "
                    "and groups (seed §4), or create it" % (name,),
                    EX_NOUSER,
                )
            self.do(
                "create group %s (system)" % (name,),
                lambda name=name: self.command(["groupadd", "--system", name]),  # type: ignore[misc]
            )

    def users(self) -> None:
        for role, _, _, what in ROLES:
            name = self.layout.users[role]
            if _user(name) is not None:
                continue
            if not self.createUsers:
                raise SetupError(
                    "there is no user %s (%s): give --users to create the "
                    "users and groups (seed §4), or create it" % (name, what),
                    EX_NOUSER,
                )
            argv = [
                "useradd",
                "--system",
                "--gid",
                name,
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                "--comment",
                "smx %s" % (what,),
                name,
            ]
            self.do(
                "create user %s (system, group %s, no login shell)" % (name, name),
                lambda argv=argv: self.command(argv),  # type: ignore[misc]
            )
        for user, group in self.layout.groupMemberships():
            if user in _members(group):
                continue
            if not self.createUsers and _user(user) is not None:
                self.say(
                    "note: %s is not in group %s (seed §4); give --users to add "
                    "it" % (user, group)
                )
                continue
            self.do(
                "add user %s to group %s" % (user, group),
                lambda u=user, g=group: self.command(  # type: ignore[misc]
                    ["usermod", "--append", "--groups", g, u]
                ),
            )

    # directories and files

    def directory(
        self,
        path: str,
        owner: str,
        group: str,
        mode: int,
        readers: Optional[str] = None,
    ) -> None:
        """
        Create a directory that does not exist.

        @param readers: a group that may read the files made in it (a
            default ACL, L{grantDefaultRead}).
        """
        wanted = "%s:%s %04o" % (owner, group, mode)
        if os.path.lexists(path):
            st = os.lstat(path)
            have = "%s:%s %04o" % (
                _userName(st.st_uid),
                _groupName(st.st_gid),
                stat.S_IMODE(st.st_mode),
            )
            if not stat.S_ISDIR(st.st_mode):
                raise SetupError("%s exists and is not a directory" % (path,))
            if have == wanted:
                self.say("kept directory %s (%s)" % (path, have))
            else:
                self.say(
                    "kept directory %s (%s; smx setup would make it %s)"
                    % (path, have, wanted)
                )
            return

        def make() -> None:
            # missing parents (e.g. /srv/mail for SMXQDIR=/srv/mail/smx)
            # as mkdir -p makes them: root's, 0755
            os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
            os.mkdir(path, 0o700)
            _own(path, owner, group)
            os.chmod(path, mode)
            if readers is not None:
                gid = _gid(readers)
                try:
                    grantDefaultRead(path, [] if gid is None else [gid])
                except OSError as e:
                    self.problem(
                        "%s: cannot let group %s read the files made in it (a "
                        "default ACL): %s; mount the file system with ACLs, or "
                        "%s cannot read messages" % (path, readers, e.strerror, readers)
                    )

        text = "create directory %s (%s)" % (path, wanted)
        if readers is not None:
            text = "create directory %s (%s, its files readable by group %s)" % (
                path,
                wanted,
                readers,
            )
        self.do(text, make)

    def file(
        self, path: str, owner: str, group: str, mode: int, write: Callable[[str], None]
    ) -> bool:
        """
        Create a file that does not exist: C{write(path)} writes it.

        @return: whether it is (or would be) written.
        """
        if os.path.lexists(path):
            st = os.lstat(path)
            self.say(
                "kept %s (exists: %s:%s %04o; not overwritten)"
                % (
                    path,
                    _userName(st.st_uid),
                    _groupName(st.st_gid),
                    stat.S_IMODE(st.st_mode),
                )
            )
            return False

        def make() -> None:
            write(path)
            _own(path, owner, group)
            os.chmod(path, mode)

        self.do("write %s (%s:%s %04o)" % (path, owner, group, mode), make)
        return True

    def files(self) -> None:
        layout = self.layout
        u = layout.users
        smx, smar, qmgr = u["smx"], u["smar"], u["qmgr"]
        self.directory(layout.confDir, smx, smx, 0o755)
        self.file(layout.config, smx, smx, 0o644, _writer(splitConfiguration(layout)))
        mt = os.path.join(layout.confDir, "mt")
        self.file(mt, smar, smar, 0o644, _writer(MAILERTABLE))

        def makeMap(path: str) -> None:
            from smx.maps.createmap import CreateMapError, createMapFromFile

            try:
                createMapFromFile(mt if os.path.exists(mt) else os.devnull, path)
            except CreateMapError as e:
                raise SetupError(str(e))

        self.file(mt + ".db", smar, smar, 0o644, makeMap)

        q = layout.queueDir
        self.directory(q, qmgr, qmgr, 0o755)
        from smx.queue.cdb import DIRECTORIES

        # CDB: SMTPS writes, QMGR reads (bounces) and removes, SMTPC reads.
        # Set-group-id, so that the files get QMGR's group (seed §4.1 says
        # 0771 and sendmail X's SMTPS sets CDB_gid), and a default ACL that
        # lets SMTPC's group read them, and nothing else.
        for name in DIRECTORIES:
            self.directory(
                os.path.join(q, name), u["smtps"], qmgr, 0o2771, readers=u["smtpc"]
            )
        self.directory(os.path.join(q, "ibdb"), qmgr, qmgr, 0o700)
        self.directory(os.path.join(q, "defedb"), qmgr, qmgr, 0o700)
        self.directory(os.path.join(q, "qmsmar"), qmgr, smar, 0o2770)
        self.directory(os.path.join(q, "qmsmtpc"), qmgr, u["smtpc"], 0o2770)
        self.directory(os.path.join(q, "qmsmtps"), qmgr, u["smtps"], 0o2770)
        self.directory(os.path.join(q, "smtps"), u["smtps"], u["smtps"], 0o750)
        self.directory(os.path.join(q, "maildrop"), qmgr, layout.dropGroup, 0o3730)
        if layout.logDir != q:
            self.directory(layout.logDir, "root", layout.logGroup, 0o755)
        for component in ("qmgr", "smar", "smtpc", "smtps"):
            self.file(
                os.path.join(layout.logDir, component + ".log"),
                u[component],
                layout.logGroup,
                0o640,
                _writer(""),
            )

    # the set-group-id helper and the links

    def postdrop(self, path: str) -> None:
        """
        Make C{path} (C{smx-postdrop}) set-group-id the maildrop group,
        building it from C{contrib/smx-postdrop.c} if it is missing.
        """
        group = self.layout.dropGroup
        if not os.path.exists(path):
            source = postdropSource()
            compiler = shutil.which("cc")
            if source is None or compiler is None:
                self.problem(
                    "%s is not built (tools/bootstrap.sh builds it with cc): "
                    "users outside group %s cannot keep mail in the maildrop "
                    "while smx is down" % (path, group)
                )
                return
            self.do(
                "build %s from %s" % (path, source),
                lambda: self.command([compiler, "-O2", "-o", path, source]),
            )
        if os.path.exists(path):
            st = os.stat(path)
            gid = _gid(group)
            if (
                st.st_uid == 0
                and gid is not None
                and st.st_gid == gid
                and stat.S_IMODE(st.st_mode) == 0o2755
            ):
                self.say("kept %s (root:%s 2755)" % (path, group))
                return

        def make() -> None:
            _own(path, "root", group)
            os.chmod(path, 0o2755)  # after chown, which clears set-group-id

        self.do("make %s set-group-id %s (root:%s 2755)" % (path, group, group), make)

    def link(self, path: str, target: str) -> None:
        """
        Make C{path} a symbolic link to C{target}, unless something else is
        there (then only with C{force}).
        """
        if os.path.islink(path) and os.readlink(path) == target:
            self.say("kept %s (already a link to %s)" % (path, target))
            return
        if os.path.lexists(path):
            what = _describeFile(path)
            if not self.force:
                self.problem(
                    "%s is in the way (%s): not replaced; remove it or give "
                    "--force" % (path, what)
                )
                return
            text = "replace %s (%s) with a link to %s" % (path, what, target)
        else:
            text = "link %s to %s" % (path, target)

        def make() -> None:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            temporary = "%s.smx-setup.%d" % (path, os.getpid())
            os.symlink(target, temporary)
            os.replace(temporary, path)

        self.do(text, make)

    def installSendmail(self, sbindir: str, bindir: str) -> None:
        target = os.path.join(self.layout.programs, "smx-sendmail")
        if not os.path.exists(target):
            self.problem("%s is not installed (pip install smx)" % (target,))
            return
        self.link(os.path.join(sbindir, "sendmail"), target)
        self.link(os.path.join(bindir, "mailq"), target)
        self.link(os.path.join(bindir, "newaliases"), target)

    # the check

    def check(self) -> None:
        """
        Can every component user run the installed interpreter and import
        smx and Twisted?  Are the component programs there?
        """
        python = os.path.join(self.layout.programs, "python")
        if not os.path.exists(python):
            python = sys.executable
        for component in ("qmgr", "smtps", "smtpc", "smar"):
            program = self.layout.program(component)
            if not os.path.exists(program):
                self.say(
                    "note: %s is not installed yet: the MCP cannot start %s "
                    "(pip install -e . in the checkout installs it)"
                    % (program, component)
                )
        for role in ("smtps", "qmgr", "smtpc", "smar"):
            user = self.layout.users[role]
            if _user(user) is None:
                continue  # a dry run before --users
            argv = ["runuser", "-u", user, "--", python, "-c", "import smx, twisted"]
            result = self.runner(argv, capture_output=True)
            if result.returncode == 0:
                self.say("checked: user %s can run %s and import smx" % (user, python))
                continue
            why = result.stderr.decode("utf-8", "replace").strip().splitlines()
            self.problem(
                "user %s cannot run the programs: %s: %s%s"
                % (
                    user,
                    " ".join(shlex.quote(a) for a in argv),
                    why[-1] if why else "exit status %d" % (result.returncode,),
                    unreachableHint(python, user),
                )
            )
        self.checkReach()

    def checkReach(self) -> None:
        """
        Can every component user enter the queue directory (QMGR: write
        to it) and read smx.conf?  Not when setup kept a directory made
        before it, e.g. a temporary queue of C{mktemp -d} (root, 0700):
        the MCP would refuse to start them (L{smx.mcp.access}).
        """
        from smx.mcp.access import accessProblem

        for role in ("smtps", "qmgr", "smtpc", "smar"):
            user = self.layout.users[role]
            uid = _user(user)
            if uid is None:
                continue  # a dry run before --users
            gid = pwd.getpwuid(uid).pw_gid
            needs = [(self.layout.queueDir, "x", "enter the queue directory")]
            if role == "qmgr":
                needs.append(
                    (self.layout.queueDir, "w", "write to the queue directory")
                )
            needs.append((self.layout.config, "r", "read"))
            for path, want, what in needs:
                problem = accessProblem(path, uid, gid, want)
                if problem is not None:
                    self.problem(
                        "user %s cannot %s %s: %s; smx setup does not change "
                        "what exists: give it the owner and mode it says above, "
                        "or remove it and run smx setup again"
                        % (user, what, path, problem)
                    )
                    break

    def run(
        self,
        postdrop: Optional[str],
        sendmail: Optional[Tuple[str, str]],
        check: bool,
    ) -> int:
        try:
            self.groups()
            self.users()
            self.files()
            if postdrop is not None:
                self.postdrop(postdrop)
            if sendmail is not None:
                self.installSendmail(*sendmail)
            if check:
                self.check()
        except SetupError as e:
            self.say("smx setup: %s" % (e,))
            return e.status
        except OSError as e:
            self.say(
                "smx setup: %s: %s" % (e.filename or "", e.strerror or e)
                if e.filename
                else "smx setup: %s" % (e.strerror or e,)
            )
            return EX_CONFIG
        if self.status == EX_OK:
            self.say(
                "smx setup: %s; start the MCP with: %s"
                % (
                    "nothing was changed (dry run)" if self.dryRun else "done",
                    self.layout.startCommand(),
                )
            )
        else:
            self.say(
                "smx setup: not done: %d problem%s (above)"
                % (len(self.problems), "" if len(self.problems) == 1 else "s")
            )
        return self.status


#: tags of a POSIX ACL entry (linux/posix_acl.h)
_ACL_USER_OBJ, _ACL_GROUP_OBJ, _ACL_GROUP, _ACL_MASK, _ACL_OTHER = (
    0x01,
    0x04,
    0x08,
    0x10,
    0x20,
)
_ACL_UNDEFINED_ID = 0xFFFFFFFF


def grantDefaultRead(path: str, gids: List[int]) -> None:
    """
    Give directory C{path} a default ACL (what C{setfacl -d -m g:GID:r}
    gives; the acl package is not needed) so that the files made in it
    can be read by the groups C{gids} too, with no more rights than the
    mode the file is created with allows (the mask).

    @raise OSError: if the file system has no ACLs (C{ENOTSUP}).
    """
    import struct

    entries = [
        (_ACL_USER_OBJ, 7, _ACL_UNDEFINED_ID),
        (_ACL_GROUP_OBJ, 5, _ACL_UNDEFINED_ID),
    ]
    entries += [(_ACL_GROUP, 5, gid) for gid in sorted(set(gids))]
    entries += [(_ACL_MASK, 5, _ACL_UNDEFINED_ID), (_ACL_OTHER, 0, _ACL_UNDEFINED_ID)]
    blob = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)
    os.setxattr(path, "system.posix_acl_default", blob)


def unreachableHint(path: str, user: str) -> str:
    """
    Why C{user} may not reach C{path}: the first directory on the way
    (after following symbolic links) that others may not search.
    """
    real = os.path.realpath(path)
    parts = real.split(os.sep)
    for i in range(2, len(parts)):
        directory = os.sep.join(parts[:i]) or os.sep
        try:
            mode = os.stat(directory).st_mode
        except OSError:
            break
        if not mode & stat.S_IXOTH:
            return (
                " (the interpreter is %s, under %s, which other users cannot "
                "enter: build the environment with tools/bootstrap.sh, which "
                "uses /usr/bin/python3, in a checkout every user can read, "
                "e.g. /opt/smx)" % (real, directory)
            )
    return ""


def postdropSource() -> Optional[str]:
    """
    C{contrib/smx-postdrop.c} of the checkout smx runs from, if any.
    """
    import smx

    here = os.path.dirname(os.path.abspath(smx.__file__))
    path = os.path.join(os.path.dirname(here), "contrib", "smx-postdrop.c")
    return path if os.path.exists(path) else None


def _pastTense(text: str) -> str:
    verb, _, rest = text.partition(" ")
    past = {
        "create": "created",
        "write": "wrote",
        "add": "added",
        "make": "made",
        "link": "linked",
        "replace": "replaced",
        "build": "built",
    }
    return "%s %s" % (past.get(verb, verb), rest)


def _writer(text: str) -> Callable[[str], None]:
    def write(path: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)

    return write


def _user(name: str) -> Optional[int]:
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None


def _gid(name: str) -> Optional[int]:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def _members(group: str) -> List[str]:
    try:
        return list(grp.getgrnam(group).gr_mem)
    except KeyError:
        return []


def _userName(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _groupName(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _own(path: str, owner: str, group: str) -> None:
    uid, gid = _user(owner), _gid(group)
    if uid is None:
        raise SetupError("there is no user %s" % (owner,), EX_NOUSER)
    if gid is None:
        raise SetupError("there is no group %s" % (group,), EX_NOUSER)
    os.lchown(path, uid, gid)


def _describeFile(path: str) -> str:
    """
    What is at C{path}: a link to where, or a file, and the Debian package
    it belongs to.
    """
    if os.path.islink(path):
        what = "a link to %s" % (os.readlink(path),)
    elif os.path.isdir(path):
        what = "a directory"
    else:
        what = "a file"
    try:
        result = subprocess.run(
            ["dpkg-query", "-S", path], capture_output=True, timeout=30
        )
        if result.returncode == 0:
            package = result.stdout.decode("utf-8", "replace").split(":", 1)[0]
            what += " of package %s" % (package.strip(),)
    except (OSError, subprocess.TimeoutExpired):
        pass
    return what


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="smx setup",
        description="create smx's users, directories and split-mode "
        "configuration (seed §4, §4.1); see doc/setup.md",
    )
    p.add_argument(
        "--users",
        action="store_true",
        help="create the users and groups smxs, smxq, smxc, smxm, smx and "
        "smxdrop (or those of SMXS... SMXDROP)",
    )
    p.add_argument(
        "--dry-run", "-n", action="store_true", help="say what would be done"
    )
    p.add_argument("--port", type=int, default=25, help="SMTP port [25]")
    p.add_argument("--hostname", help="hostname for smx.conf [the system's]")
    p.add_argument("--address", help="the address SMTPS listens on [all: 0.0.0.0]")
    p.add_argument(
        "--programs",
        metavar="DIR",
        help="where smx-qmgr, smx-smtps, ... are [the interpreter's directory]",
    )
    p.add_argument(
        "--postdrop",
        metavar="PATH",
        help="the smx-postdrop to make set-group-id [in --programs]",
    )
    p.add_argument(
        "--no-check",
        action="store_true",
        help="do not check that the component users can run the programs",
    )
    p.add_argument(
        "--install-sendmail",
        action="store_true",
        help="link sendmail, mailq and newaliases to smx-sendmail",
    )
    p.add_argument("--sbindir", default="/usr/sbin", help="for sendmail [/usr/sbin]")
    p.add_argument(
        "--bindir", default="/usr/bin", help="for mailq, newaliases [/usr/bin]"
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace another MTA's sendmail, mailq, newaliases",
    )
    return p


def run(
    argv: List[str],
    out: Optional[TextIO] = None,
    environ: Optional[Mapping[str, str]] = None,
) -> int:
    """
    Run C{smx setup}.

    @return: the exit status.
    """
    out = out if out is not None else sys.stdout
    environ = environ if environ is not None else os.environ
    try:
        args = parser().parse_args(argv)
    except SystemExit as e:
        return EX_USAGE if e.code else EX_OK
    if not 0 < args.port < 65536:
        out.write("smx setup: --port: %d is not a port\n" % (args.port,))
        return EX_USAGE
    if args.address is not None:
        import ipaddress

        try:
            ipaddress.ip_address(args.address)
        except ValueError:
            out.write(
                "smx setup: --address: %r is not an IP address\n" % (args.address,)
            )
            return EX_USAGE
    layout = Layout.fromEnvironment(
        environ, args.programs, args.port, args.hostname, args.address
    )
    if os.geteuid() != 0 and not args.dry_run:
        out.write(
            "smx setup: must run as root (users, owners, modes); --dry-run "
            "shows what it would do\n"
        )
        return EX_NOPERM
    setup = Setup(
        layout, out, dryRun=args.dry_run, force=args.force, createUsers=args.users
    )
    postdrop = args.postdrop or os.path.join(layout.programs, POSTDROP)
    sendmail = (args.sbindir, args.bindir) if args.install_sendmail else None
    return setup.run(postdrop, sendmail, not args.no_check)


__all__ = ["run", "Layout", "Setup", "splitConfiguration", "SetupError"]

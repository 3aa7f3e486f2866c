# -*- test-case-name: smx.config.test.test_script -*-
"""
NAME
    smx config - check an smx.conf file and print the configuration in force

SYNOPSIS
    smx config -f FILE [-V...] [-Q DIRECTORY]
    smx config -f FILE [-V...] [-d DIRECTORY]
    smx config --reference
    smx config -h

DESCRIPTION
    Reads FILE with the grammar of seed §5.1, checks every option against
    the option table (its name, type, unit and bounds, seed §5.2-§5.10)
    and the settings that depend on each other, and prints the
    configuration as normalised smx.conf text on standard output:
    canonical option names, times and sizes with units, relative path
    names resolved (seed §5.6), alternative spellings written as what
    they stand for.

    Relative path names are resolved the way twistd smx resolves them
    (seed §5.6): maps, the conf map and the TLS files against the
    directory of FILE; sockets, the queue (CDB, IBDB, DEFEDB) and log
    files against the queue directory, which is where twistd smx runs
    (its working directory, or its -d).  smx config takes the queue
    directory to be the directory of FILE, as in the embedded layout
    (make run, smx default-config: the configuration and the queue in one
    directory); give -Q (or -d, as to twistd smx) when smx runs elsewhere.
    -V says which directories were used.

    The TLS files of every smtps and smtpc section are checked as well:
    cert_file and key_file must exist, be readable PEM and belong to each
    other, CAcert_file must load and CAcert_path be a directory; a
    key_file that everybody may read is a warning (App. D).

    Without -V only the options set in FILE are printed.  Each -V shows
    more (seed §5: "-VVVVV will show the configuration data including the
    default value for (almost) every option"):

        -V       a header with the version and the directories relative
                 path names were resolved against
        -VV      every option of the sections in FILE, defaults marked
        -VVV     also the global options and the subsections left out
        -VVVV    every component, whether in FILE or not
        -VVVVV   the same as a table: type, unit, bounds, default and
                 seed section of every option, and templates of the
                 sections that may be repeated; then the pmilter plugins
                 installed and those each smtps section enables

    --reference prints the configuration reference in Markdown, generated
    from the option table (make doc writes it to doc/configuration.md).

OPTIONS
    -f FILE           the configuration file (required unless --reference)
    -V                more detail; may be repeated (-VVVVV)
    -Q DIRECTORY, -d DIRECTORY
                      the queue directory that relative socket and
                      database names are resolved against: where
                      twistd smx runs (default: the directory of FILE)
    --reference       print the Markdown reference of every option
    -h, --help        print this text

CONFIGURATION PARAMETERS
    All of them; see doc/configuration.md.

DIAGNOSTICS
    Problems are reported on standard error as one line that names the
    file, line and column:

        smx.conf:3:5: unknown option 'io_timout' in section 'smtps'; did
        you mean 'io_timeout'?

    Warnings (settings that are allowed but doubtful) are printed on
    standard error as "FILE:LINE:COLUMN: warning: ..." and do not change
    the exit status.  Every option, flag or section that FILE sets but
    that has no effect (smx runs in embedded mode: one process, no MCP;
    or the other settings make it useless) is one such line, e.g.

        smx.conf:12:5: warning: option 'user' in section 'smtps' has no
        effect: used by the MCP in split mode, which smx does not have
        yet; twistd --uid and --gid set embedded smx's user

    and is marked "# no effect: ..." in the configuration printed;
    twistd smx prints the same warnings at start.  A TLS file that cannot be used is an error at the
    option that names it; every such error is reported.

EXIT STATUS
    0 if the file is valid, 2 if it is not or the command line is wrong.
"""

from __future__ import annotations

import getopt
import os
import sys
from typing import List, Optional, TextIO

from smx.config import ConfigError, loadConfiguration
from smx.config.files import checkFiles
from smx.config.reference import renderReference
from smx.config.render import renderConfiguration

USAGE = "usage: smx config -f FILE [-V...] [-Q DIRECTORY] | smx config --reference"

#: the most detailed level of -V
MAX_VERBOSITY = 5


def run(
    argv: List[str],
    stdout: Optional[TextIO] = None,
    stderr: Optional[TextIO] = None,
) -> int:
    """
    Run C{smx config}.

    @param argv: the arguments after C{config}.
    @param stdout: where the configuration goes (default C{sys.stdout}).
    @param stderr: where problems go (default C{sys.stderr}).
    @return: the exit status: 0 if valid, 2 if not.
    """
    out = sys.stdout if stdout is None else stdout
    err = sys.stderr if stderr is None else stderr
    try:
        opts, args = getopt.gnu_getopt(
            argv, "f:VQ:d:h", ["reference", "help", "queue-directory="]
        )
    except getopt.GetoptError as e:
        err.write("smx config: %s (%s)\n" % (e.msg, USAGE))
        return 2
    path: Optional[str] = None
    queueDirectory: Optional[str] = None
    verbosity = 0
    reference = False
    for name, value in opts:
        if name in ("-h", "--help"):
            out.write((__doc__ or "").lstrip("\n"))
            return 0
        if name == "-f":
            path = value
        elif name == "-V":
            verbosity += 1
        elif name in ("-Q", "-d", "--queue-directory"):
            queueDirectory = value
        elif name == "--reference":
            reference = True
    if args:
        err.write(
            "smx config: unexpected argument %r; give the file with -f (%s)\n"
            % (args[0], USAGE)
        )
        return 2
    if reference:
        if path is not None:
            err.write("smx config: --reference takes no -f (%s)\n" % (USAGE,))
            return 2
        out.write(renderReference())
        return 0
    if path is None:
        err.write("smx config: -f FILE is required (%s)\n" % (USAGE,))
        return 2
    if queueDirectory is None:
        # where twistd smx runs in the embedded layout: beside the file
        queueDirectory = os.path.dirname(os.path.abspath(path))
    try:
        configuration = loadConfiguration(path, queueDirectory)
    except ConfigError as e:
        err.write("%s\n" % (e,))
        return 2
    errors = checkFiles(configuration)
    for warning in configuration.warnings:
        err.write("%s\n" % (warning,))
    if errors:
        err.write("".join("%s\n" % (e,) for e in errors))
        return 2
    out.write(renderConfiguration(configuration, min(verbosity, MAX_VERBOSITY)))
    if verbosity >= MAX_VERBOSITY:
        from smx.pmilter.plugins import describePolicyMilters

        out.write(describePolicyMilters(configuration))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run(sys.argv[1:]))

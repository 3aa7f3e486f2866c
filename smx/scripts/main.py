# -*- test-case-name: smx.config.test.test_script,smx.queue.test.test_integration_control -*-
"""
NAME
    smx - the command-line programs of smx

SYNOPSIS
    smx COMMAND [OPTIONS...]

DESCRIPTION
    One entry point for every program of smx.  Each COMMAND is a module
    C{smx.scripts.<module>} with a function C{run(argv: list[str]) -> int};
    C{argv} excludes the command name.  A user's mistake is reported as one
    line on standard error and a non-zero exit status, never a traceback.
"""

import sys

#: command name -> (module under smx.scripts, one-line description)
COMMANDS = {
    "config": ("config", "check a configuration file and print it (seed §5)"),
    "default-config": (
        "defaultconfig",
        "write the embedded default configuration and its files",
    ),
    "createmap": ("createmap", "build a Berkeley DB hash map from text (§6.7)"),
    "mailq": ("mailq", "show the mail queue (§6.6.2)"),
    "qmgrctl": ("qmgrctl", "query and control the queue manager (§6.6.3)"),
    "mcpctl": ("mcpctl", "show and control the MCP's processes (doc/split.md)"),
    "runas": ("runas", "run a program as another user (§6.6.1)"),
    "recover-from-log": (
        "recoverlog",
        "rebuild envelopes of CDB files from log records (§6.10.2)",
    ),
    "lmtpd": ("lmtpd", "a small LMTP server delivering into Maildirs"),
    "pmilter-server": (
        "pmilterserver",
        "run pmilter plugins as a server on a Unix socket (§8, App. B.2)",
    ),
    "greylist": ("greylist", "list and change the greylist pmilter's database"),
    "sendmail": ("sendmail", "submit a message as sendmail(1) does (doc/sendmail.md)"),
    "setup": ("setup", "create users, directories, smx.conf for split mode (§4)"),
    "tlsrpt": ("tlsrpt", "print the daily TLS reports of MTA-STS and DANE (RFC 8460)"),
}


def usage(out=sys.stderr) -> None:
    out.write("usage: smx COMMAND [OPTIONS...]\n\ncommands:\n")
    for name, (_, text) in sorted(COMMANDS.items()):
        out.write("  %-18s %s\n" % (name, text))


def main(argv=None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if not argv or argv[0] in ("-h", "--help", "help"):
        usage(sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        sys.stderr.write("smx: unknown command %r\n" % (name,))
        usage()
        return 2
    import importlib

    try:
        module = importlib.import_module("smx.scripts." + COMMANDS[name][0])
    except ImportError as e:
        sys.stderr.write("smx %s: not available: %s\n" % (name, e))
        return 1
    return module.run(rest)


if __name__ == "__main__":
    sys.exit(main())

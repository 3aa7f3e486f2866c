# -*- test-case-name: smx.config.test.test_render -*-
"""
The configuration reference (C{doc/configuration.md}), generated from the
option table so that it never disagrees with the code:
C{smx config --reference > doc/configuration.md} (C{make doc}).
"""

from __future__ import annotations

from typing import List, Sequence

from smx.config import options as table
from smx.config.reconcile import __doc__ as _reconcileDoc
from smx.config.render import defaultText, typeText
from smx.config.schema import NO_NAME, REQUIRED_NAME, Option, SectionSpec

_INTRO = """\
# smx configuration reference

This file is generated from the option table in `smx/config/options.py` by
`smx config --reference` (`make doc`); do not edit it by hand.  Section
numbers (§) refer to the sendmail X README, the specification of smx.

Check a configuration file and see what is in force with
`smx config -f smx.conf`; add `-V` up to five times to see more, up to
every option of every section with its type, unit, bounds and default.

## Syntax (§5.1)

```
conf      ::=  entries
entries   ::=  entry *
entry     ::=  option | section
section   ::=  keyword [name ] "{" entries "}" [";"]
option    ::=  option-name "=" rhs
rhs       ::=  value ";" | "{" value-list "}" [";"]
```

- Keywords and option names are case-insensitive; section names (`smtps
  MTA`, `map localusers`) are compared case-insensitively too.
- `#` starts a comment that ends at the end of the line.  A line ends
  with LF, CR LF or a lone CR: a file means the same, and errors name the
  same lines, whichever it uses.
- A value is a word without white space and without `{ } ; , = " #`
  (`/usr/libexec/smtps`, `smtps/smtpsf`, `CRAM-MD5`, `[::1]:25`), or a
  quoted string.  Adjacent quoted strings are joined as in ANSI C
  (`"a" "b"` is `ab`); a string cannot span lines.  Escapes: `\\n \\t \\r
  \\\\ \\" \\a \\b \\f \\v`, `\\ooo` (octal) and `\\xHH` (hexadecimal).  A
  value with spaces must be quoted, except a time or size written on
  one line (`queuereturn_timeout = 4d 12h;`).
- A list is `{ v1, v2 }`; a list option also accepts a single value, and
  `{}` is the empty list.  Flags are lists of names from a fixed set;
  they are matched case-insensitively, and `-` or a space in a flag counts
  as `_` (the README writes `forward secrecy`).
- Booleans are `yes`/`no` (also `true`/`false`, `on`/`off`, `1`/`0`).
- An option may be set only once per section.  A section that is not
  marked as repeatable below may be given only once; repeatable sections
  with names need different names, and at most one of them may be
  unnamed.

Every mistake is reported as one line naming the file, line and column,
e.g. `smx.conf:12:7: expected '=' or '{' after 'qmgr'` or
`smx.conf:3:5: unknown option 'io_timout' in section 'smtps'; did you mean
'io_timeout'?`, and `smx config` exits with status 2.

## Times and sizes (§5.1.1)

A time is a sequence of numbers with units: `w` (weeks), `d` (days), `h`,
`m`, `s`, and smx's `ms` and `us` (µs): `1h 5m 12s`, `90s`, `1.5h`.  A
size is a sequence of numbers with units `B`, `KB`, `MB`, `GB` (1 KB =
1024 B): `8MB`, `512KB`.  Units are case-insensitive; a number without a
unit is in the option's unit, shown in the type column below: `s` and `B`
unless noted, `KB` for `max_message_size`, `min_disk_space`,
`ok_disk_space` and `KBytes_written_for_checkpointing`, µs for
`max_commit_delay`.  Programs see times as seconds and sizes as bytes.

## Path names (§5.6)

A relative path name is resolved against one of two directories:

1. the **configuration directory**, the directory of the file given with
   `-f`: maps and configuration files (`aliases { name }`, `mailertable {
   name }`, `access { name }`, qmgr `conf`, the `file` of a `map`) and the
   TLS files (`cert_file`, `key_file`, `CAcert_file`, `CAcert_path`);
2. the **queue directory**, the directory smx runs in (`twistd smx`'s
   working directory, or its `-d`): sockets and databases
   (`CDB_base_directory`, `SMAR_socket`, `SMTPC_socket`, `SMTPS_socket`,
   `control_socket`, `DEFEDB` directories, `LMTP_socket`,
   `pass_fd_socket`, `socket { name }`, `pmilter { socket }`, the `path` of
   a socket map, log files) and the `path` of a program.

The README also says, in a note, that relative path names "are
(currently) always relative to the main queue directory"; smx follows the
two cases above, which the README describes in detail, and which keep a
configuration and its maps together in one directory.  Without `-f`, the
configuration directory is the queue directory.

## Map declarations (§5.8.1)

`map NAME { ... }` declarations may be written at the top level (as the
README prints them) or inside `smar { }`; they share one name space, and
a sequence (or `local_user_map`) may refer to a map declared in either
place, before or after it.

## Services started by MCP (§5.2, §5.3)

Any other top-level section that sets `mcp_type` (or `type`) is a service
started by MCP, e.g. a local mailer: `procmail { mcp_type = accept; socket
{ name = lmtpsock; } path = /usr/bin/procmail; arguments = "procmail -z"; }`.
Such a section takes only the MCP options, and `mcp_type`, `path` and
`arguments` are required.  In the smx components (`qmgr`, `smar`, `smtps`,
`smtpc`, `lmtpd`) the MCP options are optional: smx knows how to start
them.

## Options without effect

The options of the MCP (§5.2) have effect in split mode, when a section
sets `path` (doc/split.md); in embedded mode (`make run`: one process, the
components calling each other directly) they have none, and neither have
those of a section without `path` in split mode.  What smx does not use
is accepted, so that a sendmail X configuration reads, but has no
effect: the tables below say "**no effect**" and why.
When a file sets such an option, flag or section, `smx config` and
`twistd smx` at start print one warning line naming the file, line and
column, e.g. `smx.conf:12:5: warning: option 'user' in section 'smtps'
has no effect: used by the MCP in split mode, and no section of this
configuration sets 'path' ...`.  Options that have no effect
with the other settings (see the end of this file) are warned about the
same way.

## smx additions

Marked `smx` in the § column: the `lmtpd` section (smx's own LMTP server
that delivers into Maildirs, so that the embedded default delivers local
mail with nothing else installed; its `socket` is an option, the path of
its Unix domain socket, by default smtpc's `LMTP_socket`), `log { file }`,
`auth { password_file }` and the auth flag `allow_plaintext_without_tls`
(without it, AUTH is offered only after STARTTLS), and the time units
`ms` and `us`.  Where the README gives no default, the default in the
tables below is smx's choice.

## Seeing the configuration in force

`smx config -f FILE` prints the options set in FILE, normalised (canonical
names, units, absolute paths, alternative spellings such as `type`,
`max_recipients`, `trusted_auth_mechs` and `auth_flags` written as what
they stand for).  `-V` adds the version and the directories relative
path names were resolved against, `-VV` every option of the sections in
the file (defaults marked `# default`), `-VVV` also the global options
and the subsections left out, `-VVVV` every component, and `-VVVVV` the
same with the type, unit, bounds, default and § of each option.  Every
level reads back as the same configuration.  Options set without effect
(see above) are marked `# no effect: why`, as are unset ones that would
look in force (the `address` of an smtps section that has a
`daemon_address`).

`smx config` cannot know where `twistd smx` will run: it takes the queue
directory to be the directory of FILE, as in the embedded layout (`make
run`, `smx default-config`), unless `-Q DIR` (or `-d DIR`, as to `twistd
smx`) names it.  It also checks the TLS files (those of the `certificate`
sections of smtps `tls` too): `cert_file` and `key_file` must be readable
PEM and belong to each other, a `key_file` others may read or write is
an error (§9.2; 0640 is fine), and a certificate past its end a warning.
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    if "`" in text:
        return text
    return "`%s`" % (text,)


def _optionRows(options: Sequence[Option]) -> List[str]:
    rows = [
        "| option | type | default | bounds | § | description |",
        "|---|---|---|---|---|---|",
    ]
    for o in options:
        if o.defaultDoc is not None:
            default = o.defaultDoc
        elif o.default is None:
            default = "none"
        else:
            default = _code(defaultText(o))
        doc = o.doc
        if o.required:
            doc = "**required**; " + doc
        if o.inert is not None:
            doc += "; **no effect** (%s)" % (o.inert,)
        for flag, why in o.inertFlags:
            spelling = getattr(o.type, "spelling", {}).get(flag, flag)
            doc += "; flag `%s`: **no effect** (%s)" % (spelling, why)
        if o.aliasOf is not None:
            doc += " (alias of `%s`%s)" % (
                " { ".join(o.aliasOf) + " }" * (len(o.aliasOf) - 1),
                "; deprecated" if o.deprecated else "",
            )
        bounds = "" if o.type.typeName == "path" else o.type.bounds()
        rows.append(
            "| `%s` | %s | %s | %s | %s | %s |"
            % (
                o.name,
                _cell(typeText(o)),
                _cell(default),
                _cell(bounds),
                o.ref,
                _cell(doc),
            )
        )
    return rows


def _sectionText(spec: SectionSpec, path: Sequence[str], skipGroups: bool) -> List[str]:
    lines: List[str] = []
    title = " › ".join(path)
    level = "##" if len(path) == 1 else "###"
    lines.append("%s %s (%s)" % (level, title, spec.ref))
    lines.append("")
    usage = spec.keyword
    if spec.naming == REQUIRED_NAME:
        usage += " NAME"
    elif spec.naming != NO_NAME:
        usage += " [NAME]"
    note = spec.doc[0].upper() + spec.doc[1:] + "."
    if spec.multiple:
        note += " May be repeated"
        if spec.maxCount is not None:
            note += " (at most %d times)" % (spec.maxCount,)
        note += "."
    if spec.inert is not None:
        note += " **No effect** (%s)." % (spec.inert,)
    lines.append("`%s { ... }`: %s" % (usage, note))
    lines.append("")
    own = [o for o in spec.options if not (skipGroups and o.group in ("mcp", "log"))]
    if skipGroups:
        lines.append(
            "Also valid here: the MCP options%s (§5.2) and `log { }` and "
            "`log_level` (§5.5), see above."
            % (
                " and `socket { }`"
                if spec.subsection("socket") is not None
                else " (but `socket` is an option here)"
            )
        )
        lines.append("")
    if own:
        lines.extend(_optionRows(own))
        lines.append("")
    for sub in spec.subsections:
        if skipGroups and sub.keyword in ("socket", "log"):
            continue
        if sub.keyword == "map" and spec.keyword == "smar":
            lines.append("### %s › map NAME (§5.8.1)" % (title,))
            lines.append("")
            lines.append("See [map NAME](#map-name-581) below.")
            lines.append("")
            continue
        lines.extend(_sectionText(sub, list(path) + [sub.keyword], False))
    return lines


def renderReference() -> str:
    """
    @return: the Markdown reference of every option, ending with a
        newline.
    """
    lines = [_INTRO]
    lines.append("## The global section (§5.4)")
    lines.append("")
    lines.append(
        "Options outside any section; they have defaults and should only "
        "be changed if necessary."
    )
    lines.append("")
    lines.extend(_optionRows(table.ROOT.options))
    lines.append("")
    lines.append("## MCP options (§5.2)")
    lines.append("")
    lines.append(
        "Valid in every component section and in the section of every "
        "service started by MCP.  At most one of `port` and `socket` may be "
        "given; `mcp_type = pass` requires `pass_fd_socket`."
    )
    lines.append("")
    lines.extend(_optionRows([o for o in table.SMTPS.options if o.group == "mcp"]))
    lines.append("")
    lines.extend(_mcpListeners())
    socket = table.QMGR.subsection("socket")
    assert socket is not None
    lines.extend(_sectionText(socket, ["MCP", "socket"], False))
    lines.append("## Logging (§5.5)")
    lines.append("")
    lines.append("Valid in every component section.")
    lines.append("")
    logOptions = [o for o in table.QMGR.options if o.group == "log"]
    lines.extend(_optionRows(logOptions))
    lines.append("")
    log = table.QMGR.subsection("log")
    assert log is not None
    lines.extend(_sectionText(log, ["Logging", "log"], False))
    for spec in (
        table.QMGR,
        table.SMAR,
        table.SMTPS,
        table.SMTPC,
        table.LMTPD,
        table.PICKUP,
    ):
        lines.extend(_sectionText(spec, [spec.keyword], True))
    lines.extend(_sectionText(table.METRICS, ["metrics"], False))
    lines.extend(_sectionText(table.MAP, ["map NAME"], False))
    lines.extend(_sectionText(table.POLICY, ["policy NAME"], False))
    lines.extend(_sectionText(table.MILTER, ["milter NAME"], False))
    lines.append("## Settings checked together")
    lines.append("")
    body = (_reconcileDoc or "").split("Errors:", 1)[-1]
    errors, _, warnings = body.partition("Warnings:")
    lines.append("These are errors:")
    lines.append("")
    lines.extend(_bullets(errors))
    lines.append("")
    lines.append("These give a warning (shown by `smx config`):")
    lines.append("")
    lines.extend(_bullets(warnings))
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"


def _mcpListeners() -> List[str]:
    """
    @return: a paragraph on the MCP options that some components use and
        others do not (C{port} and C{address}).
    """
    components = list(table.COMPONENTS.values())
    lines: List[str] = []
    for option in table.SMTPS.options:
        if option.group != "mcp" or option.aliasOf is not None:
            continue
        kinds = [(c.keyword, c.option(option.name)) for c in components]
        inert = [k for k, o in kinds if o is not None and o.inert is not None]
        used = [k for k, o in kinds if o is not None and o.inert is None]
        if inert and used:
            reason = next(o.inert for k, o in kinds if o is not None and o.inert)
            lines.append(
                "- `%s` is used by %s; in %s it has **no effect** (%s)."
                % (option.name, ", ".join(used), ", ".join(inert), reason)
            )
    if lines:
        lines.append("")
    return lines


def _bullets(text: str) -> List[str]:
    """
    Turn the epytext list of a docstring into Markdown bullets.
    """
    items: List[str] = []
    for raw in text.strip().splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("- "):
            items.append(line[2:])
        elif items:
            items[-1] += " " + line
    return ["- " + _epytext(item) for item in items]


def _epytext(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        if text.startswith("C{", i):
            end = text.find("}", i)
            out.append("`%s`" % (text[i + 2 : end],))
            i = end + 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out)

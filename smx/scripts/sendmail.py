# -*- test-case-name: smx.scripts.test.test_sendmail,smx.scripts.test.test_integration_sendmail -*-
"""
NAME
    smx sendmail - the sendmail command line of smx (also mailq, newaliases)

SYNOPSIS
    smx sendmail [OPTIONS...] [--] [RECIPIENT...]
    smx-sendmail [OPTIONS...] [--] [RECIPIENT...]
    sendmail, mailq, newaliases: links to smx-sendmail

DESCRIPTION
    Reads a message on standard input and submits it to the local SMTPS
    with ESMTP, the way cron, mail(1), PHP's mail() and git call
    C{/usr/sbin/sendmail}.  When SMTPS does not take it (smx does not run,
    or answers 4xx) the message is kept in the maildrop directory
    (L{smx.queue.maildrop}), durably, before the command exits with 0, and
    the pickup service of smx (L{smx.queue.pickup}) submits it later.

    The options are those of Postfix's sendmail(1), with sendmail 8's
    C{-R} and C{-oe}.  Options are read up to the first argument that is
    not one (or C{--}); the rest are recipients, each parsed as an address
    list (C{"a@b, Name <c@d>"}).  An address without a domain gets the
    configured C{hostname}.

      -t            recipients from To:, Cc:, Bcc: (Resent- forms if
                    present) as well as the arguments (as Postfix)
      -f ADDR, -r ADDR
                    the envelope sender, one address (C{<>}: null;
                    C{"Name <a@b>"} gives C{a@b}; C{"a b"}, unbalanced
                    brackets or a list are usage errors); default
                    login@hostname
      -F NAME       the full name in a From: header that is added
                    (default: $NAME, else the password file's)
      -i, -oi       a line with a single dot does not end the input
      -oem, -oew    errors are mailed back to the sender (exit status 0)
      -oep          errors are printed on standard error (the default)
      -oeq          errors are only told by the exit status
      -N DSN        NOTIFY: never, or success,failure,delay; sent only if
                    SMTPS offers DSN, else ignored
      -R full|hdrs  RET; -V ENVID: ENVID (both only with DSN)
      -B 7BIT|8BITMIME
                    the body type (default: 8BITMIME for 8-bit content)
      -C FILE|DIR   the smx.conf (default: $SMXCONF, else
                    /etc/smx/smx.conf if it exists, else the embedded
                    default configuration)
      -oQDIR        the queue directory (default: the directory of the
                    configuration file)
      -v            show the SMTP dialogue on standard error
      -bm           submit a message (the default)
      -bs           SMTP on standard input and output, relayed to SMTPS
      -bp           show the queue (as smx mailq, or a link named mailq)
      -bi, -I       rebuild the aliases map (or a link named newaliases);
                    -oAFILE names its text file
      -q            deliver the deferred mail now (smx qmgrctl flush);
                    -qIID one transaction; -qNUMBER is ignored
      -bh, -bH      ignored (exit 0)

    Accepted and ignored, as Postfix does: -A X, -G, -L LABEL, -O X, -U,
    -X FILE, -c, -e X, -h N, -m, -n, -o X (other than the above), -p X,
    -x.  Any other option is a usage error.

    The message gets a C{Received:} header with the user id, and the
    missing C{From:}, C{Date:} and C{Message-ID:};
    C{Bcc:} is removed (L{smx.scripts.sendmailmessage}).

ENVIRONMENT
    SMXCONF   the smx.conf to use when -C is not given (else
              $SMXCONFDIR/smx.conf, /etc/smx/smx.conf by default, if it
              exists, with the queue in $SMXQDIR, /var/spool/smx)
    NAME      the full name for From:
    SMXPOSTDROP
              the set-group-id maildrop helper (default: smx-postdrop
              beside the interpreter)

EXIT STATUS
    0 the message was accepted by SMTPS or kept in the maildrop (or, with
    C{-oem}, an error report was); 64 (EX_USAGE) a usage error; 65
    (EX_DATAERR) content SMTPS refused or that cannot be sent; 67
    (EX_NOUSER) a recipient was refused (the others got the message);
    69 (EX_UNAVAILABLE) the sender or the message was refused; 70
    (EX_SOFTWARE) an internal error; 71 (EX_OSERR) no login name; 74
    (EX_IOERR) standard input could not be read; 75 (EX_TEMPFAIL) smx
    did not take the message and it could not be kept; 78 (EX_CONFIG) a
    bad configuration.

DIAGNOSTICS
    One line per problem on standard error, starting with the program
    name; never a traceback.

SECURITY
    Not set-user-id or set-group-id: the maildrop directory is written
    with the user's own rights (see C{maildrop_group}), or, when they
    do not suffice, through the set-group-id helper C{smx-postdrop}
    beside the interpreter (C{contrib/smx-postdrop.c}, installed by
    C{smx setup}), as Postfix's sendmail uses postdrop.
"""

from __future__ import annotations

import os
import re
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any, List, Optional, TextIO, Tuple

EX_OK = 0
EX_USAGE = 64
EX_DATAERR = 65
EX_NOINPUT = 66
EX_NOUSER = 67
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_OSERR = 71
EX_IOERR = 74
EX_TEMPFAIL = 75
EX_CONFIG = 78

#: options that take an argument (Postfix's GETOPT_LIST)
WITH_ARGUMENT = frozenset("ABCFLNORVXbefhopqr")
#: options without one
FLAGS = frozenset("GIUcimntvx")


class Failure(Exception):
    """
    The command fails: C{status} is the exit status, the text the line
    for standard error.
    """

    def __init__(self, status: int, message: str) -> None:
        Exception.__init__(self, message)
        self.status = status


@dataclass
class SendmailOptions:
    """
    The parsed command line.

    @ivar mode: C{"enqueue"}, C{"smtp"} (C{-bs}), C{"mailq"},
        C{"newaliases"}, C{"flush"} or C{"ignore"}.
    @ivar errorMode: C{"print"}, C{"mail"} or C{"quiet"} (C{-oe}).
    """

    mode: str = "enqueue"
    sender: Optional[str] = None
    fullName: Optional[str] = None
    extract: bool = False
    dotEnds: bool = True
    errorMode: str = "print"
    notify: Optional[str] = None
    ret: Optional[str] = None
    envid: Optional[str] = None
    bodyType: Optional[str] = None
    config: Optional[str] = None
    queueDirectory: Optional[str] = None
    aliasFile: Optional[str] = None
    verbose: int = 0
    flushId: Optional[str] = None
    recipients: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)


def modeFromName(program: str) -> str:
    """
    The mode a program name selects: C{mailq} and C{newaliases} as
    sendmail does, anything else submits.
    """
    name = os.path.basename(program)
    if name == "mailq":
        return "mailq"
    if name == "newaliases":
        return "newaliases"
    return "enqueue"


def parseNotify(text: str) -> Optional[str]:
    """
    The C{NOTIFY=} value of C{-N}: C{NEVER}, or some of C{SUCCESS},
    C{FAILURE}, C{DELAY}; C{None} for anything else.
    """
    words = []  # type: List[str]
    for w in text.replace(" ", "").upper().split(","):
        if w and w not in words:
            words.append(w)
    if words == ["NEVER"]:
        return "NEVER"
    if words and all(w in ("SUCCESS", "FAILURE", "DELAY") for w in words):
        return ",".join(words)
    return None


def _option(o: SendmailOptions, letter: str, value: str) -> None:
    from smx.queue.maildrop import validEnvid

    if letter == "B":
        body = value.upper()
        if body not in ("7BIT", "8BITMIME"):
            raise Failure(EX_USAGE, "-B option needs 8BITMIME or 7BIT")
        o.bodyType = body
    elif letter == "C":
        o.config = value
    elif letter == "F":
        o.fullName = value
    elif letter == "N":
        o.notify = parseNotify(value)
        if o.notify is None:
            o.warnings.append("bad -N option value -- ignored")
    elif letter == "R":
        if value.lower() not in ("full", "hdrs"):
            raise Failure(EX_USAGE, "-R option needs full or hdrs")
        o.ret = value.upper()
    elif letter == "V":
        if validEnvid(value):
            o.envid = value
        else:
            o.warnings.append("bad -V option value -- ignored")
    elif letter == "b":
        _bmode(o, value)
    elif letter in ("f", "r"):
        parseSender(value)
        o.sender = value
    elif letter == "o":
        _ooption(o, value)
    elif letter == "q":
        if value[:1].isdigit():
            if o.mode not in ("mailq", "newaliases", "smtp"):
                o.mode = "ignore"
        elif value[:1] == "I" and value[1:]:
            o.mode = "flush"
            o.flushId = value[1:]
        else:
            raise Failure(EX_USAGE, "-q%s is not implemented" % (value,))
    # A, L, O, X, e, h, p: accepted and ignored


def _bmode(o: SendmailOptions, value: str) -> None:
    modes = {"m": "enqueue", "s": "smtp", "p": "mailq", "i": "newaliases"}
    if value in modes:
        o.mode = modes[value]
    elif value in ("h", "H"):
        o.mode = "ignore"
    elif value == "d":
        raise Failure(EX_USAGE, "-bd: start smx with twistd -n smx")
    else:
        raise Failure(EX_USAGE, "unsupported: -b%s" % (value,))


def _ooption(o: SendmailOptions, value: str) -> None:
    letter, rest = value[:1], value[1:]
    if letter == "i":
        o.dotEnds = False
    elif letter == "e":
        mode = {"m": "mail", "w": "mail", "e": "mail", "p": "print", "q": "quiet"}
        if rest[:1] in mode:
            o.errorMode = mode[rest[:1]]
    elif letter == "A":
        if not rest:
            raise Failure(EX_USAGE, "-oA requires a file name")
        o.aliasFile = rest
    elif letter == "Q":
        if not rest:
            raise Failure(EX_USAGE, "-oQ requires a directory")
        o.queueDirectory = rest
    # -om, -o7, -o8 and the others: ignored


def _flag(o: SendmailOptions, letter: str) -> None:
    if letter == "I":
        o.mode = "newaliases"
    elif letter == "i":
        o.dotEnds = False
    elif letter == "t":
        o.extract = True
    elif letter == "v":
        o.verbose += 1
    # G, U, c, m, n, x: ignored


def parseArguments(argv: List[str], program: str = "sendmail") -> SendmailOptions:
    """
    Parse a sendmail command line (after the program name), as Postfix's
    sendmail does: options up to the first other argument or C{--}, an
    option's argument in the same word or the next one, C{-q} alone
    meaning flush.

    @param program: the name the program was called by (C{mailq} and
        C{newaliases} select their mode).
    @raise Failure: for a usage error (C{EX_USAGE}).
    """
    o = SendmailOptions(mode=modeFromName(program))
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            i += 1
            break
        if arg == "-q":
            o.mode = "flush"
            i += 1
            continue
        if not arg.startswith("-") or arg == "-":
            break
        j = 1
        while j < len(arg):
            letter = arg[j]
            if letter in WITH_ARGUMENT:
                if j + 1 < len(arg):
                    value = arg[j + 1 :]
                else:
                    i += 1
                    if i >= len(argv):
                        raise Failure(
                            EX_USAGE, "option requires an argument -- '%s'" % (letter,)
                        )
                    value = argv[i]
                _option(o, letter, value)
                break
            if letter not in FLAGS:
                raise Failure(EX_USAGE, "invalid option -- '%s'" % (letter,))
            _flag(o, letter)
            j += 1
        i += 1
    o.recipients = list(argv[i:])
    if o.extract and o.mode != "enqueue":
        raise Failure(EX_USAGE, "-t can be used only in delivery mode")
    if o.recipients and o.mode != "enqueue":
        what = {
            "smtp": "stand-alone SMTP mode",
            "mailq": "display queue mode",
            "newaliases": "alias initialization mode",
            "flush": "flush queue mode",
            "ignore": "this mode",
        }[o.mode]
        raise Failure(EX_USAGE, "%s requires no recipient" % (what,))
    return o


# the configuration


def loadSubmissionConfiguration(
    options: SendmailOptions, environ: Any
) -> Tuple[Any, Optional[str], bool]:
    """
    The configuration: C{-C}, else C{$SMXCONF}, else the embedded default
    configuration (SMTPS on 127.0.0.1:2525, as C{twistd smx} without
    C{--config}).  The queue directory is C{-oQ}, else the directory of
    the configuration file: the embedded layout keeps smx.conf there.
    Before the embedded default comes the installed system's
    C{smx.conf} in C{$SMXCONFDIR} (default C{/etc/smx}, made by C{smx
    setup}) with its queue in C{$SMXQDIR} (default C{/var/spool/smx}),
    so that C{/usr/sbin/sendmail} finds smx without options.

    @return: C{(configuration, file or None, whether the queue directory
        is known)}.
    @raise Failure: for a bad configuration (C{EX_CONFIG}).
    """
    from smx.config import ConfigError, configurationFromText, loadConfiguration

    path = options.config or environ.get("SMXCONF") or None
    queue = options.queueDirectory
    system = os.path.join(environ.get("SMXCONFDIR") or "/etc/smx", "smx.conf")
    if path is None and os.path.exists(system):
        # smx setup's layout (seed §4): configuration and queue apart
        path = system
        queue = queue or environ.get("SMXQDIR") or "/var/spool/smx"
    try:
        if path:
            if os.path.isdir(path):
                path = os.path.join(path, "smx.conf")
            if queue is None:
                queue = os.path.dirname(os.path.abspath(path))
            return loadConfiguration(path, queueDirectory=queue), path, True
        from smx.scripts.defaultconfig import defaultText

        cfg = configurationFromText(
            defaultText("smx.conf"),
            filename="the embedded default configuration",
            queueDirectory=queue or os.getcwd(),
        )
        return cfg, None, queue is not None
    except ConfigError as e:
        raise Failure(EX_CONFIG, str(e))


# who submits


def loginName(uid: int, environ: Any) -> str:
    """
    The login name of C{uid} (the password file, else C{$LOGNAME} or
    C{$USER}).

    @raise Failure: C{EX_OSERR} if there is none.
    """
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        name = environ.get("LOGNAME") or environ.get("USER")
        if name:
            return name
    raise Failure(EX_OSERR, "no login name found for user ID %d" % (uid,))


def defaultFullName(uid: int, login: str) -> str:
    """
    The full name in the password file (the first field of the GECOS
    field, C{&} standing for the login name capitalised).
    """
    import pwd

    try:
        gecos = pwd.getpwuid(uid).pw_gecos
    except KeyError:
        return ""
    name = gecos.split(",", 1)[0].strip()
    return name.replace("&", login.capitalize())


def qualify(address: str, hostname: str) -> str:
    """
    C{address} with C{@hostname} if it has no domain.
    """
    if address and "@" not in address:
        return "%s@%s" % (address, hostname)
    return address


#: one mailbox of C{-f}: a local part of atoms and dots (C{a..b}, as
#: sendmail takes it) or quoted, and a dot-atom or literal domain (any non-ASCII character counts as atext, SMTPUTF8)
_ATOM = r"[^\s\x00-\x1f\x7f()<>\[\]:;@\\,.\"]+"
_MAILBOX = re.compile(
    r'(?:[^\s\x00-\x1f\x7f()<>\[\]:;@\\,"]+|"(?:[^"\\\r\n]|\\.)*")'
    r"(?:@(?:%(a)s(?:\.%(a)s)*|\[[^\[\]\\\s]*\]))?" % {"a": _ATOM}
)
#: C{Name <mailbox>} or C{<mailbox>}
_ANGLE = re.compile(r"((?:[^<>\"]|\"(?:[^\"\\]|\\.)*\")*)<\s*([^<>]*?)\s*>")
#: C{mailbox (Full Name)}, the old form
_COMMENT = re.compile(r"(\S+)\s*\([^()]*\)")


def parseSender(text: str) -> str:
    """
    The address of C{-f}: C{text} is one address, C{"Name <a@b>"},
    C{<a@b>}, C{a@b (Name)} or C{a@b} (giving C{a@b}); C{""} for C{<>},
    C{"Name <>"} or nothing.

    @raise Failure: C{EX_USAGE} for anything else (C{"a b"}, unbalanced
        angle brackets or quotes, a list of addresses, C{"a@"}), rather
        than submitting with an address the user did not mean.
    """
    stripped = text.strip()
    address = None  # type: Optional[str]
    angle = _ANGLE.fullmatch(stripped)
    comment = _COMMENT.fullmatch(stripped)
    if angle is not None:
        name = re.sub(r'"(?:[^"\\]|\\.)*"', "", angle.group(1))
        if not re.search(r"[,;@()]", name):
            address = angle.group(2)
    elif comment is not None:
        address = comment.group(1)
    else:
        address = stripped
    if address == "" or (address is not None and _MAILBOX.fullmatch(address)):
        return address
    raise Failure(
        EX_USAGE,
        "-f option specified malformed sender %r: give one address "
        '(user@domain, "Full Name <user@domain>", or <> for the null '
        "sender)" % (text,),
    )


def recipientList(
    arguments: List[str], fromHeader: List[str], hostname: str
) -> List[str]:
    """
    The recipients: those of the arguments (each an address list), then
    those of the header, qualified, each once (the domain compared
    without case).
    """
    from smx.scripts.sendmailmessage import headerAddresses

    seen = set()
    out = []
    for address in headerAddresses(arguments) + fromHeader:
        address = qualify(address, hostname)
        local, at, domain = address.rpartition("@")
        key = (local, domain.lower()) if at else (address, "")
        if key not in seen:
            seen.add(key)
            out.append(address)
    return out


# submitting


@dataclass
class Problem:
    """
    A recipient that did not get the message.
    """

    address: str
    code: int
    reply: str
    where: str


class Submission:
    """
    One message submitted by C{smx sendmail}: to SMTPS, else to the
    maildrop directory.
    """

    def __init__(
        self,
        options: SendmailOptions,
        cfg: Any,
        canDrop: bool,
        program: str,
        stderr: TextIO,
        environ: Any,
    ) -> None:
        from smx.queue.pickupsettings import PickupSettings

        self.options = options
        self.cfg = cfg
        self.canDrop = canDrop
        self.program = program
        self.stderr = stderr
        self.environ = environ
        self.settings = PickupSettings.fromConfiguration(cfg)

    def say(self, line: str) -> None:
        self.stderr.write("%s: %s\n" % (self.program, line))
        self.stderr.flush()

    def trace(self, line: str) -> None:
        self.stderr.write(line + "\n")
        self.stderr.flush()

    def run(self, stdin: Any) -> int:
        from smx.queue.maildrop import DropEnvelope, DropRecipient, validAddress
        from smx.scripts.sendmailmessage import (
            Identity,
            MessageError,
            prepareMessage,
            readMessage,
        )

        options = self.options
        hostname = self.settings.hostname
        uid = os.getuid()
        login = loginName(uid, self.environ)
        if options.sender is not None:
            sender = qualify(parseSender(options.sender), hostname)
        else:
            sender = "%s@%s" % (login, hostname)
        if not validAddress(sender, allowNull=True):
            raise Failure(EX_USAGE, "bad sender address %r" % (sender,))
        fullName = options.fullName
        if fullName is None:
            fullName = self.environ.get("NAME") or defaultFullName(uid, login)
        if not options.extract and not options.recipients:
            raise Failure(
                EX_USAGE,
                "Recipient addresses must be specified on the command line or "
                "via the -t option",
            )
        try:
            lines = readMessage(stdin, options.dotEnds)
        except OSError as e:
            raise Failure(EX_IOERR, "error reading input: %s" % (e.strerror or e,))
        try:
            message = prepareMessage(
                lines, Identity(sender, fullName, hostname, uid), options.extract
            )
        except MessageError as e:
            raise Failure(EX_DATAERR, str(e))
        recipients = recipientList(options.recipients, message.recipients, hostname)
        if not recipients:
            raise Failure(
                EX_USAGE,
                (
                    "No recipient addresses found in message header"
                    if options.extract
                    else "No recipient addresses found on the command line"
                ),
            )
        problems = [
            Problem(a, 553, "553 5.1.3 bad address syntax", "rcpt")
            for a in recipients
            if not validAddress(a)
        ]
        good = [a for a in recipients if validAddress(a)]
        bodyType = options.bodyType or ("8BITMIME" if message.eightBit else "7BIT")
        envelope = DropEnvelope(
            sender,
            tuple(DropRecipient(a, options.notify) for a in good),
            ret=options.ret,
            envid=options.envid,
            bodyType=bodyType,
            created=time.time(),
            user=login,
        )
        status = EX_OK
        if good:
            status = self._submit(envelope, message.content, problems)
        if problems:
            status = max(status, self._report(envelope, message.content, problems))
        return status

    def _submit(self, envelope: Any, content: bytes, problems: List[Problem]) -> int:
        from smx.queue.submission import submit

        outcome = submit(
            self.settings.submissionAddress,
            envelope,
            content,
            self.settings.hostname,
            trace=self.trace if self.options.verbose else None,
        )
        for r in outcome.permanent:
            problems.append(Problem(r.address, r.code, r.reply, r.where))
        if self.options.verbose and outcome.accepted:
            self.say(
                "sent to %s" % (", ".join("<%s>" % (a,) for a in outcome.accepted),)
            )
        if not outcome.temporary:
            return EX_OK
        kept = [
            r
            for r in envelope.recipients
            if r.address in {t.address for t in outcome.temporary}
        ]
        reason = outcome.temporary[0].reply
        name, why = self._drop(envelope.withRecipients(kept), content)
        if name is not None:
            if self.options.verbose:
                self.say("%s; the message waits in the maildrop (%s)" % (reason, name))
            return EX_OK
        for r in outcome.temporary:
            self.say("<%s>: %s" % (r.address, r.reply))
        self.say("cannot keep the message: %s" % (why,))
        return EX_TEMPFAIL

    def _drop(self, envelope: Any, content: bytes) -> Tuple[Optional[str], str]:
        """
        Keep a message in the maildrop directory.

        @return: C{(file name, "")}, or C{(None, why not)}.
        """
        from smx.queue.maildrop import dropMessage, dropThroughHelper, postdropProgram

        if not self.canDrop:
            return None, (
                "no maildrop directory is known: give -C smx.conf (or set "
                "SMXCONF), or -oQ with the queue directory"
            )
        directory = self.settings.directory
        try:
            if not os.path.lexists(directory):
                # smx has not run yet (pickup makes it at start, with its
                # group and mode)
                os.mkdir(directory, 0o700)
            return dropMessage(directory, envelope, content), ""
        except PermissionError as e:
            # not in the maildrop group: the set-group-id smx-postdrop
            hint = ""
            if self.settings.maildropGroup is None:
                hint = (
                    " (without maildrop_group in the pickup section only root "
                    "and smx's user may keep mail while smx is down; "
                    "doc/sendmail.md)"
                )
            helper = postdropProgram()
            if helper is None:
                return None, "%s: %s%s" % (
                    e.filename or directory,
                    e.strerror or e,
                    hint,
                )
            try:
                return dropThroughHelper(helper, directory, envelope, content), ""
            except OSError as e:
                return None, (e.strerror or str(e)) + hint
        except OSError as e:
            return None, "%s: %s" % (e.filename or directory, e.strerror or e)

    def _report(self, envelope: Any, content: bytes, problems: List[Problem]) -> int:
        """
        Tell the sender about recipients refused for good: print them, or
        mail a report (C{-oem}).

        @return: the exit status they give.
        """
        if any(p.where == "rcpt" for p in problems):
            status = EX_NOUSER
        elif any(p.where == "final_dot" for p in problems):
            status = EX_DATAERR
        else:
            status = EX_UNAVAILABLE
        if self.options.errorMode == "mail" and envelope.sender:
            if self._mailReport(envelope, content, problems):
                return EX_OK
        if self.options.errorMode != "quiet":
            for p in problems:
                self.say("<%s>: %s" % (p.address, p.reply))
        return status

    def _mailReport(
        self, envelope: Any, content: bytes, problems: List[Problem]
    ) -> bool:
        """
        Mail a non-delivery report to the sender.

        @return: whether it was accepted (or kept in the maildrop).
        """
        from smx.queue.dsn import buildReport, is8bit
        from smx.queue.maildrop import DropEnvelope, DropRecipient
        from smx.queue.submission import submit

        report = buildReport(
            "failed",
            self.settings.hostname,
            {
                "id": "sendmail",
                "sender": envelope.sender,
                "received": envelope.created,
                "envid": envelope.envid,
            },
            [
                {
                    "address": p.address,
                    "code": p.code,
                    "reply": p.reply,
                    "where": p.where,
                }
                for p in problems
            ],
            content,
            headersOnly=envelope.ret == "HDRS",
        )
        bounce = DropEnvelope(
            "",
            (DropRecipient(envelope.sender),),
            bodyType="8BITMIME" if is8bit(report) else "7BIT",
            created=time.time(),
            user=envelope.user,
        )
        outcome = submit(
            self.settings.submissionAddress,
            bounce,
            report,
            self.settings.hostname,
            trace=self.trace if self.options.verbose else None,
        )
        if outcome.accepted:
            return True
        if outcome.temporary:
            return self._drop(bounce, report)[0] is not None
        return False


# the other modes


#: C{-bs}: after the end of standard input, how long SMTPS may stay
#: silent before the session is closed (a session without C{QUIT})
SMTP_INPUT_END_IDLE = 10.0


def relaySMTP(
    address: Tuple[str, int],
    stdin: Any,
    stdout: Any,
    idle: float = SMTP_INPUT_END_IDLE,
) -> int:
    """
    C{-bs}: relay standard input to SMTPS and its replies to standard
    output until SMTPS closes the connection.

    The end of standard input does not end the session: a client that
    writes every command at once (C{printf ... | sendmail -bs}) gets the
    replies to all of them, as from Postfix's C{sendmail -bs}.  Only when
    SMTPS has said nothing for C{idle} seconds after the end of the input
    (a session that did not end with C{QUIT}) is the connection closed.
    """
    import selectors

    try:
        connection = socket.create_connection(address, timeout=10)
    except OSError as e:
        stdout.write(
            b"421 4.3.2 smx does not answer at %s:%d: %s\r\n"
            % (address[0].encode(), address[1], (e.strerror or str(e)).encode())
        )
        stdout.flush()
        return EX_TEMPFAIL
    connection.settimeout(None)
    inFd = stdin.fileno()
    outFd = stdout.fileno()
    selector = selectors.DefaultSelector()
    selector.register(inFd, selectors.EVENT_READ, "in")
    selector.register(connection, selectors.EVENT_READ, "server")
    inputEnded = False
    try:
        while True:
            ready = selector.select(idle if inputEnded else None)
            if not ready:
                return EX_OK
            for key, _ in ready:
                if key.data == "in":
                    data = os.read(inFd, 65536)
                    if data:
                        connection.sendall(data)
                    else:
                        # no half-close: SMTPS (Twisted) would take it for
                        # the end of the session and drop its replies
                        selector.unregister(inFd)
                        inputEnded = True
                else:
                    data = connection.recv(65536)
                    if not data:
                        return EX_OK
                    view = memoryview(data)
                    while view:
                        view = view[os.write(outFd, view) :]
    except OSError:
        return EX_OK
    finally:
        selector.close()
        connection.close()


def newaliases(
    options: SendmailOptions, cfg: Any, path: Optional[str], say: Any
) -> int:
    """
    Rebuild the aliases map from its text file (C{-oA}, else the aliases
    map of the configuration without C{.db}), then have a running smx
    reopen its maps.
    """
    from smx.maps.createmap import CreateMapError, createMapFromFile

    if options.aliasFile:
        source = options.aliasFile
        target = source + ".db"
    else:
        if path is None:
            raise Failure(
                EX_CONFIG,
                "no configuration: give -C smx.conf (or set SMXCONF), or -oA "
                "with the aliases file",
            )
        target = cfg.section("smar").section("aliases")["name"]
        if not target.endswith(".db"):
            raise Failure(
                EX_CONFIG,
                "cannot tell the text file of the aliases map %s (it does not "
                "end in .db); give it with -oA" % (target,),
            )
        source = target[:-3]
    try:
        warnings = createMapFromFile(source, target, aliases=True)
    except CreateMapError as e:
        raise Failure(EX_DATAERR, str(e))
    for w in warnings:
        say(w)
    if options.verbose:
        say("%s: rebuilt from %s" % (target, source))
    if path is not None:
        socketPath = cfg.section("qmgr")["control_socket"]
        if os.path.exists(socketPath):
            _control(socketPath, "reload", None, say, bool(options.verbose))
    return EX_OK


def _control(
    path: str, command: str, argument: Optional[str], say: Any, verbose: bool
) -> bool:
    """
    Send one command to QMGR's control socket; a failure is said, the
    result only when C{verbose}.

    @return: whether QMGR did it.
    """
    from smx.scripts.qmgrctl import _run

    try:
        result = _run(path, command, [argument] if argument else [], prog="sendmail")
    except SystemExit as e:
        say(str(e.code).replace("sendmail: ", "", 1))
        return False
    if verbose:
        say(" ".join("%s=%s" % (k, v) for k, v in sorted((result or {}).items())))
    return True


def flush(options: SendmailOptions, cfg: Any, say: Any) -> int:
    """
    C{-q}: retry the deferred recipients now (C{smx qmgrctl flush});
    C{-qIID}: those of one transaction.
    """
    path = cfg.section("qmgr")["control_socket"]
    if _control(path, "flush", options.flushId, say, bool(options.verbose)):
        return EX_OK
    return EX_UNAVAILABLE


def mailq(options: SendmailOptions, path: Optional[str], cfg: Any) -> int:
    """
    C{-bp}: show the queue, as C{smx mailq}.
    """
    from smx.scripts import mailq as mailqScript

    argv = []  # type: List[str]
    if path is not None:
        argv = ["-f", path, "-q", cfg.queueDirectory]
    return mailqScript.run(argv)


def programName(program: str) -> str:
    """
    The name used in messages: the link name, or C{sendmail}.
    """
    name = os.path.basename(program)
    if name in ("mailq", "newaliases", "sendmail", "smx sendmail"):
        return name
    return "sendmail"


def run(
    argv: List[str],
    program: str = "smx sendmail",
    stdin: Any = None,
    stdout: Any = None,
    stderr: Optional[TextIO] = None,
    environ: Any = None,
) -> int:
    """
    Run C{smx sendmail}.

    @param argv: the arguments after the program name.
    @param program: the name it was called by (C{mailq}, C{newaliases}
        select their mode).
    @return: the exit status.
    """
    stdin = stdin if stdin is not None else sys.stdin.buffer
    stdout = stdout if stdout is not None else sys.stdout.buffer
    stderr = stderr if stderr is not None else sys.stderr
    environ = environ if environ is not None else os.environ
    name = programName(program)

    def say(line: str) -> None:
        stderr.write("%s: %s\n" % (name, line))
        stderr.flush()

    try:
        options = parseArguments(argv, program)
        for warning in options.warnings:
            say("warning: " + warning)
        if options.mode == "ignore":
            return EX_OK
        cfg, path, canDrop = loadSubmissionConfiguration(options, environ)
        if options.mode == "mailq":
            return mailq(options, path, cfg)
        if options.mode == "newaliases":
            return newaliases(options, cfg, path, say)
        if options.mode == "flush":
            return flush(options, cfg, say)
        if options.mode == "smtp":
            from smx.queue.pickupsettings import submissionAddress

            return relaySMTP(submissionAddress(cfg), stdin, stdout)
        return Submission(options, cfg, canDrop, name, stderr, environ).run(stdin)
    except Failure as e:
        if "-oeq" not in argv:
            say(str(e))
        return e.status
    except KeyboardInterrupt:
        say("interrupted")
        return EX_TEMPFAIL
    except Exception as e:
        say("internal error: %s: %s" % (e.__class__.__name__, e))
        return EX_SOFTWARE


def main(argv: Optional[List[str]] = None) -> None:
    """
    The console script C{smx-sendmail}: the mode follows the name it is
    called by (a link named C{sendmail}, C{mailq} or C{newaliases}).
    """
    if argv is None:
        argv = sys.argv
    sys.exit(run(argv[1:], program=argv[0] if argv else "sendmail"))


__all__ = [
    "run",
    "main",
    "parseArguments",
    "parseNotify",
    "SendmailOptions",
    "Failure",
    "recipientList",
    "qualify",
    "relaySMTP",
]

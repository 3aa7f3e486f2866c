# -*- test-case-name: smx.milter.test.test_protocol -*-
"""
NAME
    smx.milter.macros - the sendmail macros a milter is told at each stage

SYNOPSIS
    from smx.milter.macros import DEFAULT_MACROS, connectMacros, select

DESCRIPTION
    Before each protocol stage the MTA sends macro values (C{SMFIC_MACRO})
    that the milter reads with C{smfi_getsymval}.  smx uses the names
    Postfix documents (MILTER_README):

      C{j}                  the host name (C{hostname})
      C{_}                  the client, C{"name [address]"}
      C{v}                  the MTA's name and version
      C{{daemon_name}}      the name of the listener
      C{{daemon_addr}}, C{{daemon_port}}  its address and port
      C{{if_name}}, C{{if_addr}}  the local interface (name, address)
      C{{client_addr}}, C{{client_port}}  the client's address and port
      C{{client_name}}      the verified client name, or C{unknown}
      C{{client_ptr}}       the name its address resolves to, or C{unknown}
      C{{client_resolve}}   C{OK}, C{FAIL}, C{FORGED} or C{TEMP}
      C{{tls_version}}, C{{cipher}}, C{{cipher_bits}}, C{{cert_subject}},
      C{{cert_issuer}}      TLS, after STARTTLS
      C{i}                  the transaction id (C{ss_ta})
      C{{auth_type}}, C{{auth_authen}}, C{{auth_author}}  AUTH
      C{{mail_addr}}, C{{mail_host}}, C{{mail_mailer}}  the sender
      C{{rcpt_addr}}, C{{rcpt_host}}, C{{rcpt_mailer}}  the recipient (for
                            a rejected recipient: the reply text, its
                            enhanced status code and C{error})

    L{DEFAULT_MACROS} says which names go with which stage (Postfix's
    C{milter_*_macros} defaults, with the client macros added to the
    connect stage).  A milter that sends C{SETSYMLIST} gets, for each
    stage it names, the names it asked for instead.  A macro without a
    value is not sent.

    The caller hands values to the session as they become known (a
    C{dict} per stage); L{connectMacros}, L{tlsMacros}, L{authMacros} and
    L{rejectedRecipientMacros} build the usual ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, Mapping, Optional, Tuple

from smx.milter.codec import (
    SMFIM_CONNECT,
    SMFIM_DATA,
    SMFIM_ENVFROM,
    SMFIM_ENVRCPT,
    SMFIM_EOH,
    SMFIM_EOM,
    SMFIM_HELO,
)

#: the stages that have a macro list, by their C{SMFIM_*} number
STAGES = {
    SMFIM_CONNECT: "connect",
    SMFIM_HELO: "helo",
    SMFIM_ENVFROM: "mail",
    SMFIM_ENVRCPT: "rcpt",
    SMFIM_DATA: "data",
    SMFIM_EOM: "eom",
    SMFIM_EOH: "eoh",
}


@dataclass(frozen=True)
class MacroLists:
    """
    The macro names sent before each stage.
    """

    connect: Tuple[str, ...] = ()
    helo: Tuple[str, ...] = ()
    mail: Tuple[str, ...] = ()
    rcpt: Tuple[str, ...] = ()
    data: Tuple[str, ...] = ()
    eoh: Tuple[str, ...] = ()
    eom: Tuple[str, ...] = ()

    def forStage(self, stage: str) -> Tuple[str, ...]:
        """The names for C{stage} (C{"connect"}, ..., C{"eom"})."""
        names = getattr(self, stage, ())  # type: Tuple[str, ...]
        return names

    def override(self, lists: Iterable[Tuple[int, Tuple[str, ...]]]) -> MacroLists:
        """
        These lists with those of a milter's C{SETSYMLIST} put in their
        place; unknown stage numbers are ignored.
        """
        changes = {}
        for number, names in lists:
            stage = STAGES.get(number)
            if stage is not None:
                changes[stage] = tuple(names)
        return MacroLists(**{**self.__dict__, **changes})


#: the names sent when the milter did not ask for others
DEFAULT_MACROS = MacroLists(
    connect=(
        "j",
        "_",
        "{daemon_name}",
        "{daemon_addr}",
        "{daemon_port}",
        "{if_name}",
        "{if_addr}",
        "{client_addr}",
        "{client_port}",
        "{client_name}",
        "{client_ptr}",
        "{client_resolve}",
        "v",
    ),
    helo=(
        "{tls_version}",
        "{cipher}",
        "{cipher_bits}",
        "{cert_subject}",
        "{cert_issuer}",
    ),
    mail=(
        "i",
        "{auth_type}",
        "{auth_authen}",
        "{auth_author}",
        "{mail_addr}",
        "{mail_host}",
        "{mail_mailer}",
    ),
    rcpt=("i", "{rcpt_addr}", "{rcpt_host}", "{rcpt_mailer}"),
    data=("i",),
    eoh=("i",),
    eom=("i",),
)


def select(
    names: Iterable[str], values: Mapping[str, str]
) -> Tuple[Tuple[str, str], ...]:
    """
    The C{(name, value)} pairs of C{names} that have a value.  A name
    may be written with or without braces (C{{auth_type}} and
    C{auth_type} are the same macro); it is sent as listed.
    """
    pairs = []
    for name in names:
        value = values.get(name)
        if value is None:
            other = name[1:-1] if name.startswith("{") else "{%s}" % (name,)
            value = values.get(other)
        if value is not None:
            pairs.append((name, value))
    return tuple(pairs)


def _set(out: Dict[str, str], name: str, value: Optional[object]) -> None:
    if value is not None:
        out[name] = str(value)


def connectMacros(
    hostname: str,
    clientAddress: str,
    clientPort: Optional[int] = None,
    clientName: Optional[str] = None,
    clientPtr: Optional[str] = None,
    clientResolve: Optional[str] = None,
    daemonName: Optional[str] = None,
    daemonAddress: Optional[str] = None,
    daemonPort: Optional[int] = None,
    version: Optional[str] = None,
) -> Dict[str, str]:
    """
    The values known when a client connects.

    @param clientName: the verified client name, C{None} if unknown.
    """
    out = {"j": hostname, "{client_addr}": clientAddress}  # type: Dict[str, str]
    name = clientName or "unknown"
    out["_"] = "%s [%s]" % (name, clientAddress)
    out["{client_name}"] = name
    _set(out, "{client_port}", clientPort)
    _set(out, "{client_ptr}", clientPtr)
    _set(out, "{client_resolve}", clientResolve)
    _set(out, "{daemon_name}", daemonName)
    _set(out, "{daemon_addr}", daemonAddress)
    _set(out, "{daemon_port}", daemonPort)
    _set(out, "{if_addr}", daemonAddress)
    _set(out, "v", version)
    return out


def tlsMacros(
    version: str,
    cipher: str,
    bits: int,
    subject: Optional[str] = None,
    issuer: Optional[str] = None,
) -> Dict[str, str]:
    """The values known after STARTTLS."""
    out = {
        "{tls_version}": version,
        "{cipher}": cipher,
        "{cipher_bits}": str(bits),
    }  # type: Dict[str, str]
    _set(out, "{cert_subject}", subject)
    _set(out, "{cert_issuer}", issuer)
    return out


def authMacros(
    mechanism: str, user: str, author: Optional[str] = None
) -> Dict[str, str]:
    """The values known after AUTH."""
    out = {"{auth_type}": mechanism, "{auth_authen}": user}  # type: Dict[str, str]
    _set(out, "{auth_author}", author)
    return out


def rejectedRecipientMacros(reply: str, status: str) -> Dict[str, str]:
    """
    The C{{rcpt_*}} values sent with a recipient smx rejected, to a milter
    that asked for them (C{SMFIP_RCPT_REJ}), as Postfix sends them.

    @param reply: the reply given (C{"550 5.1.1 unknown user"}).
    @param status: its enhanced status code (C{"5.1.1"}).
    """
    return {"{rcpt_mailer}": "error", "{rcpt_host}": status, "{rcpt_addr}": reply}

# -*- test-case-name: smx.config.test.test_tlsserveroptions -*-
"""
The options of SMTPS's C{tls} section that smx adds to seed §5.9 item
18 (doc/tls.md, "Server"): the lowest TLS version accepted and more
certificates chosen by the client's server name (SNI, RFC 6066 §3)::

    smtps {
      tls {
        cert_file = "certs/mx.pem"; key_file = "certs/mx.key";
        min_protocol = TLSv1.2;
        certificate submission {
          cert_file = "certs/submit.pem"; key_file = "certs/submit.key";
          server_names = { submit.example.org, *.example.net };
        }
      }
    }

The certificate of C{cert_file} is the default: a client that sends no
server name, or one no C{certificate} section serves, gets it.  The
files are checked by L{smx.config.files} as the default's are.

L{smx.config.options} adds L{serverTLSMembers} to the C{tls}
subsection of C{smtps}.
"""

from __future__ import annotations

import re
from typing import List

from smx.config.commonoptions import C, opt
from smx.config.schema import REQUIRED_NAME, Member, section
from smx.config.values import Enum, ListOf, Path, String, ValueProblem

#: C{min_protocol} values (the names OpenSSL gives the versions)
TLS_VERSION_NAMES = ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def _checkServerName(text: str) -> None:
    """
    A DNS name in A-labels, or C{*.} and one (a wildcard of one label).
    """
    name = text.lower().rstrip(".")
    if name.startswith("*."):
        name = name[2:]
    labels = name.split(".")
    if not name or len(name) > 253 or not all(_LABEL.match(x) for x in labels):
        raise ValueProblem(
            "%r is not a server name (a DNS name in A-labels, or *.domain)" % (text,)
        )


def serverTLSMembers() -> List[Member]:
    """The smx options of SMTPS's C{tls} section."""
    return [
        opt(
            "min_protocol",
            Enum(TLS_VERSION_NAMES),
            "TLSv1.2",
            "smx",
            "the lowest TLS version STARTTLS accepts",
        ),
        section(
            "certificate",
            "smx",
            "a further server certificate, chosen when the client asks for "
            "one of its server_names (SNI); cert_file of tls is the default",
            [
                opt(
                    "cert_file",
                    Path(C),
                    None,
                    "smx",
                    "certificate (chain) in PEM format",
                    required=True,
                ),
                opt(
                    "key_file",
                    Path(C),
                    None,
                    "smx",
                    "private key of cert_file, PEM format",
                    required=True,
                ),
                opt(
                    "server_names",
                    ListOf(
                        String(_checkServerName, "server name", empty=False),
                        typeName="list of server names",
                    ),
                    "{}",
                    "smx",
                    "the names (or *.domain) it is chosen for; empty: the DNS "
                    "names of the certificate (subjectAltName, else CN)",
                ),
            ],
            naming=REQUIRED_NAME,
            multiple=True,
        ),
    ]

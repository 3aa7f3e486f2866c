# -*- test-case-name: smx.tlspolicy.test.test_settings -*-
"""
The options of SMTPC's TLS policy (doc/tls.md, "Client policy"), in the
C{smtpc} section::

    smtpc {
      tls_security_level = may;          # none may encrypt dane dane-only
                                         # fingerprint verify secure
      tls_policy_map = "tls_policy.db";  # next-hop domain -> level
      tls_min_protocol = TLSv1.2;
      tls_ciphers = "HIGH:!aNULL:!MD5:!RC4:!3DES";
      tls { CAcert_file = "ca.pem"; }    # the CAs of verify and secure
    }

L{smx.config.options} adds L{SMTPC_TLS_OPTIONS} to the C{smtpc} section;
L{smx.tlspolicy.settings} reads them.
"""

from __future__ import annotations

from typing import List

from smx.config.commonoptions import C, Q, opt
from smx.config.schema import Member
from smx.config.values import Boolean, Enum, Path, Port, String, Time, ValueProblem

#: the levels of C{tls_security_level} (L{smx.tlspolicy.policy.LEVELS})
CLIENT_LEVELS = (
    "none",
    "may",
    "encrypt",
    "dane",
    "dane-only",
    "fingerprint",
    "verify",
    "secure",
)

#: the protocol versions of C{tls_min_protocol} (OpenSSL's names)
CLIENT_PROTOCOLS = ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")


def _checkDefaultLevel(text: str) -> None:
    if text.lower() == "fingerprint":
        raise ValueProblem(
            "fingerprint needs the fingerprints of a destination: use it in "
            "tls_policy_map entries (fingerprint match=AB:CD:...)"
        )


def _checkCiphers(text: str) -> None:
    from OpenSSL import SSL

    try:
        SSL.Context(SSL.TLS_CLIENT_METHOD).set_cipher_list(text.encode("ascii"))
    except (SSL.Error, UnicodeError):
        raise ValueProblem("%r is not an OpenSSL cipher list OpenSSL accepts" % (text,))


class _Level(Enum):
    def convertText(self, text, token):
        value = Enum.convertText(self, text, token)
        try:
            _checkDefaultLevel(value)
        except ValueProblem as e:
            raise ValueProblem(e.message, token)
        return value


#: the TLS policy options of an C{smtpc} section
SMTPC_TLS_OPTIONS: List[Member] = [
    opt(
        "tls_security_level",
        _Level(CLIENT_LEVELS),
        "may",
        "smx",
        "TLS security level of destinations without a tls_policy_map entry "
        "(Postfix's smtp_tls_security_level; may: STARTTLS when offered)",
    ),
    opt(
        "tls_policy_map",
        Path(C),
        None,
        "smx",
        "hash map (smx createmap) of next-hop domains (seed §5.11.1 lookup "
        "order) to a level and its match= (Postfix's smtp_tls_policy_maps "
        "syntax)",
    ),
    opt(
        "tls_min_protocol",
        Enum(CLIENT_PROTOCOLS),
        "TLSv1.2",
        "smx",
        "lowest TLS version SMTPC negotiates",
    ),
    opt(
        "tls_ciphers",
        String(_checkCiphers, "OpenSSL cipher list", empty=False),
        '"HIGH:!aNULL:!MD5:!RC4:!3DES"',
        "smx",
        "OpenSSL cipher list of SMTPC for TLS 1.2 and older",
    ),
    # MTA-STS (RFC 8461, smx.tlspolicy.mtasts) and TLS reporting
    # (RFC 8460, smx.tlspolicy.tlsrpt, smx tlsrpt); doc/tls.md
    opt(
        "mta_sts",
        Boolean(),
        "yes",
        "smx",
        "look up the MTA-STS policy (RFC 8461) of each recipient domain and "
        "apply it: enforce: verified TLS to an MX the policy lists; "
        "testing: failures only logged and reported",
    ),
    opt(
        "mta_sts_cache",
        Path(Q),
        "mta-sts.json",
        "smx",
        "file of the cached MTA-STS policies (kept across restarts)",
    ),
    opt(
        "mta_sts_timeout",
        Time(minimum=1),
        "30s",
        "smx",
        "how long the HTTPS fetch of an MTA-STS policy may take",
    ),
    opt(
        "mta_sts_port",
        Port(),
        "443",
        "smx",
        "port of the HTTPS servers of MTA-STS policies (RFC 8461: 443; "
        "another for tests only)",
    ),
    opt(
        "tlsrpt",
        Boolean(),
        "yes",
        "smx",
        "count the MTA-STS and DANE sessions per policy domain and day for "
        "TLS reports (RFC 8460, smx tlsrpt)",
    ),
    opt(
        "tlsrpt_directory",
        Path(Q),
        "tlsrpt",
        "smx",
        "directory of the daily files of TLS report counts",
    ),
    opt(
        "tlsrpt_organization",
        String(),
        '""',
        "smx",
        "organization-name of the TLS reports (empty: the hostname)",
    ),
    opt(
        "tlsrpt_contact",
        String(),
        '""',
        "smx",
        "contact-info of the TLS reports (empty: postmaster@ the hostname)",
    ),
]

# -*- test-case-name: smx.tlspolicy.test.test_policymap -*-
"""
NAME
    smx.tlspolicy.policymap - the TLS policy map of SMTPC

SYNOPSIS
    smtpc { tls_policy_map = "tls_policy.db"; }

    $ cat tls_policy
    example.com        verify
    .example.com       secure match=.example.com
    bank.test          fingerprint match=AB:CD:...:EF|12:34:...:56
    partner.test       encrypt
    legacy.test        none
    $ smx createmap -F tls_policy.db < tls_policy

DESCRIPTION
    A Berkeley DB hash map (C{smx createmap}, C{makemap hash}) from a
    next-hop domain to its TLS policy, in Postfix's
    C{smtp_tls_policy_maps} syntax: a level (L{smx.tlspolicy.policy.
    LEVELS}) and attributes.  The next-hop domain is the recipient's
    domain, looked up in the order of seed §5.11.1 (C{a.b.example.com},
    C{.b.example.com}, C{.example.com}, C{.com}; no C{.} entry: the
    default is C{tls_security_level}).

    Attributes: C{match=} the names (C{verify}, C{secure}; separated by
    C{:}) or the SHA-256 fingerprints (C{fingerprint}; separated by
    C{|}, colons within), and C{match=} may be given more than once.
    Postfix's C{protocols=}, C{ciphers=}, C{exclude=}, C{tafile=},
    C{servername=} and C{connection_reuse=} are accepted and ignored
    (C{tls_min_protocol} and C{tls_ciphers} apply to all).

DIAGNOSTICS
    An entry that does not parse, or a map that cannot be read, is a
    temporary failure of its destination (L{PolicyMapError}): its mail
    is deferred, never sent with a weaker policy; the error is logged
    with the map's file and key.  A map file that cannot be opened is a
    warning of C{smx config} and of C{twistd smx} at start
    (L{checkPolicyMaps}).
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

from smx.maps.errors import MapTemporaryError
from smx.maps.lookup import domainKeys
from smx.tlspolicy.policy import LEVELS, TLSPolicy

__all__ = ["PolicyMap", "PolicyMapError", "checkPolicyMaps", "parsePolicy"]

#: Postfix attributes smx accepts without using them
IGNORED_ATTRIBUTES = frozenset(
    ["protocols", "ciphers", "exclude", "tafile", "servername", "connection_reuse"]
)


class PolicyMapError(Exception):
    """
    The policy of a domain cannot be known now (a map that cannot be
    read, an entry that does not parse): its mail waits.
    """


def parsePolicy(text: str, domain: str = "", source: str = "map") -> TLSPolicy:
    """
    Parse one right-hand side (C{verify match=.example.com}).

    @param domain: the domain the entry was found for
        (L{TLSPolicy.policyDomain}).
    @raise ValueError: naming what is wrong.
    """
    words = text.split()
    if not words:
        raise ValueError("empty TLS policy")
    level = words[0].lower()
    if level not in LEVELS:
        raise ValueError(
            "unknown TLS security level %r (one of %s)" % (words[0], ", ".join(LEVELS))
        )
    matches = []  # type: List[str]
    for word in words[1:]:
        name, sep, value = word.partition("=")
        name = name.lower()
        if not sep:
            raise ValueError("%r is not an attribute (name=value)" % (word,))
        if name == "match":
            separator = "|" if level == "fingerprint" else ":"
            matches.extend(v for v in value.split(separator) if v)
        elif name not in IGNORED_ATTRIBUTES:
            raise ValueError("unknown TLS policy attribute %r" % (name,))
    fingerprints = ()  # type: Tuple[str, ...]
    names = ()  # type: Tuple[str, ...]
    if level == "fingerprint":
        fingerprints = tuple(matches)
        if not fingerprints:
            raise ValueError("fingerprint needs match=FINGERPRINT")
    elif level in ("verify", "secure"):
        names = tuple(matches)
    elif matches:
        raise ValueError("match= is only for verify, secure and fingerprint")
    return TLSPolicy(
        level,
        matchNames=names,
        fingerprints=fingerprints,
        source=source,
        policyDomain=domain,
    )


def checkPolicyMaps(configuration: Any) -> None:
    """
    Warn (C{smx config}, C{twistd smx} at start) about the
    C{tls_policy_map} of an C{smtpc} section that cannot be opened as a
    hash map: missing, unreadable, or not a Berkeley DB hash file.  Not
    an error: smx runs, and defers the mail of every destination of that
    section (never sending it under a weaker policy) until the file is
    made (C{smx createmap}) and reopened (C{smx qmgrctl reload},
    SIGUSR1), as it does for a map that breaks while smx runs.
    """
    from smx.maps.hashmap import openHashFile

    for section in configuration.sections("smtpc"):
        path = section["tls_policy_map"]
        if not path:
            continue
        try:
            openHashFile(path).close()
        except MapTemporaryError as e:
            configuration.warn(
                "option 'tls_policy_map' in %s: %s; the mail of every "
                "destination is deferred (4.3.0) until the map is made (smx "
                "createmap) and reopened (smx qmgrctl reload)"
                % (section.describe(), e),
                section.positionOf("tls_policy_map"),
            )


class PolicyMap:
    """
    The C{tls_policy_map} of an C{smtpc} section.

    @ivar path: the map file.
    """

    def __init__(self, path: str, log: Any = None) -> None:
        """
        @param path: a hash map file; a missing or broken one makes every
            lookup fail (L{PolicyMapError}) until L{reopen} succeeds.
        """
        from smx.maps.hashmap import HashMap

        self.path = path
        self.log = log
        self._map = HashMap("tls_policy_map", path, log)

    def find(self, domain: str) -> Optional[TLSPolicy]:
        """
        The policy of the next-hop C{domain} (seed §5.11.1 order).

        @return: the L{TLSPolicy} of the first entry found (source
            C{map}), or C{None}.
        @raise PolicyMapError: if the map cannot be read or the entry
            does not parse.
        """
        domain = domain.lower().rstrip(".")
        for key in domainKeys(domain):
            try:
                value = self._map.get(key)
            except MapTemporaryError as e:
                raise PolicyMapError("tls_policy_map %s" % (e,))
            if value is None:
                continue
            try:
                return parsePolicy(value, domain)
            except ValueError as e:
                if self.log is not None:
                    self.log.error(
                        "PolicyMap.find", map=self.path, key=key, error=str(e)
                    )
                raise PolicyMapError(
                    "tls_policy_map %s: bad entry %s: %s" % (self.path, key, e)
                )
        return None

    def reopen(self) -> None:
        """Open the file again (SIGUSR1)."""
        self._map.reopen()

    def close(self) -> None:
        self._map.close()

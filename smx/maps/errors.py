# -*- test-case-name: smx.maps.test.test_integration_resolver -*-
"""
The errors of the maps and the address resolver.

A map that cannot answer I{now} raises L{MapTemporaryError}: every user of
a map turns that into a temporary (4xx) result, never into "not found".
A map or map file that is wrong in a way only its owner can fix (a
mailertable line that does not parse, an unknown map type) raises
L{MapError}, whose text names the file and line.
"""


class MapTemporaryError(Exception):
    """
    A map cannot answer now (file missing or corrupt, socket map down or
    slow, DNS timeout).  The lookup should be retried later.
    """


class MapError(Exception):
    """
    A permanent problem with a map or its declaration: the text is one line
    that names the file (and line) at fault.
    """


class DNSTemporaryError(MapTemporaryError):
    """
    A DNS lookup failed temporarily (timeout, SERVFAIL, garbage answer).
    """


class DNSPermanentError(Exception):
    """
    A DNS name does not exist (NXDOMAIN) or has no record of the type asked
    for.
    """

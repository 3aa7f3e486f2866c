# -*- test-case-name: smx.test -*-
"""
smx: a sendmail X message transfer agent written in Python on Twisted.

The components of the seed README (QMGR, SMTPS, SMTPC, SMAR, MCP, pmilter)
are defined by the zope Interfaces in L{smx.interfaces}; see
C{doc/architecture.md} for where each one lives.
"""

__version__ = "0.1.0"

#: The version string used in the Received: header and the greeting
#: (seed App. C.3: SM-X-VERSION).
versionString = "smx " + __version__

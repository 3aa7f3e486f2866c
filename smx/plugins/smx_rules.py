# -*- test-case-name: smx.pmilter.test.test_plugins -*-
"""
The rules pmilter (like milter-regex) as a Twisted plugin
(L{smx.pmilter.rules}).
"""

from smx.pmilter.rules import Rules

rules = Rules()

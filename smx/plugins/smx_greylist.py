# -*- test-case-name: smx.pmilter.test.test_plugins -*-
"""
The greylisting pmilter as a Twisted plugin (L{smx.pmilter.greylist}).
"""

from smx.pmilter.greylist import Greylist

greylist = Greylist()

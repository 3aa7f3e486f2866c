# -*- test-case-name: smx.pmilter.test.test_plugins -*-
"""
smx.plugins - Twisted plugins of smx: the policy milters it ships

Like C{twisted.plugins}, this package is searched by
L{twisted.plugin.getPlugins} (L{smx.pmilter.plugins.findPolicyMilters}):
each module holds objects that provide L{twisted.plugin.IPlugin} and
L{smx.interfaces.IPolicyMilter}.  Any other directory C{smx/plugins/} on
C{sys.path} is part of it too (without an C{__init__.py}: drop a module
there to add a pmilter).  Twisted keeps its C{dropin.cache} here; it is
not part of the source.
"""

from twisted.plugin import pluginPackagePaths

__path__.extend(pluginPackagePaths(__name__))  # type: ignore[name-defined]
__all__ = []  # type: list

# -*- test-case-name: smx.pmilter.test.test_plugins -*-
"""
NAME
    smx.pmilter.plugins - finding pmilters and building the host of an
    smtps section

SYNOPSIS
    found = findPolicyMilters()                 # {name: pmilter}
    pmilter = lookupPolicyMilter("greylist")
    host = hostFromConfiguration(cfg.section("smtps"), reactor, log, hostname)
    print(describePolicyMilters(cfg))          # for smx config -VVVVV

DESCRIPTION
    A pmilter is installed as a Twisted plugin: a module-level object that
    provides L{twisted.plugin.IPlugin} and L{smx.interfaces.IPolicyMilter},
    in a module of the package C{smx.plugins} (smx's own, and any
    C{smx/plugins/} directory on C{sys.path}) or of C{twisted.plugins}.
    L{findPolicyMilters} asks L{twisted.plugin.getPlugins} for them.

    L{hostFromConfiguration} builds what SMTPS uses from the C{pmilter}
    subsection of an C{smtps} section (seed §5.9)::

        pmilter {
            plugins = { greylist, rules };   # run inside SMTPS, in order
            socket = pmilter.sock;           # then those of smx pmilter-server
            timeout = 5s;                    # each call
            on_failure = tempfail;           # or accept
            greylist { delay = 10m; }        # the settings of a plugin
        }

    A plugin's settings are its subsection, given to it as
    C{server.options} with every default filled in; a plugin the option
    table does not know gets an empty mapping.

DIAGNOSTICS
    L{UnknownPolicyMilter} names the plugin that is not installed and the
    ones that are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Union

from smx.interfaces import IPolicyMilter, IPolicyMilterHost
from smx.log import Logger
from smx.pmilter.host import HostChain, PolicyMilterHost, pmilterName
from smx.pmilter.remote import RemotePolicyMilterHost

if TYPE_CHECKING:  # pragma: no cover
    from smx.config.model import Configuration, Section


class UnknownPolicyMilter(LookupError):
    """
    A pmilter plugin that is not installed.
    """


def findPolicyMilters() -> Dict[str, IPolicyMilter]:
    """
    Every pmilter installed as a Twisted plugin, by name (the first one
    found for a name wins: C{smx.plugins} before C{twisted.plugins}).
    """
    from twisted.plugin import getPlugins

    import smx.plugins

    import twisted.plugins

    found = {}  # type: Dict[str, IPolicyMilter]
    for package in (smx.plugins, twisted.plugins):
        for plugin in getPlugins(IPolicyMilter, package):
            found.setdefault(pmilterName(plugin), plugin)
    return found


def lookupPolicyMilter(
    name: str, found: Optional[Mapping[str, IPolicyMilter]] = None
) -> IPolicyMilter:
    """
    The installed pmilter called C{name} (or with C{name} among its
    C{aliases}).

    @raise UnknownPolicyMilter: there is none.
    """
    if found is None:
        found = findPolicyMilters()
    if name in found:
        return found[name]
    for plugin in found.values():
        if name in getattr(plugin, "aliases", ()):
            return plugin
    raise UnknownPolicyMilter(
        "no pmilter plugin called %r is installed (found: %s)"
        % (name, ", ".join(sorted(found)) or "none")
    )


def pluginOptions(pmilterSection: Section, name: str) -> Dict[str, Any]:
    """
    The settings of the pmilter C{name}: its subsection of C{pmilter}
    with the defaults, or C{{}} when the option table has none for it.
    """
    try:
        sub = pmilterSection.section(name)
    except KeyError:
        return {}
    return {o.name: sub[o.name] for o in sub.spec.options if o.aliasOf is None}


def hostFromConfiguration(
    smtpsSection: Section,
    reactor: Any,
    log: Optional[Logger],
    hostname: str,
    found: Optional[Mapping[str, IPolicyMilter]] = None,
) -> Optional[IPolicyMilterHost]:
    """
    What SMTPS calls for the pmilters of one smtps section.

    @param smtpsSection: the C{smtps} section.
    @param hostname: the SMTP server's name (C{PMM_SRVHOSTNAME}).
    @param found: the installed pmilters (default: L{findPolicyMilters}).
    @return: a L{PolicyMilterHost} for C{plugins}, a
        L{RemotePolicyMilterHost} for C{socket}, a L{HostChain} of both,
        or C{None} when the section enables no pmilter.  Start it as a
        service.
    @raise smx.config.ConfigError: a plugin that is not installed, at
        the line of C{plugins}.
    """
    section = smtpsSection.section("pmilter")
    names = section["plugins"] or []
    socket = section["socket"]
    hosts = []  # type: List[Union[PolicyMilterHost, RemotePolicyMilterHost]]
    if names:
        if found is None:
            found = findPolicyMilters()
        pmilters = []
        options = {}
        for name in names:
            try:
                plugin = lookupPolicyMilter(name, found)
            except UnknownPolicyMilter as e:
                raise section.error(str(e), "plugins")
            pmilters.append(plugin)
            options[pmilterName(plugin)] = pluginOptions(section, pmilterName(plugin))
        hosts.append(
            PolicyMilterHost(
                pmilters,
                reactor,
                section["timeout"],
                section["on_failure"],
                hostname,
                log,
                options,
            )
        )
    if socket:
        hosts.append(
            RemotePolicyMilterHost(
                reactor,
                socket,
                section["timeout"],
                section["on_failure"],
                hostname,
                log,
            )
        )
    if not hosts:
        return None
    if len(hosts) == 1:
        return hosts[0]
    return HostChain(hosts)


def describePolicyMilters(
    configuration: Configuration, found: Optional[Mapping[str, IPolicyMilter]] = None
) -> str:
    """
    The installed pmilters and those each smtps section enables, as
    comment lines for C{smx config -VVVVV}.
    """
    if found is None:
        found = findPolicyMilters()
    lines = ["# pmilter plugins installed (doc/pmilter.md):"]
    for name in sorted(found):
        plugin = found[name]
        lines.append("#   %-12s %s" % (name, type(plugin).__module__))
    if not found:
        lines.append("#   (none)")
    for smtps in configuration.sections("smtps") or [configuration.section("smtps")]:
        section = smtps.section("pmilter")
        enabled = []
        for name in section["plugins"] or []:
            try:
                enabled.append(pmilterName(lookupPolicyMilter(name, found)))
            except UnknownPolicyMilter:
                enabled.append("%s (NOT INSTALLED)" % (name,))
        if section["socket"]:
            enabled.append("socket %s" % (section["socket"],))
        lines.append(
            "# %s: pmilters %s"
            % (smtps.title(), ", ".join(enabled) if enabled else "none")
        )
    return "\n".join(lines) + "\n"

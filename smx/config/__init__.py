# -*- test-case-name: smx.config.test -*-
"""
The smx.conf grammar (seed §5.1) and the one typed table of every option
(seed §5.2-§5.10).

API used by every component (the contract; see L{smx.config.model})::

    from smx.config import loadConfiguration, defaultConfiguration, ConfigError

    cfg = loadConfiguration("/etc/smx/smx.conf")   # raises ConfigError
    cfg.path                # absolute path of the file (None for defaults)
    cfg.configDirectory     # directory of the file: base of §5.6 case 1
    cfg.queueDirectory      # the execution directory: base of §5.6 case 2
    g = cfg.globals         # the top-level Section (hostname, CDB_base_directory, ...)
    s = cfg.section("smtps")          # the unnamed smtps section (defaults if absent)
    cfg.section("smtps", "MSA")       # a named one
    cfg.sections("smtps")             # every smtps section, in file order
    s["io_timeout"]                   # typed value, default applied; names are
                                      # case-insensitive
    s.isSet("io_timeout")             # was it written in the file?
    s.section("tls")["cert_file"]     # subsections
    cfg.section("smar").sections("dnsbl")
    cfg.section("smar").sections("map")   # map NAME { ... } declarations, .name

Typed values: times are C{float} seconds, sizes C{int} bytes (options whose
unit is KB or µs in the seed are converted, so C{max_message_size} is in
bytes and C{max_commit_delay} in seconds), counts C{int}, flags a
C{frozenset} of lower-case names, lists a C{list} of C{str}, paths are
resolved to absolute paths as §5.6 says.  C{str(ConfigError)} is one line:
C{"smx.conf:12:7: expected '=' or '{' after 'qmgr'"}.

Also::

    configurationFromText(text, filename="smx.conf", queueDirectory=None,
                          configDirectory=None)   # parseConfiguration too
    defaultConfiguration(queueDirectory=None, configDirectory=None)
    cfg.warnings            # "smx.conf:3:5: warning: ..." lines
    cfg.sections()          # every top-level section, in file order
    s.error("cannot open the key", "key_file")   # a ConfigError at its line
    s.where("key_file")     # "smx.conf:12:7"
    cfg.section("qmgr").override("smtpc_max_connections", 50)  # -C 50
    splitAddress("[::1]:25", 8000)                # daemon_address, nameserver
    renderConfiguration(cfg, verbosity)           # smx config -V...
    renderReference()                             # doc/configuration.md

The option table is L{smx.config.options}; C{doc/configuration.md}
documents every option, its type, unit, default and bounds.
"""

from smx.config.build import (
    configurationFromText,
    defaultConfiguration,
    loadConfiguration,
    parseConfiguration,
)
from smx.config.errors import ConfigError, SectionNotFound
from smx.config.model import Configuration, Section
from smx.config.reference import renderReference
from smx.config.render import renderConfiguration
from smx.config.values import splitAddress

__all__ = [
    "ConfigError",
    "Configuration",
    "Section",
    "SectionNotFound",
    "configurationFromText",
    "defaultConfiguration",
    "loadConfiguration",
    "parseConfiguration",
    "renderConfiguration",
    "renderReference",
    "splitAddress",
]

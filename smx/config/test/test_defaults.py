# -*- test-case-name: smx.config.test.test_defaults -*-
"""
One source of defaults: the option table.  Tests that the settings
objects of the components (L{smx.config.settings}) take every value from
the table, and that no constructor of a component has an option default
of its own.
"""

import dataclasses
import inspect
import os

from twisted.trial.unittest import SynchronousTestCase

from smx.config import defaultConfiguration
from smx.config.settings import fieldNames, optionSection, tableOption
from smx.mail import connectioncache, lmtpd, policy, server, smtpc, smtps
from smx.mail.deliverysettings import DeliverySettings
from smx.mail.listener import ServerSettings
from smx.maps import access, aliases, dns, resolver, routing
from smx.maps.settings import ResolverSettings
from smx.queue import active, bounce, bounceschedule, connections, defedb
from smx.queue import destinations, diskspace, ibdb, qmgr, retry, scheduler
from smx.queue import pickup
from smx.queue.pickupsettings import PickupSettings
from smx.queue.settings import QueueSettings

#: every settings class: (class, how to build it from a configuration,
#: the section its OPTIONS are relative to)
SETTINGS = [
    (
        QueueSettings,
        QueueSettings.fromConfiguration,
        lambda cfg: cfg.section("qmgr"),
    ),
    (
        ServerSettings,
        lambda cfg: ServerSettings.fromSection(cfg.section("smtps")),
        lambda cfg: cfg.section("smtps"),
    ),
    (
        lmtpd.LMTPServerSettings,
        lambda cfg: lmtpd.LMTPServerSettings.fromSection(cfg.section("lmtpd")),
        lambda cfg: cfg.section("lmtpd"),
    ),
    (
        DeliverySettings,
        lambda cfg: DeliverySettings.fromSection(cfg.section("smtpc")),
        lambda cfg: cfg.section("smtpc"),
    ),
    (
        ResolverSettings,
        ResolverSettings.fromConfiguration,
        lambda cfg: cfg.section("smar"),
    ),
    (
        PickupSettings,
        PickupSettings.fromConfiguration,
        lambda cfg: cfg.section("pickup"),
    ),
]

#: every constructor that takes options: the settings class whose values
#: it takes, and the parameters that may have a default because they are
#: no option (plumbing: reactor, logger, ...)
CONSTRUCTORS = [
    (
        qmgr.QueueManager,
        QueueSettings,
        {"logger", "processId", "statvfs", "threadPool"},
    ),
    (ibdb.IncomingBackupLog, QueueSettings, {"sync"}),
    (defedb.DeferredEnvelopeDB, QueueSettings, {"report", "statvfs"}),
    (scheduler.Scheduler, QueueSettings, set()),
    (active.ActiveQueue, QueueSettings, set()),
    (destinations.DestinationQueues, QueueSettings, set()),
    (retry.RetrySchedule, QueueSettings, set()),
    (bounceschedule.BounceSchedule, QueueSettings, set()),
    (bounce.Bouncer, QueueSettings, set()),
    (connections.SlowStart, QueueSettings, {"conf", "cacheTimeout"}),
    (connections.IncomingControl, QueueSettings, {"conf"}),
    (diskspace.DiskSpaceMonitor, QueueSettings, {"statvfs"}),
    (smtps.SMTPServerFactory, ServerSettings, {"reactor", "log", "ids"}),
    (
        server.ServerConnection,
        ServerSettings,
        {"tlsAvailable", "authMechanisms", "greeting", "lmtp"},
    ),
    (
        lmtpd.LMTPDeliveryService,
        lmtpd.LMTPServerSettings,
        {"reactor", "logger", "mode"},
    ),
    (lmtpd.LMTPFactory, lmtpd.LMTPServerSettings, {"logger", "clock"}),
    (policy.SessionPolicy, ServerSettings, set()),
    (lmtpd.LMTPServerProtocol, lmtpd.LMTPServerSettings, set()),
    (
        smtpc.DeliveryAgent,
        DeliverySettings,
        {"reactor", "logger", "ids", "cacheTimeout", "policies"},
    ),
    (connectioncache.ConnectionCache, DeliverySettings, set()),
    (
        resolver.AddressResolver,
        ResolverSettings,
        {"access", "aliases", "localUserMap", "dns", "maps", "log", "rng", "cacheSize"},
    ),
    (dns.DNSResolver, ResolverSettings, {"log", "resolvConf"}),
    (access.AccessMap, ResolverSettings, {"log"}),
    (aliases.AliasExpander, ResolverSettings, {"log"}),
    (routing.Router, ResolverSettings, {"rng", "log"}),
    (pickup.PickupService, PickupSettings, {"log", "reader", "runInThread"}),
    (pickup.MaildropReader, PickupSettings, {"submit"}),
]


class SettingsClassTests(SynchronousTestCase):
    """
    Every settings class is frozen, has no defaults, and maps each field
    to the options it comes from.
    """

    def test_frozen(self):
        """
        The settings are frozen dataclasses with slots.
        """
        for cls, _, _ in SETTINGS:
            self.assertTrue(dataclasses.is_dataclass(cls), cls)
            self.assertTrue(cls.__dataclass_params__.frozen, cls)
            self.assertTrue(hasattr(cls, "__slots__"), cls)

    def test_noFieldDefaults(self):
        """
        No field of a settings class has a default of its own.
        """
        for cls, _, _ in SETTINGS:
            for field in dataclasses.fields(cls):
                self.assertIs(
                    field.default,
                    dataclasses.MISSING,
                    "%s.%s has a default" % (cls.__name__, field.name),
                )
                self.assertIs(
                    field.default_factory,
                    dataclasses.MISSING,
                    "%s.%s has a default" % (cls.__name__, field.name),
                )

    def test_everyFieldMapped(self):
        """
        Every field is in C{OPTIONS} (an option's value as the table gives
        it) or in C{DERIVED} (computed), not both.
        """
        for cls, _, _ in SETTINGS:
            fields = set(fieldNames(cls))
            self.assertEqual(set(cls.OPTIONS) & set(cls.DERIVED), set(), cls)
            self.assertEqual(set(cls.OPTIONS) | set(cls.DERIVED), fields, cls)

    def test_optionsExist(self):
        """
        Every option named in C{OPTIONS} and C{DERIVED} is in the table.
        """
        cfg = defaultConfiguration(queueDirectory=os.path.abspath(self.mktemp()))
        for cls, _, sectionOf in SETTINGS:
            section = sectionOf(cfg)
            paths = list(cls.OPTIONS.values())
            for options in cls.DERIVED.values():
                paths.extend(options)
            for path in paths:
                try:
                    tableOption(section, path)
                except KeyError as e:
                    self.fail("%s: %s" % (cls.__name__, e))

    def test_tableDefaults(self):
        """
        Built from an empty configuration, every field in C{OPTIONS} is
        the default of its option in the table.
        """
        directory = os.path.abspath(self.mktemp())
        cfg = defaultConfiguration(queueDirectory=directory)
        for cls, build, sectionOf in SETTINGS:
            settings = build(cfg)
            section = sectionOf(cfg)
            for field, path in cls.OPTIONS.items():
                option = tableOption(section, path)
                holder, _ = optionSection(section, path)
                expected = holder.configuration.resolve(option, option.defaultValue())
                self.assertEqual(
                    getattr(settings, field),
                    expected,
                    "%s.%s is not the default of %s (%s)"
                    % (cls.__name__, field, path, option.default),
                )


class ConstructorTests(SynchronousTestCase):
    """
    The constructors of the components and their parts have no option
    defaults: only plumbing (a reactor, a logger, a C{statvfs}) may have
    one.
    """

    def test_noOptionDefaults(self):
        """
        Every parameter with a default is plumbing.
        """
        for constructor, _, plumbing in CONSTRUCTORS:
            signature = inspect.signature(constructor)
            defaulted = {
                name
                for name, p in signature.parameters.items()
                if p.default is not inspect.Parameter.empty
            }
            self.assertEqual(
                defaulted - plumbing,
                set(),
                "%s has defaults of its own" % (constructor.__qualname__,),
            )

    def test_settingsFieldsWithoutDefaults(self):
        """
        No constructor has a default for a parameter named as a field of
        the settings it takes its values from.
        """
        for constructor, cls, _ in CONSTRUCTORS:
            fields = set(fieldNames(cls))
            for name, p in inspect.signature(constructor).parameters.items():
                if name in fields:
                    self.assertIs(
                        p.default,
                        inspect.Parameter.empty,
                        "%s(%s=...)" % (constructor.__qualname__, name),
                    )

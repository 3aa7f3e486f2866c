# -*- test-case-name: smx.split.test.test_service -*-
"""
Tests for L{smx.split.service}: each component of split mode is built
from the default configuration with its proxies and socket servers.
"""

from __future__ import annotations

import os

from twisted.internet.testing import MemoryReactorClock
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from smx.components import ComponentError
from smx.config import loadConfiguration
from smx.interfaces import IAddressResolver, IDeliveryAgent, IQueueManager
from smx.scripts.defaultconfig import writeDefaultConfiguration
from smx.split.service import makeComponentService


def defaultConfiguration(directory: str) -> object:
    """
    The embedded default configuration, written into C{directory}, loaded
    and reconciled as C{twistd smx} does.
    """
    os.makedirs(directory, exist_ok=True)
    path = writeDefaultConfiguration(directory)
    cfg = loadConfiguration(path, queueDirectory=directory)
    cfg.reconcile()
    return cfg


class MakeComponentServiceTests(unittest.TestCase):
    """
    L{makeComponentService} builds one component and the proxies of the
    components it calls.
    """

    def setUp(self) -> None:
        self.cfg = defaultConfiguration(os.path.abspath(self.mktemp()))
        self.reactor = MemoryReactorClock()

    def build(self, name: str, **kw: object) -> object:
        return makeComponentService(
            self.cfg, name, reactor=self.reactor, installSignals=False, **kw
        )

    def test_smtps(self) -> None:
        """
        SMTPS calls QMGR and SMAR through proxies providing their
        Interfaces.
        """
        root = self.build("smtps")
        c = root.components  # type: ignore[attr-defined]
        self.assertTrue(verifyObject(IQueueManager, c["qmgrProxy"]))
        self.assertTrue(verifyObject(IAddressResolver, c["resolverProxy"]))
        self.assertIs(c["smtps"][0].factory.queueManager, c["qmgrProxy"])

    def test_qmgr(self) -> None:
        """
        QMGR calls SMAR through a proxy and SMTPC through the agents that
        connect to its socket.
        """
        root = self.build("qmgr")
        c = root.components  # type: ignore[attr-defined]
        self.assertTrue(verifyObject(IDeliveryAgent, c["deliveryAgent"]))
        self.assertTrue(verifyObject(IAddressResolver, c["qmgr"].resolver))
        self.assertIs(c["qmgr"].deliveryAgent, c["deliveryAgent"])

    def test_smtpcAndSmar(self) -> None:
        """
        SMTPC and SMAR are built with their in-process objects.
        """
        self.assertTrue(
            verifyObject(
                IDeliveryAgent,
                self.build("smtpc").components["deliveryAgent"],  # type: ignore[attr-defined]
            )
        )
        self.assertTrue(
            verifyObject(
                IAddressResolver,
                self.build("smar").components["resolver"],  # type: ignore[attr-defined]
            )
        )

    def test_unknown(self) -> None:
        """
        An unknown component, or a listening socket for a component other
        than smtps, is a L{ComponentError}.
        """
        self.assertRaises(ComponentError, self.build, "mcp")
        self.assertRaises(ComponentError, self.build, "qmgr", listeningFd=3)

    def test_instanceId(self) -> None:
        """
        The instance id is added to the section's id in SMTPS's
        transaction ids, so that two SMTPS processes never make the same.
        """
        ids = [
            self.build("smtps", instanceId=i).components["smtps"][0].factory.ids.next()  # type: ignore[attr-defined]
            for i in (0, 1)
        ]
        self.assertEqual([i[-2:] for i in ids], ["00", "01"])


class SMTPSComponentTests(unittest.TestCase):
    """
    The SMTPS component, in the test's reactor, with QMGR and SMAR fakes
    behind their real sockets.
    """

    def setUp(self) -> None:
        from twisted.internet import reactor

        from smx.maps.testing import FakeAddressResolver
        from smx.queue.testing import FakeQueueManager
        from smx.split.queue import queueManagerFactory
        from smx.split.resolver import resolverFactory
        from smx.split.testing import serve

        self.cfg = defaultConfiguration(os.path.abspath(self.mktemp()))
        g = self.cfg.globals  # type: ignore[attr-defined]
        self.qmgr = FakeQueueManager()
        serve(self, queueManagerFactory(self.qmgr), g["SMTPS_socket"])
        serve(self, resolverFactory(FakeAddressResolver()), g["SMAR_socket"])
        self.reactor = reactor

    def test_adoptListeningSocket(self) -> None:
        """
        With C{listeningFd}, SMTPS serves the socket it was given (as the
        MCP passes it) instead of binding its own address, and asks QMGR
        over C{SMTPS_socket} whether a client may connect.
        """
        import socket

        from twisted.internet import defer
        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
        from twisted.protocols.basic import LineReceiver

        listening = socket.socket()
        listening.bind(("127.0.0.1", 0))
        listening.listen(5)
        self.addCleanup(listening.close)
        port = listening.getsockname()[1]
        root = makeComponentService(
            self.cfg,
            "smtps",
            instanceId=3,
            listeningFd=listening.fileno(),
            reactor=self.reactor,
            installSignals=False,
        )
        root.startService()
        self.addCleanup(root.stopService)
        self.assertEqual(
            [s.name for s in root if s.name.startswith("smtps")],  # type: ignore[attr-defined]
            ["smtps fd %d" % (listening.fileno(),)],
        )
        greeting = defer.Deferred()  # type: defer.Deferred

        class Client(LineReceiver):
            def lineReceived(self, line: bytes) -> None:
                if not greeting.called:
                    greeting.callback(line)
                    self.transport.loseConnection()

        d = connectProtocol(
            TCP4ClientEndpoint(self.reactor, "127.0.0.1", port), Client()
        )
        d.addCallback(lambda _: greeting)

        def check(line: bytes) -> None:
            self.assertTrue(line.startswith(b"220 "), line)
            [session] = self.qmgr.sessions
            # the instance id is in the session id (App. C.1)
            self.assertEqual(session[-2:], "03")
            # its connections send at once, as embedded smx's (smx.net)
            from smx import net

            [listener] = [s for s in root if s.name.startswith("smtps")]  # type: ignore[attr-defined]
            self.assertIs(listener.port.transport, net.Server)

        return d.addCallback(check)

# -*- test-case-name: smx.test.test_interfaces -*-
"""
Every fake in C{smx/<pkg>/testing.py} provides its Interface.
"""

from twisted.trial import unittest
from zope.interface.verify import verifyObject

from smx import interfaces
from smx.mail.testing import FakeDeliveryAgent
from smx.maps.testing import DictMap, FakeAddressResolver
from smx.mcp.testing import FakeProcessSupervisor
from smx.pmilter.testing import FakePolicyMilter
from smx.queue.testing import FakeQueueManager, MemoryContentStore


class FakesProvideInterfacesTests(unittest.TestCase):
    """
    The fakes are checked with C{verifyObject} like every provider.
    """

    def test_contentStore(self):
        """L{MemoryContentStore} provides L{IContentStore}."""
        self.assertTrue(verifyObject(interfaces.IContentStore, MemoryContentStore()))

    def test_queueManager(self):
        """L{FakeQueueManager} provides L{IQueueManager}."""
        self.assertTrue(verifyObject(interfaces.IQueueManager, FakeQueueManager()))

    def test_map(self):
        """L{DictMap} provides L{IMap}."""
        self.assertTrue(verifyObject(interfaces.IMap, DictMap("m")))

    def test_addressResolver(self):
        """L{FakeAddressResolver} provides L{IAddressResolver}."""
        self.assertTrue(
            verifyObject(interfaces.IAddressResolver, FakeAddressResolver())
        )

    def test_deliveryAgent(self):
        """L{FakeDeliveryAgent} provides L{IDeliveryAgent}."""
        self.assertTrue(verifyObject(interfaces.IDeliveryAgent, FakeDeliveryAgent()))

    def test_policyMilter(self):
        """L{FakePolicyMilter} provides L{IPolicyMilter}."""
        self.assertTrue(verifyObject(interfaces.IPolicyMilter, FakePolicyMilter()))

    def test_processSupervisor(self):
        """L{FakeProcessSupervisor} provides L{IProcessSupervisor}."""
        self.assertTrue(
            verifyObject(interfaces.IProcessSupervisor, FakeProcessSupervisor(["a"]))
        )


class FakeBehaviourTests(unittest.TestCase):
    """
    The fakes behave as their Interface documents, so tests built on them
    mean something.
    """

    def test_contentStoreRoundTrip(self):
        """Committed content can be read back and removed."""
        store = MemoryContentStore()
        w = store.createWriter("S1")
        w.write(b"a")
        w.write(b"b")
        self.successResultOf(w.commit())
        self.assertEqual(store.open("S1").read(), b"ab")
        store.remove("S1")
        self.assertRaises(KeyError, store.open, "S1")

    def test_mapTemporaryFailure(self):
        """A map that cannot answer fails, it does not say "not found"."""
        m = DictMap("m", {"k": "v"})
        self.assertEqual(self.successResultOf(m.lookup("k")), "v")
        self.assertIsNone(self.successResultOf(m.lookup("x")))
        m.temporaryFailure = True
        self.failureResultOf(m.lookup("k"))

    def test_supervisorRestartsDependencies(self):
        """Restarting a service restarts its dependencies too."""
        s = FakeProcessSupervisor(["qmgr", "smtps"], {"qmgr": ["smtps"]})
        self.successResultOf(s.restart("qmgr"))
        procs = {p["name"]: p for p in self.successResultOf(s.processes())}
        self.assertEqual(procs["smtps"]["restarts"], 1)
        self.failureResultOf(s.restart("nope"), KeyError)

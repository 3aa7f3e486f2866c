# -*- test-case-name: smx.maps.test.test_integration_resolver -*-
"""
Integration tests of SMAR: L{AddressResolver.fromConfiguration} with a
real smx.conf text, Berkeley DB maps made by createmap, a mailertable
file, the loopback DNS server of L{smx.maps.test.dnsserver} and a real
socket-map server on a Unix socket.
"""

import os

from twisted.internet import defer, protocol, reactor
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from smx.config import parseConfiguration
from smx.interfaces import IAddressResolver, IMap
from smx.log import Logger, MemorySink
from smx.maps.createmap import createMap
from smx.maps.errors import MapError, MapTemporaryError
from smx.maps.resolver import AddressResolver
from smx.maps.socketmap import SocketMap, netstring, parseNetstrings
from smx.maps.test.dnsserver import startDNSServer
from smx.unixsocket import socketName

ZONE = {
    "remote.test": [("MX", 10, "mx1.remote.test"), ("MX", 20, "mx2.remote.test")],
    "mx1.remote.test": [("A", "127.0.0.2")],
    "mx2.remote.test": [("A", "127.0.0.3")],
    "plain.test": [("A", "127.0.0.4")],
    "bad.test": [("MX", 10, "mx.bad.test")],
    "mx.bad.test": [("A", "127.0.0.1")],
    "smart.host": [("A", "127.0.0.5")],
    "4.3.2.1.dnsbl.tld": [("A", "127.0.0.2")],
}

MT = """\
localhost          lmtp:
my.dom             lmtp:
spam.filter.domain 2525^esmtp:[127.0.0.1]
another.domain     esmtp:remote.test
.tld               esmtp:[127.0.0.9]
lmtp.host          lmtp:[127.0.0.73]
lmtp.port          2724^lmtp:[127.0.0.73]
"""


class SocketMapServer(protocol.Protocol):
    """
    A sendmail socket-map server answering from C{factory.table}; the key
    C{hang} is never answered.
    """

    buffer = b""

    def dataReceived(self, data):
        self.buffer += data
        requests, self.buffer = parseNetstrings(self.buffer)
        for r in requests:
            name, _, key = r.decode().partition(" ")
            if key == "hang":
                continue
            if key == "temp":
                self.transport.write(netstring(b"TEMP busy"))
            elif key in self.factory.table:
                self.transport.write(
                    netstring(b"OK " + self.factory.table[key].encode())
                )
            else:
                self.transport.write(netstring(b"NOTFOUND"))


class ResolverIntegrationTests(unittest.TestCase):
    """
    SMAR built from smx.conf.
    """

    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.port, stop = startDNSServer(ZONE)
        self.addCleanup(stop)
        j = lambda n: os.path.join(self.dir, n)
        with open(j("mt"), "w") as f:
            f.write(MT)
        createMap(
            j("access.db"),
            [
                "mxbadip:127.0.0.1 error:551 5.7.1 Bad IP address 127.0.0.1 in MX/A list\n",
                "dnsbltld:127.0.0.2 error:550 5.7.1 listed at dnsbl.tld as spam source\n",
                "to:@other.domain error:451 4.3.3 Try main MX server\n",
            ],
        )
        createMap(
            j("aliases.db"),
            [
                "postmaster: alice\n",
                "alice: local:\n",
                "list: <bob@far.test> alice\n",
                "owner-list: alice\n",
            ],
        )

    def resolver(self, extra=""):
        text = """
hostname = my.dom;
smar {
  nameserver = { "127.0.0.1:%d" };
  DNS_timeout = 2s;
  dnsbl { domain = dnsbl.tld; tag = dnsbltld; }
  mailertable { name = "%s/mt"; }
  access { name = "%s/access.db"; }
  aliases { name = "%s/aliases.db"; }
  %s
}
""" % (self.port, self.dir, self.dir, self.dir, extra)
        cfg = parseConfiguration(text, filename=os.path.join(self.dir, "smx.conf"))
        r = AddressResolver.fromConfiguration(
            cfg, reactor, log=Logger("smar", sink=MemorySink())
        )
        self.addCleanup(r.close)
        return r

    def test_interface(self):
        """
        The resolver provides L{IAddressResolver}; its maps L{IMap}.
        """
        r = self.resolver()
        verifyObject(IAddressResolver, r)
        for m in r.maps:
            verifyObject(IMap, m)

    @defer.inlineCallbacks
    def test_routes(self):
        """
        Mailertable routes: local lmtp, literal with port, MX by preference,
        A fallback without MX, C{.tld} entries.
        """
        r = self.resolver()
        out = yield r.resolveRecipient("alice@my.dom")
        self.assertEqual(
            out[0]["routes"],
            [{"mailer": "lmtp", "host": "", "address": "", "port": 0, "preference": 0}],
        )
        out = yield r.resolveRecipient("x@spam.filter.domain")
        self.assertEqual(
            [(x["address"], x["port"]) for x in out[0]["routes"]], [("127.0.0.1", 2525)]
        )
        out = yield r.resolveRecipient("x@another.domain")
        self.assertEqual(
            [x["address"] for x in out[0]["routes"]], ["127.0.0.2", "127.0.0.3"]
        )
        out = yield r.resolveRecipient("x@remote.test")
        self.assertEqual(
            [x["host"] for x in out[0]["routes"]],
            ["mx1.remote.test", "mx2.remote.test"],
        )
        out = yield r.resolveRecipient("x@plain.test")
        self.assertEqual([x["address"] for x in out[0]["routes"]], ["127.0.0.4"])
        out = yield r.resolveRecipient("x@some.tld")
        self.assertEqual([x["address"] for x in out[0]["routes"]], ["127.0.0.9"])

    @defer.inlineCallbacks
    def test_lmtpRoutePorts(self):
        """
        An C{lmtp:} route with a host and no port goes to port 24, never
        to C{remote_port} (RFC 2033 forbids LMTP on port 25); a port in
        the entry is kept.
        """
        r = self.resolver()
        out = yield r.resolveRecipient("x@lmtp.host")
        self.assertEqual(
            [(x["mailer"], x["address"], x["port"]) for x in out[0]["routes"]],
            [("lmtp", "127.0.0.73", 24)],
        )
        out = yield r.resolveRecipient("x@lmtp.port")
        self.assertEqual(
            [(x["mailer"], x["address"], x["port"]) for x in out[0]["routes"]],
            [("lmtp", "127.0.0.73", 2724)],
        )

    @defer.inlineCallbacks
    def test_routeErrors(self):
        """
        A missing domain is 5xx; an MX with an C{mxbadip:} address gets that
        entry's reply.
        """
        r = self.resolver()
        out = yield r.resolveRecipient("x@nothere.test")
        self.assertEqual(out[0]["error"]["code"], 550)
        out = yield r.resolveRecipient("x@bad.test")
        self.assertEqual((out[0]["error"]["code"], out[0]["routes"]), (551, []))

    @defer.inlineCallbacks
    def test_aliasesAndOwner(self):
        """
        A list expands with the owner as sender; an unknown local user is an
        error.
        """
        r = self.resolver()
        out = yield r.resolveRecipient("list@my.dom")
        self.assertEqual([o["address"] for o in out], ["bob@far.test", "alice@my.dom"])
        self.assertEqual(out[0]["sender"], "owner-list@my.dom")
        out = yield r.resolveRecipient("nobody@my.dom")
        self.assertEqual(out[0]["error"]["code"], 550)
        d = yield r.checkRecipient("nobody@my.dom", {"address": "192.0.2.1"})
        self.assertEqual((d["action"], d["reply"]["dsn"]), ("error", "5.1.1"))

    @defer.inlineCallbacks
    def test_dnsbl(self):
        """
        A client listed in the DNSBL gets the access entry of its result.
        """
        r = self.resolver()
        d = yield r.checkClient("1.2.3.4")
        self.assertEqual((d["action"], d["reply"]["code"]), ("error", 550))
        d = yield r.checkClient("1.2.3.5")
        self.assertEqual(d["action"], "none")

    def test_missingMailertable(self):
        """
        A missing mailertable is a L{MapError} naming the file.
        """
        os.unlink(os.path.join(self.dir, "mt"))
        e = self.assertRaises(MapError, self.resolver)
        self.assertIn("mt", str(e))

    @defer.inlineCallbacks
    def test_reload(self):
        """
        C{reload} reopens maps rebuilt by createmap.
        """
        r = self.resolver()
        d = yield r.checkRecipient("u@other.domain", {"address": "192.0.2.1"})
        self.assertEqual(d["action"], "error")
        createMap(os.path.join(self.dir, "access.db"), ["to:@other.domain relay\n"])
        r.reload()
        d = yield r.checkRecipient("u@other.domain", {"address": "192.0.2.1"})
        self.assertEqual((d["action"], d["relayAllowed"]), ("relay", True))


class SocketMapTests(unittest.TestCase):
    """
    The socket map client against a real server on a Unix socket.
    """

    def setUp(self):
        path = os.path.abspath(self.mktemp())
        factory = protocol.Factory.forProtocol(SocketMapServer)
        factory.table = {"alice": "local:"}
        self.listening = reactor.listenUNIX(socketName(path), factory)
        self.addCleanup(self.listening.stopListening)
        self.map = SocketMap(
            "users",
            reactor,
            "users",
            path=path,
            timeout=0.5,
            log=Logger("smar", sink=MemorySink()),
        )
        self.addCleanup(self.map.close)

    @defer.inlineCallbacks
    def test_answers(self):
        """
        OK gives the value, NOTFOUND None, TEMP a temporary failure.
        """
        self.assertEqual((yield self.map.lookup("alice")), "local:")
        self.assertIsNone((yield self.map.lookup("bob")))
        yield self.assertFailure(self.map.lookup("temp"), MapTemporaryError)

    @defer.inlineCallbacks
    def test_hang(self):
        """
        A server that does not answer is a temporary failure after the
        timeout, and the next lookup works on a new connection.
        """
        yield self.assertFailure(self.map.lookup("hang"), MapTemporaryError)
        self.assertEqual((yield self.map.lookup("alice")), "local:")

    @defer.inlineCallbacks
    def test_noServer(self):
        """
        A socket nobody listens on is a temporary failure.
        """
        m = SocketMap(
            "x",
            reactor,
            "x",
            path=os.path.abspath(self.mktemp()),
            timeout=0.5,
            log=Logger("smar", sink=MemorySink()),
        )
        yield self.assertFailure(m.lookup("a"), MapTemporaryError)

# -*- test-case-name: smx.test.test_unixsocket -*-
"""
Tests for L{smx.unixsocket}: short names for long Unix socket paths.
"""

import os
import shutil
import socket

from twisted.trial import unittest

from smx.unixsocket import MAX_SOCKET_NAME, SocketNameError, socketName


class SocketNameTests(unittest.TestCase):
    """
    L{socketName} keeps short paths and gives long ones a name under
    C{/proc/self/fd} that designates the same file.
    """

    def _deepDirectory(self):
        d = os.path.join(os.path.abspath(self.mktemp()), "d" * 120)
        os.makedirs(d)
        return d

    def test_shortPath(self):
        """A path that fits is returned unchanged."""
        self.assertEqual(socketName("/tmp/x/lmtpsock"), "/tmp/x/lmtpsock")
        exact = "/" + "a" * (MAX_SOCKET_NAME - 1)
        self.assertEqual(socketName(exact), exact)

    def test_longPathBindAndConnect(self):
        """
        A server bound through the short name of a long path creates the
        socket file at the long path, and a client connects through it.
        """
        path = os.path.join(self._deepDirectory(), "lmtpsock")
        name = socketName(path)
        self.assertLessEqual(len(name), MAX_SOCKET_NAME)
        self.assertTrue(name.startswith("/proc/self/fd/"), name)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(server.close)
        server.bind(name)
        server.listen(1)
        self.assertTrue(os.path.exists(path))
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(client.close)
        client.connect(socketName(path))
        accepted, _ = server.accept()
        self.addCleanup(accepted.close)
        client.sendall(b"x")
        self.assertEqual(accepted.recv(1), b"x")

    def test_sameDirectorySameDescriptor(self):
        """Names in one directory share one open descriptor."""
        d = self._deepDirectory()
        a = socketName(os.path.join(d, "a"))
        b = socketName(os.path.join(d, "b"))
        self.assertEqual(os.path.dirname(a), os.path.dirname(b))

    def test_replacedDirectory(self):
        """
        When the directory was removed and made again, the name designates
        the new one.
        """
        d = self._deepDirectory()
        socketName(os.path.join(d, "s"))
        shutil.rmtree(d)
        os.makedirs(d)
        name = socketName(os.path.join(d, "s"))
        with open(name, "w") as f:
            f.write("here")
        with open(os.path.join(d, "s")) as f:
            self.assertEqual(f.read(), "here")

    def test_missingDirectory(self):
        """A long path in a directory that does not exist is an error."""
        path = os.path.join(os.path.abspath(self.mktemp()), "m" * 120, "sock")
        e = self.assertRaises(SocketNameError, socketName, path)
        self.assertIn(path, str(e))
        self.assertIsInstance(e, OSError)

    def test_longFileName(self):
        """A file name that alone is too long cannot be shortened."""
        d = self._deepDirectory()
        self.assertRaises(SocketNameError, socketName, os.path.join(d, "n" * 120))

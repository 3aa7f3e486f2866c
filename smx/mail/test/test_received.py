# -*- test-case-name: smx.mail.test.test_received -*-
"""
Tests for L{smx.mail.received}: the App. C.3 header.
"""

from twisted.trial import unittest

from smx.mail.received import protocolName, receivedHeader, receivedId


class ReceivedTests(unittest.TestCase):
    """L{receivedHeader} and L{protocolName}."""

    def test_plain(self):
        """Without TLS and client name."""
        header = receivedHeader(
            "client.test",
            "127.0.0.1",
            "mx.test",
            "ESMTP",
            "S0001",
            now=0,
            version="smx 1",
        )
        lines = header.split(b"\r\n")
        self.assertEqual(lines[0], b"Received: from client.test ([127.0.0.1])")
        self.assertEqual(lines[1], b"\tby mx.test (smx 1) with ESMTP")
        self.assertTrue(lines[2].startswith(b"\tid S0001; Thu, 01 Jan 1970 "))
        self.assertEqual(lines[3], b"")

    def test_tls(self):
        """With TLS, client name and IPv6."""
        header = receivedHeader(
            "c",
            "::1",
            "mx.test",
            "ESMTPSA",
            "S1",
            clientName="localhost",
            tlsInfo={"version": "TLSv1.3", "cipher": "X", "bits": 256, "verify": "NO"},
        )
        lines = header.split(b"\r\n")
        self.assertEqual(lines[0], b"Received: from c (localhost [IPv6:::1])")
        self.assertEqual(lines[2], b"\t(TLS=TLSv1.3, cipher=X, bits=256, verify=NO)")

    def test_idReadBack(self):
        """
        L{receivedId} reads the id back from a content beginning with the
        header, with or without the TLS line; a content beginning with
        anything else has none.
        """
        for tls in (
            None,
            {"version": "TLSv1.3", "cipher": "X", "bits": 1, "verify": "NO"},
        ):
            header = receivedHeader(
                "c", "127.0.0.1", "mx.test", "ESMTP", "S00AB01", tlsInfo=tls, now=0
            )
            content = header + b"Subject: id S999; x\r\n\r\nbody\r\n"
            self.assertEqual(receivedId(content), "S00AB01")
        self.assertIsNone(receivedId(b"Subject: id S1; x\r\n\r\nbody\r\n"))
        self.assertIsNone(receivedId(b"Received: from x by y; date\r\nid S1;\r\n"))

    def test_dateOfEachSecond(self):
        """
        The date is formatted once per second, and a new second gets its
        own, as C{email.utils.formatdate} gives it.
        """
        import email.utils

        def date(now):
            header = receivedHeader("c", "127.0.0.1", "mx", "SMTP", "S1", now=now)
            return header.split(b"\r\n")[2].split(b"; ", 1)[1].decode("ascii")

        for now in (86400.25, 86400.75, 86401.5, 86400.0):
            self.assertEqual(
                date(now), email.utils.formatdate(int(now), localtime=True)
            )
        self.assertNotEqual(date(86400.0), date(86401.0))

    def test_protocol(self):
        """RFC 3848 names."""
        self.assertEqual(protocolName(False, True, True), "SMTP")
        self.assertEqual(protocolName(True, False, False), "ESMTP")
        self.assertEqual(protocolName(True, True, False), "ESMTPS")
        self.assertEqual(protocolName(True, False, True), "ESMTPA")
        self.assertEqual(protocolName(True, True, True), "ESMTPSA")

# -*- test-case-name: smx.queue.test.test_pickup -*-
"""
Tests for L{smx.queue.pickup}: the pickup service and its reader with a
L{Clock}, real maildrop files in a temporary directory and a fake
submission that answers as a script says.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, List, Optional, Tuple

from twisted.application.service import IService
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from smx.config import configurationFromText, defaultConfiguration
from smx.log import Logger, MemorySink
from smx.queue.maildrop import (
    DropEnvelope,
    DropRecipient,
    dropMessage,
    readDrop,
    waitingNames,
)
from smx.queue.pickup import MAX_DELAY, MaildropReader, PickupService
from smx.queue.pickupsettings import PickupSettings, submissionAddress
from smx.queue.submission import Outcome, RecipientResult

CONTENT = b"Subject: hi\r\n\r\nhello\r\n"


class FakeSubmit:
    """
    A submission that records its calls and answers each recipient by
    C{answers} (address -> C{"ok"}, C{"temp"}, C{"perm"}, C{"down"}).
    """

    def __init__(self, answers: Optional[dict] = None, default: str = "ok") -> None:
        self.answers = answers or {}
        self.default = default
        self.calls = []  # type: List[Tuple[DropEnvelope, bytes]]

    def __call__(
        self,
        address: Tuple[str, int],
        envelope: DropEnvelope,
        content: bytes,
        helo: str,
    ) -> Outcome:
        self.calls.append((envelope, content))
        outcome = Outcome()
        for r in envelope.pending():
            answer = self.answers.get(r.address, self.default)
            if answer == "ok":
                outcome.accepted.append(r.address)
            elif answer == "perm":
                outcome.permanent.append(
                    RecipientResult(r.address, 550, "550 5.1.1 User unknown", "rcpt")
                )
            elif answer == "down":
                outcome.temporary.append(
                    RecipientResult(r.address, 0, "connection refused", "connect")
                )
            else:
                outcome.temporary.append(
                    RecipientResult(r.address, 451, "451 4.3.0 later", "rcpt")
                )
        return outcome


def envelope(*recipients: str, sender: str = "alice@example.test", notify=None):
    return DropEnvelope(
        sender,
        tuple(DropRecipient(r, notify) for r in recipients),
        created=1700000000.0,
        user="alice",
    )


class PickupTestCase(unittest.TestCase):
    def setUp(self) -> None:
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.clock = Clock()
        self.sink = MemorySink()
        # the default settings, with single fields changed
        self.settings = dataclasses.replace(
            PickupSettings.fromConfiguration(
                defaultConfiguration(queueDirectory=self.dir)
            ),
            directory=self.dir,
            submissionAddress=("127.0.0.1", 2525),
            hostname="smx.test",
            maxSize=1 << 20,
        )

    def service(
        self,
        submit: Callable[..., Outcome],
        runInThread: Optional[Callable[..., Any]] = None,
    ) -> PickupService:
        service = PickupService(
            self.settings,
            self.clock,
            log=Logger("pickup", sink=self.sink),
            reader=MaildropReader(self.settings, submit),
            runInThread=runInThread or (lambda f, *a: defer.maybeDeferred(f, *a)),
        )
        self.addCleanup(service.stopService)
        return service

    def drop(self, env: DropEnvelope, content: bytes = CONTENT) -> str:
        return dropMessage(self.dir, env, content)

    def records(self, text: str) -> List[str]:
        return [line for line in self.sink.lines() if text in line]


class ServiceTests(PickupTestCase):
    """
    L{PickupService}: when it looks, what it keeps.
    """

    def test_interface(self) -> None:
        """
        It is an L{IService} named C{pickup}.
        """
        service = self.service(FakeSubmit())
        self.assertTrue(verifyObject(IService, service))
        self.assertEqual(service.name, "pickup")

    def test_atStart(self) -> None:
        """
        Files waiting when smx starts are submitted at once, with their
        envelope and content, and removed after their 250; the record
        names the file, the owner's uid and the counts.
        """
        name = self.drop(envelope("bob@example.test", "carol@example.test"))
        submit = FakeSubmit()
        self.service(submit).startService()
        self.clock.advance(0)
        [(env, content)] = submit.calls
        self.assertEqual(
            [r.address for r in env.recipients],
            ["bob@example.test", "carol@example.test"],
        )
        self.assertEqual(content, CONTENT)
        self.assertEqual(waitingNames(self.dir), [])
        [record] = self.records("pickup=" + name)
        self.assertIn("uid=%d" % (os.getuid(),), record)
        self.assertIn("nrcpts=2, accepted=2, deferred=0, failed=0", record)

    def test_everyInterval(self) -> None:
        """
        A file that arrives later is found after C{interval}.
        """
        submit = FakeSubmit()
        self.service(submit).startService()
        self.clock.advance(0)
        self.drop(envelope("bob@example.test"))
        self.clock.advance(4.9)
        self.assertEqual(submit.calls, [])
        self.clock.advance(0.1)
        self.assertEqual(len(submit.calls), 1)
        self.assertEqual(waitingNames(self.dir), [])

    def test_temporaryKept(self) -> None:
        """
        After a 4xx the file stays with the recipients still to do (the
        accepted one is written out), and is tried again with a delay
        that doubles up to L{MAX_DELAY}.
        """
        name = self.drop(envelope("bob@example.test", "later@example.test"))
        submit = FakeSubmit({"later@example.test": "temp"})
        self.service(submit).startService()
        self.clock.advance(0)
        env, _, _ = readDrop(self.dir, name, 1 << 20)
        self.assertEqual([r.address for r in env.recipients], ["later@example.test"])
        times = []
        for _ in range(400):
            before = len(submit.calls)
            self.clock.advance(5)
            if len(submit.calls) > before:
                times.append(self.clock.seconds())
        gaps = [b - a for a, b in zip(times, times[1:])]
        self.assertEqual(gaps[:4], [10, 20, 40, 80])
        self.assertEqual(max(gaps), MAX_DELAY)
        self.assertEqual(
            [r.address for r in submit.calls[-1][0].recipients], ["later@example.test"]
        )

    def test_unexpectedErrorOneFile(self) -> None:
        """
        An unexpected exception while one file is handled (a fault of smx)
        is logged with the file's name and C{sev=}; that file stays and is
        tried again later with the 4xx back-off, and the files after it in
        the same round are still submitted.
        """
        first = self.drop(envelope("bob@example.test"))
        second = self.drop(envelope("carol@example.test"))
        submit = FakeSubmit()
        service = self.service(submit)
        process = service.reader.process
        failing = []

        def faulty(name: str) -> Any:
            if name == first:
                failing.append(self.clock.seconds())
                raise RuntimeError("a bug")
            return process(name)

        service.reader.process = faulty  # type: ignore[method-assign]
        service.startService()
        self.clock.advance(0)
        self.assertEqual(
            [r.address for env, _ in submit.calls for r in env.recipients],
            ["carol@example.test"],
        )
        self.assertEqual(waitingNames(self.dir), [first])
        [record] = self.records("pickup=" + first)
        self.assertIn("sev=", record)
        self.assertIn("a bug", "\n".join(self.sink.lines()))
        for _ in range(40):
            self.clock.advance(5)
        gaps = [b - a for a, b in zip(failing, failing[1:])]
        self.assertEqual(gaps[:3], [5, 10, 20])
        self.flushLoggedErrors(RuntimeError)
        self.assertNotIn(second, waitingNames(self.dir))

    def test_removalFails(self) -> None:
        """
        When the file cannot be removed after the 250 (as if smx died
        between the two steps), it stays and is submitted again: at worst
        a second delivery, never none.
        """
        from smx.queue import pickup

        name = self.drop(envelope("bob@example.test"))

        def removeDrop(directory: str, name: str) -> None:
            raise OSError(5, "Input/output error")

        self.patch(pickup, "removeDrop", removeDrop)
        submit = FakeSubmit()
        self.service(submit).startService()
        self.clock.advance(0)
        self.assertEqual(waitingNames(self.dir), [name])
        self.assertEqual(len(self.records("sev=ERR")), 1)
        self.clock.advance(5)
        self.assertEqual(len(submit.calls), 2)

    def test_unreachable(self) -> None:
        """
        When SMTPS does not answer, the rest of the directory waits for
        the next round.
        """
        self.drop(envelope("a@example.test"))
        self.drop(envelope("b@example.test"))
        submit = FakeSubmit(default="down")
        self.service(submit).startService()
        self.clock.advance(0)
        self.assertEqual(len(submit.calls), 1)
        submit.default = "ok"
        self.clock.advance(5)
        self.assertEqual(waitingNames(self.dir), [])

    def test_permanentBounced(self) -> None:
        """
        A recipient refused for good gets a bounce from the null sender to
        the sender, which names it; the file is removed once the bounce
        got its 250.
        """
        name = self.drop(envelope("bob@example.test", "nobody@example.test"))
        submit = FakeSubmit({"nobody@example.test": "perm"})
        self.service(submit).startService()
        self.clock.advance(0)
        [_, (bounce, report)] = submit.calls
        self.assertEqual(bounce.sender, "")
        self.assertEqual([r.address for r in bounce.recipients], ["alice@example.test"])
        self.assertIn(b"Final-Recipient: rfc822; nobody@example.test", report)
        self.assertIn(b"550 5.1.1 User unknown", report)
        self.assertIn(b"Subject: hi", report)
        self.assertEqual(waitingNames(self.dir), [])
        self.assertEqual(len(self.records("stat=bounced")), 1)
        self.assertIn("failed=1", self.records("pickup=" + name)[0])

    def test_bounceDeferred(self) -> None:
        """
        When the bounce itself gets a 4xx, the failed recipient stays in
        the file, marked, and only the bounce is tried again: the message
        is not submitted to anyone a second time.
        """
        name = self.drop(envelope("nobody@example.test"))
        submit = FakeSubmit(
            {"nobody@example.test": "perm", "alice@example.test": "temp"}
        )
        self.service(submit).startService()
        self.clock.advance(0)
        env, _, _ = readDrop(self.dir, name, 1 << 20)
        self.assertEqual(env.pending(), [])
        self.assertEqual(env.failed()[0].failed, "550 5.1.1 User unknown")
        submit.answers["alice@example.test"] = "ok"
        self.clock.advance(10)
        self.assertEqual(
            [e.sender for e, _ in submit.calls], ["alice@example.test", "", ""]
        )
        self.assertEqual(waitingNames(self.dir), [])

    def test_notifyNever(self) -> None:
        """
        No bounce for a recipient whose NOTIFY excludes failures.
        """
        self.drop(envelope("nobody@example.test", notify="NEVER"))
        submit = FakeSubmit({"nobody@example.test": "perm"})
        self.service(submit).startService()
        self.clock.advance(0)
        self.assertEqual(len(submit.calls), 1)
        self.assertEqual(waitingNames(self.dir), [])

    def test_nullSender(self) -> None:
        """
        A failure of a message from the null sender is logged and dropped,
        never bounced.
        """
        self.drop(envelope("nobody@example.test", sender=""))
        submit = FakeSubmit({"nobody@example.test": "perm"})
        self.service(submit).startService()
        self.clock.advance(0)
        self.assertEqual(len(submit.calls), 1)
        self.assertEqual(len(self.records("sev=WARN")), 1)
        self.assertEqual(waitingNames(self.dir), [])

    def test_corrupt(self) -> None:
        """
        A file that is not a maildrop file is renamed C{corrupt.NAME},
        with an error record, and the others go on.
        """
        bad = "1600000000.000000.1.0123456789abcdef"
        with open(os.path.join(self.dir, bad), "wb") as f:
            f.write(b"junk")
        self.drop(envelope("bob@example.test"))
        submit = FakeSubmit()
        self.service(submit).startService()
        self.clock.advance(0)
        self.assertEqual(len(submit.calls), 1)
        self.assertEqual(os.listdir(self.dir), ["corrupt." + bad])
        [record] = self.records("sev=ERR")
        self.assertIn("not a maildrop file", record)

    def test_staleTemporary(self) -> None:
        """
        A temporary file older than a day (a sendmail killed while
        writing) is removed.
        """
        path = os.path.join(self.dir, ".tmp.x")
        with open(path, "wb") as f:
            f.write(b"partial")
        os.utime(path, (1000, 1000))
        self.service(FakeSubmit()).startService()
        self.clock.advance(0)
        self.assertEqual(os.listdir(self.dir), [])

    def test_stopWaits(self) -> None:
        """
        Stopping waits for the file being submitted, and nothing is looked
        at afterwards.
        """
        self.drop(envelope("bob@example.test"))
        pending = []  # type: List[defer.Deferred]

        def runInThread(f: Callable[..., Any], *args: Any) -> defer.Deferred:
            d = defer.Deferred()
            pending.append(d)
            d.addCallback(lambda _: f(*args))
            return d

        submit = FakeSubmit()
        service = self.service(submit, runInThread)
        service.startService()
        self.clock.advance(0)
        stopped = service.stopService()
        self.assertNoResult(stopped)
        pending[0].callback(None)
        self.successResultOf(stopped)
        self.assertEqual(len(submit.calls), 1)
        self.clock.advance(60)
        self.assertEqual(len(submit.calls), 1)

    def test_missingDirectory(self) -> None:
        """
        The directory is created at start (mode 0700 without a group).
        """
        self.settings = dataclasses.replace(
            self.settings, directory=os.path.join(self.dir, "maildrop")
        )
        self.service(FakeSubmit()).startService()
        self.assertEqual(os.stat(self.settings.directory).st_mode & 0o7777, 0o700)


class SettingsTests(unittest.TestCase):
    """
    L{PickupSettings} and L{submissionAddress} from a configuration.
    """

    def test_defaults(self) -> None:
        """
        By default pickup submits to the first address of the first smtps
        section (0.0.0.0 as 127.0.0.1, :: as ::1), looks every 5 seconds
        into C{maildrop} in the queue directory, and reads files up to the
        smtps message size plus room for the envelope.
        """
        cfg = configurationFromText(
            'hostname = h.test; smtps { daemon_address = { ":2600", "127.0.0.1:25" };'
            " max_message_size = 1MB; }",
            queueDirectory="/q",
        )
        settings = PickupSettings.fromConfiguration(cfg)
        self.assertEqual(settings.submissionAddress, ("127.0.0.1", 2600))
        self.assertEqual(settings.directory, "/q/maildrop")
        self.assertEqual(settings.interval, 5.0)
        self.assertEqual(settings.hostname, "h.test")
        self.assertEqual(settings.maxSize, 2 * 1024 * 1024)
        self.assertIsNone(settings.maildropGroup)
        cfg = configurationFromText('smtps { daemon_address = "[::]:2601"; }')
        self.assertEqual(submissionAddress(cfg), ("::1", 2601))

    def test_configured(self) -> None:
        """
        The pickup section sets the address, directory, group and
        interval.
        """
        cfg = configurationFromText(
            'pickup { submission_address = "127.0.0.5:587"; maildrop_directory ='
            ' "/var/spool/smx/maildrop"; maildrop_group = mail; interval = 200ms; }',
            queueDirectory="/q",
        )
        settings = PickupSettings.fromConfiguration(cfg)
        self.assertEqual(settings.submissionAddress, ("127.0.0.5", 587))
        self.assertEqual(settings.directory, "/var/spool/smx/maildrop")
        self.assertEqual(settings.maildropGroup, "mail")
        self.assertEqual(settings.interval, 0.2)

    def test_sameListenAddressesAsSMTPS(self) -> None:
        """
        The addresses pickup derives from an smtps section are those
        SMTPS listens on (L{smx.mail.listener.listenAddresses}).
        """
        from smx.mail.listener import listenAddresses as smtps
        from smx.queue.pickupsettings import listenAddresses

        for text in (
            "",
            'daemon_address = { "127.0.0.1:2525", ":26" };',
            'daemon_address = "[::1]";',
            "port = 2600;",
            "address = 127.0.0.9; port = 2601;",
        ):
            section = configurationFromText("smtps { %s }" % (text,)).section("smtps")
            self.assertEqual(listenAddresses(section), smtps(section), text)

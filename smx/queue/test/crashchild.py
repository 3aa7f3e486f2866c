# -*- test-case-name: smx.queue.test.test_integration_crash -*-
"""
The child process of the crash test: commits a stream of transactions
through a real L{QueueManager} on the real reactor and prints C{ACK <id>}
for every transaction whose commit fired (i.e. SMTPS would have said 250)
and C{OK <id> <address>} for every recipient the delivery agent accepted.

With C{--stall-group} the first DEFEDB group commit of two or more
transactions is stopped before its commit (its changes made in the
Berkeley DB transaction): the child prints C{GROUP <id> ...} and waits to
be killed; deferred recipients are retried only after an hour.

Usage: python -m smx.queue.test.crashchild DIRECTORY [--stall-group]
"""

import sys
import time

from twisted.internet import defer, reactor

from smx.ids import ServerIdGenerator
from smx.log import Logger, MemorySink
from smx.mail.testing import FakeDeliveryAgent
from smx.maps.testing import FakeAddressResolver
from smx.queue.cdb import FileContentStore
from smx.queue.defedb import DeferredEnvelopeDB
from smx.queue.qmgr import QueueManager
from smx.queue.testing import defaultQueueSettings

ROUTE = {"mailer": "esmtp", "host": "h", "address": "127.0.0.2", "port": 25}


class PrintingAgent(FakeDeliveryAgent):
    def deliver(self, transaction):
        results = self.results(transaction)
        for r in results:
            if r["status"] == "ok":
                sys.stdout.write("OK %s %s\n" % (transaction["ss_ta"], r["address"]))
        sys.stdout.flush()
        return defer.succeed(results)


def outcome(rcpt):
    if rcpt["address"].endswith("@up.test"):
        return ("ok", 250, "250 ok")
    return ("temp", 451, "451 4.4.1 destination down")


async def stream(qmgr, cdb, ids, n):
    for i in range(n):
        taId = ids.next()
        w = cdb.createWriter(taId)
        w.write(b"Subject: %d\r\n\r\n" % (i,) + b"x" * 2000 + b"\r\n")
        await w.commit()
        await qmgr.commitTransaction(
            {
                "id": taId,
                "session": "S1",
                "sender": "a@x.test",
                "recipients": [
                    {"address": "b@down.test", "index": 0},
                    {"address": "c@up.test", "index": 1},
                ],
                "size": 2000,
                "client": "127.0.0.1",
                "received": reactor.seconds(),
                "bodyType": "7BIT",
            }
        )
        sys.stdout.write("ACK %s\n" % (taId,))
        sys.stdout.flush()


def stallGroups():
    """
    Make the first group commit of two or more transactions stop before
    its commit, printing C{GROUP} and the transaction ids.
    """
    state = {"stall": None, "done": False}
    putMany = DeferredEnvelopeDB.putMany
    change = DeferredEnvelopeDB._change

    def stallingPutMany(self, changes):
        if len(changes) >= 2 and not state["done"]:
            state["done"] = True
            state["stall"] = [envelope["id"] for envelope, _ in changes]
        return putMany(self, changes)

    def stallingChange(self, work):
        ids, state["stall"] = state["stall"], None
        if ids is None:
            return change(self, work)
        txn = self.env.txn_begin()
        work(txn)
        sys.stdout.write("GROUP %s\n" % (" ".join(ids),))
        sys.stdout.flush()
        time.sleep(60)

    DeferredEnvelopeDB.putMany = stallingPutMany
    DeferredEnvelopeDB._change = stallingChange


def main(directory, stall=False):
    cdb = FileContentStore(directory)
    resolver = FakeAddressResolver()
    resolver.routes["@down.test"] = [ROUTE]
    resolver.routes["@up.test"] = [ROUTE]
    settings = defaultQueueSettings(
        directory,
        maxCommitDelay=0.002,
        maxOpenTransactions=8,
        ibdbFileSize=64 * 1024,
        retryMinDelay=3600 if stall else 0.02,
        retryMaxDelay=3600 if stall else 0.05,
        checkpointDelay=0.1,
    )
    qmgr = QueueManager(
        reactor,
        settings,
        cdb,
        resolver,
        PrintingAgent(outcome),
        logger=Logger("qmgr", sink=MemorySink()),
    )
    if stall:
        stallGroups()
    qmgr.startService()
    ids = ServerIdGenerator(1)
    sys.stdout.write("READY\n")
    sys.stdout.flush()
    for _ in range(6):
        defer.Deferred.fromCoroutine(stream(qmgr, cdb, ids, 100000))
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1], "--stall-group" in sys.argv[2:])

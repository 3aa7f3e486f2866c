# -*- test-case-name: smx.queue.test.test_settings -*-
"""
NAME
    smx.queue.settings - the settings of QMGR (and of CDB)

SYNOPSIS
    settings = QueueSettings.fromConfiguration(cfg)
    qmgr = QueueManager(reactor, settings, contentStore, resolver, agent)

DESCRIPTION
    L{QueueSettings} holds every option QMGR uses (seed §5.7, §5.7.1,
    §5.4): those of the queue manager itself, of IBDB, IQDB, DEFEDB, the
    scheduler, the connection limits and the disk space limits, and the
    global C{hostname} and C{CDB_base_directory}.  Its values are as the
    option table gives them: times in seconds, sizes in bytes
    (C{min_disk_space}, C{ok_disk_space} and
    C{KBytes_written_for_checkpointing} are written in KB,
    C{max_commit_delay} in µs), paths absolute.  It has no defaults of
    its own (L{smx.config.settings}).

CONFIGURATION PARAMETERS
    See L{QueueSettings.OPTIONS} and L{QueueSettings.DERIVED}.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, ClassVar, Mapping, Optional, Tuple

from smx.config.settings import optionValues
from smx.queue.debug import DebugLevels


@dataclasses.dataclass(frozen=True, slots=True)
class QueueSettings:
    """
    The options of QMGR.

    @ivar queueDirectory: the execution directory (IBDB, DEFEDB and CDB
        are under it unless their options say otherwise).
    @ivar cdbDirectory: C{CDB_base_directory}, or the queue directory.
    @ivar checkpointBytes: C{KBytes_written_for_checkpointing} in bytes.
    @ivar checkpointDelay: C{delay_between_2_checkpoints} (0: DEFEDB is
        checkpointed only when QMGR stops).
    @ivar controlSocket: the socket of C{qmgrctl}; C{None} for none
        (tests only: the option always names one).
    """

    queueDirectory: str
    cdbDirectory: str
    hostname: str
    defedbDirectory: str
    defedbLogDirectory: str
    defedbPageSize: int
    defedbCacheSize: int
    checkpointBytes: int
    checkpointDelay: float
    maxCommitDelay: float
    maxOpenTransactions: int
    ibdbFileSize: int
    contentSync: str
    iqdbMaxEntries: int
    aqMaxEntries: int
    smarTimeout: float
    deliveryTimeout: float
    retryMinDelay: float
    retryMaxDelay: float
    queuereturnTimeout: float
    queuedelayTimeout: float
    dsnMaxDelay: float
    maxErrorsPerBounce: int
    headerOnlyInBounce: bool
    waitForServer: float
    smtpcInitialConnections: int
    smtpcMaxConnections: int
    smtpsMaxConnectionRate: int
    smtpsMaxOpenConnections: int
    occMaxEntries: int
    minDiskSpace: int
    okDiskSpace: int
    confMapPath: str
    controlSocket: Optional[str]
    debugLevels: DebugLevels

    #: field -> option (in the qmgr section, or from the top with "/")
    OPTIONS: ClassVar[Mapping[str, str]] = {
        "hostname": "/hostname",
        "defedbDirectory": "DEFEDB.base_directory",
        "defedbLogDirectory": "DEFEDB.log_directory",
        "defedbPageSize": "DEFEDB.page_size",
        "defedbCacheSize": "DEFEDB.cache_size",
        "checkpointBytes": "DEFEDB.KBytes_written_for_checkpointing",
        "checkpointDelay": "DEFEDB.delay_between_2_checkpoints",
        "maxCommitDelay": "IBDB.max_commit_delay",
        "maxOpenTransactions": "IBDB.max_open_TAs",
        "ibdbFileSize": "IBDB.size",
        "contentSync": "IBDB.content_sync",
        "iqdbMaxEntries": "IQDB.max_cache_entries",
        "aqMaxEntries": "AQ_max_entries",
        "smarTimeout": "SMAR_timeout",
        "deliveryTimeout": "delivery_timeout",
        "retryMinDelay": "retry_min_delay",
        "retryMaxDelay": "retry_max_delay",
        "queuereturnTimeout": "queuereturn_timeout",
        "queuedelayTimeout": "queuedelay_timeout",
        "dsnMaxDelay": "DSN_max_delay",
        "maxErrorsPerBounce": "max_errors_per_bounce",
        "waitForServer": "wait_for_server",
        "smtpcInitialConnections": "smtpc_initial_connections",
        "smtpcMaxConnections": "smtpc_max_connections",
        "smtpsMaxConnectionRate": "smtps_max_connection_rate",
        "smtpsMaxOpenConnections": "smtps_max_open_connections",
        "occMaxEntries": "OCC_max_entries",
        "minDiskSpace": "min_disk_space",
        "okDiskSpace": "ok_disk_space",
        "confMapPath": "conf",
        "controlSocket": "control_socket",
    }
    #: field -> the options it is computed from
    DERIVED: ClassVar[Mapping[str, Tuple[str, ...]]] = {
        "queueDirectory": (),
        "cdbDirectory": ("/CDB_base_directory",),
        "headerOnlyInBounce": ("flags",),
        "debugLevels": ("debug_categories", "debug_level"),
    }

    @classmethod
    def fromConfiguration(cls, cfg: Any) -> "QueueSettings":
        """
        @param cfg: an L{smx.config.Configuration}.
        """
        q = cfg.section("qmgr")
        cdb = cfg.globals["CDB_base_directory"]
        return cls(
            queueDirectory=cfg.queueDirectory,
            cdbDirectory=os.path.normpath(cdb) if cdb else cfg.queueDirectory,
            headerOnlyInBounce="header_only_in_bounce" in q["flags"],
            debugLevels=DebugLevels.fromOptions(
                q["debug_categories"], q["debug_level"]
            ),
            **optionValues(cls, q),
        )

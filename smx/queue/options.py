# -*- test-case-name: smx.queue.test.test_options -*-
"""
The QMGR options of an L{smx.config} configuration as keyword arguments of
L{smx.queue.qmgr.QueueManager} (seed §5.7, §5.7.1, §5.4).

Units are already converted by L{smx.config}: times are seconds, sizes
bytes (C{min_disk_space} and C{ok_disk_space} are written in KB,
C{max_commit_delay} in µs).
"""

from __future__ import annotations

from typing import Any, Dict

from smx.queue.debug import DebugLevels


def queueManagerArguments(cfg: Any) -> Dict[str, Any]:
    """
    @param cfg: an L{smx.config.Configuration}.
    @return: the keyword arguments of C{QueueManager} except the reactor,
        the content store, the resolver, the delivery agent and the logger.
    """
    q = cfg.section("qmgr")
    defedb = q.section("DEFEDB")
    ibdb = q.section("IBDB")
    iqdb = q.section("IQDB")
    base = defedb["base_directory"]
    logDirectory = defedb["log_directory"]
    flags = q["flags"] or frozenset()
    return {
        "queueDirectory": cfg.queueDirectory,
        "hostname": cfg.globals["hostname"] or "localhost",
        "defedbDirectory": base,
        "defedbLogDirectory": None if logDirectory == base else logDirectory,
        "defedbPageSize": int(defedb["page_size"] or 0),
        "defedbCacheSize": int(defedb["cache_size"] or 0),
        "checkpointKBytes": int(defedb["KBytes_written_for_checkpointing"] or 0)
        // 1024,
        "checkpointDelay": float(defedb["delay_between_2_checkpoints"] or 0) or 60.0,
        "maxCommitDelay": float(ibdb["max_commit_delay"]),
        "maxOpenTransactions": int(ibdb["max_open_TAs"]),
        "ibdbFileSize": int(ibdb["size"]),
        "iqdbMaxEntries": int(iqdb["max_cache_entries"]),
        "aqMaxEntries": int(q["AQ_max_entries"]),
        "smarTimeout": float(q["SMAR_timeout"]),
        "deliveryTimeout": float(q["delivery_timeout"]),
        "retryMinDelay": float(q["retry_min_delay"]),
        "retryMaxDelay": float(q["retry_max_delay"]),
        "queuereturnTimeout": float(q["queuereturn_timeout"]),
        "queuedelayTimeout": float(q["queuedelay_timeout"]),
        "dsnMaxDelay": float(q["DSN_max_delay"]),
        "maxErrorsPerBounce": int(q["max_errors_per_bounce"]),
        "headerOnlyInBounce": "header_only_in_bounce" in flags,
        "waitForServer": float(q["wait_for_server"]),
        "smtpcInitialConnections": int(q["smtpc_initial_connections"]),
        "smtpcMaxConnections": int(q["smtpc_max_connections"]),
        "smtpsMaxConnectionRate": int(q["smtps_max_connection_rate"]),
        "smtpsMaxOpenConnections": int(q["smtps_max_open_connections"]),
        "occMaxEntries": int(q["OCC_max_entries"]),
        "minDiskSpace": int(q["min_disk_space"]),
        "okDiskSpace": int(q["ok_disk_space"]),
        "confMapPath": q["conf"],
        "controlSocket": q["control_socket"],
        "debugLevels": DebugLevels.fromOptions(
            q["debug_categories"] or (), int(q["debug_level"] or 0)
        ),
    }

"""The Log seam and its backends (see ``base``): ``open_log`` picks one."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import Log


def open_log(bootstrap_servers: str | None = None, data_dir: str | Path | None = None,
             config: dict[str, Any] | None = None) -> Log:
    """The Log a node runs on: Apache Kafka at ``bootstrap_servers`` (``host:port,...``),
    else the embedded log in ``data_dir`` (in memory when None). ``config`` carries the
    engine's properties; the Kafka backend reads its client settings from it."""
    if bootstrap_servers:
        from .kafka import KafkaLog

        return KafkaLog(bootstrap_servers, config or {})
    from .embedded import EmbeddedLog

    config = config or {}
    # Kafka's broker-level topic defaults (log.retention.ms, log.cleanup.policy, ...).
    defaults = {str(k): str(v) for k, v in config.items() if str(k).startswith("log.")}
    return EmbeddedLog(Path(data_dir) if data_dir is not None else None,
                       fsync=fsync_every_write(config), defaults=defaults,
                       retention_check_ms=retention_check_ms(config))


def retention_check_ms(config: dict[str, Any]) -> int:
    """Kafka's broker setting ``log.retention.check.interval.ms``: how often the embedded
    log's cleaner applies retention and compaction (default one minute; Kafka's is five)."""
    from .cleaner import DEFAULT_CHECK_INTERVAL_MS

    value = config.get("log.retention.check.interval.ms")
    try:
        millis = int(str(value).strip()) if value is not None else DEFAULT_CHECK_INTERVAL_MS
    except ValueError:
        millis = DEFAULT_CHECK_INTERVAL_MS
    return millis if millis > 0 else DEFAULT_CHECK_INTERVAL_MS


def fsync_every_write(config: dict[str, Any]) -> bool:
    """Kafka's broker setting ``log.flush.interval.messages``: 1 makes the embedded log fsync
    every write before acknowledging it (survives a power loss); by default (as Kafka's
    default, never) a write is acknowledged once the OS has it (survives a crash of the
    process, not of the machine). Other intervals are not offered: only 1 is a promise."""
    value = str(config.get("log.flush.interval.messages", "")).strip()
    return value == "1"

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

    return EmbeddedLog(Path(data_dir) if data_dir is not None else None)

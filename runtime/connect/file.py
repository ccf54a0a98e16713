"""Kafka Connect's file connectors: ``FileStreamSourceConnector`` and ``FileStreamSinkConnector``
(``org.apache.kafka.connect.file``), with Connect's keys and offsets.

The source publishes each line of ``file`` (``\\n``, ``\\r`` or ``\\r\\n`` ends it; a last line
without its end waits for it) to ``topic`` as a string, at most ``batch.size`` lines a poll. Its
offset is Connect's: source partition ``{"filename": file}``, offset ``{"position": N}``, N the
byte just after the line, so a restarted task skips what it published. Unlike Connect's task
(which keeps reading its open stream and misses everything after a truncation), it follows the
file as ``tail -F`` does: a file shorter than the position was truncated and is read again from
its start; a file replaced by another (rotated: a new inode at the path) is read to its end,
then the new one from its start.

The sink appends each record's value to ``file`` as Java's ``println(record.value())`` writes
it, and flushes in ``flush``, so the worker commits only lines that reached the file.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Mapping, Sequence

from streamsql.runtime.connect.api import (
    STRING, ConfigKey, ConnectException, Schema, SinkConnector, SinkRecord, SinkTask,
    SourceConnector, SourceRecord, SourceTask, Task)
from streamsql.runtime.connect.converters import java_string

log = logging.getLogger(__name__)

VERSION = "3.9.0"
FILENAME_FIELD = "filename"
POSITION_FIELD = "position"
DEFAULT_BATCH_SIZE = 2000
_VALUE_SCHEMA = Schema(STRING)
# How long a poll waits for new data before it returns nothing (Connect's task: 1 s).
_WAIT_S = 0.5
_READ_CHUNK = 1 << 16


def _batch_size(props: Mapping[str, str]) -> int:
    raw = props.get("batch.size", str(DEFAULT_BATCH_SIZE))
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise ConnectException(f"Invalid value {raw} for configuration batch.size: Not a number of type INT") from None
    return value


class FileStreamSourceConnector(SourceConnector):
    """Reads one file into one topic (one task)."""

    def start(self, props: Mapping[str, str]) -> None:
        topic = props.get("topic") or ""
        if "," in topic:
            raise ConnectException("FileStreamSourceConnector should only have a single topic when used as a source.")
        _batch_size(props)
        self.props = dict(props)

    def task_class(self) -> type[Task]:
        return FileStreamSourceTask

    def task_configs(self, max_tasks: int) -> list[dict[str, str]]:
        # One file, one reader: a second task would publish every line twice.
        return [dict(self.props)]

    def config(self) -> Sequence[ConfigKey]:
        return (ConfigKey("file", "STRING", None, False, "HIGH",
                          "Source filename. If not specified, the standard input will be used"),
                ConfigKey("topic", "STRING", None, True, "HIGH", "The topic to publish data to"),
                ConfigKey("batch.size", "INT", DEFAULT_BATCH_SIZE, False, "LOW",
                          "The maximum number of records the source task can read from the file each "
                          "time it is polled"))

    def version(self) -> str:
        return VERSION


class FileStreamSourceTask(SourceTask):
    """See the module docstring."""

    def start(self, props: Mapping[str, str]) -> None:
        self.filename = props.get("file") or ""
        if not self.filename:
            # Connect reads its own standard input then; a server has none worth reading.
            raise ConnectException("Missing required configuration \"file\": FileStreamSourceTask needs a "
                                   "file to read (streamsql does not read the server's standard input)")
        self.topic = props.get("topic") or ""
        self.batch_size = _batch_size(props)
        self._stop = threading.Event()
        # Held by poll: stop (from another thread) closes the file only when no poll reads it.
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._inode: tuple[int, int] | None = None
        self._position = 0          # the byte after the last line published
        self._read_to = 0           # the byte after what is in _buffer
        self._buffer = b""
        self._waiting = False
        self._opened = False        # a file was opened: later ones are new files, read from 0

    def _partition(self) -> dict[str, Any]:
        return {FILENAME_FIELD: self.filename}

    def _open(self) -> bool:
        try:
            fd = os.open(self.filename, os.O_RDONLY)
        except FileNotFoundError:
            if not self._waiting:  # once, not every second of the wait
                self._waiting = True
                log.warning("Couldn't find file %s for FileStreamSourceTask, sleeping to wait for it to be "
                            "created", self.filename)
            return False
        except OSError as exc:
            raise ConnectException(f"Error while trying to open file {self.filename}: {exc}") from exc
        st = os.fstat(fd)
        position = 0
        if not self._opened:  # the task's first file: where the last run stopped
            stored = self.context.offset(self._partition())
            if stored is not None and stored.get(POSITION_FIELD) is not None:
                position = stored[POSITION_FIELD]
                if not isinstance(position, int):
                    os.close(fd)
                    raise ConnectException("Offset position is the incorrect type")
                if position > st.st_size:
                    log.warning("File %s is shorter (%d bytes) than its stored position %d: truncated "
                                "while stopped; reading it from the start", self.filename, st.st_size, position)
                    position = 0
        self._fd = fd
        self._opened = True
        self._inode = (st.st_dev, st.st_ino)
        self._position = self._read_to = position
        self._buffer = b""
        return True

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _reopen_if_changed(self) -> None:
        """The file at the path is no longer the one open (rotated) or is shorter than what
        was read (truncated): start on what is there now, from its start."""
        assert self._fd is not None
        try:
            st = os.stat(self.filename)
        except FileNotFoundError:
            return  # rotated away and not recreated yet: keep reading the old one
        if (st.st_dev, st.st_ino) != self._inode:
            if os.pread(self._fd, 1, self._read_to):
                return  # the rotated file still has lines to finish first
            log.info("File %s was rotated; reading the new file from its start", self.filename)
            self._close()
            self._open()  # (from its start: the stored position was the old file's)
        elif st.st_size < self._read_to:
            log.info("File %s was truncated (%d < %d bytes); reading it from its start",
                     self.filename, st.st_size, self._read_to)
            self._position = self._read_to = 0
            self._buffer = b""

    def poll(self) -> Sequence[SourceRecord] | None:
        with self._lock:
            records = None if self._stop.is_set() else self._poll()
            if self._stop.is_set():
                self._close()
                return None
            return records

    def _poll(self) -> Sequence[SourceRecord] | None:
        if self._fd is None and not self._open():
            self._stop.wait(1.0)
            return None
        self._reopen_if_changed()
        if self._fd is None:
            self._stop.wait(_WAIT_S)
            return None
        records: list[SourceRecord] = []
        partition, now = self._partition(), _now_ms()  # shared by the poll's records
        # Lines are cut out of the buffer by index, and the buffer cut once at the end: a
        # copy of the rest after every line made a 64 KiB chunk cost a copy per line.
        buf, start = self._buffer, 0
        position = self._position
        while len(records) < self.batch_size:
            found = _next_line(buf, start)
            if found is None:
                chunk = os.pread(self._fd, _READ_CHUNK, self._read_to)
                if not chunk:
                    break
                buf = buf[start:] + chunk
                start = 0
                self._read_to += len(chunk)
                continue
            end, after = found
            line = buf[start:end]
            position += after - start
            start = after
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError:
                text = line.decode("utf-8", "replace")
            records.append(SourceRecord(partition, {POSITION_FIELD: position}, self.topic,
                                        value_schema=_VALUE_SCHEMA, value=text, timestamp=now))
        self._buffer = buf[start:]
        self._position = position
        if not records:
            self._stop.wait(_WAIT_S)
            return None
        return records

    def stop(self) -> None:
        self._stop.set()
        if self._lock.acquire(blocking=False):
            try:
                self._close()
            finally:
                self._lock.release()

    def version(self) -> str:
        return VERSION


class FileStreamSinkConnector(SinkConnector):
    """Appends the records of ``topics`` to one file (one task)."""

    def start(self, props: Mapping[str, str]) -> None:
        self.props = dict(props)

    def task_class(self) -> type[Task]:
        return FileStreamSinkTask

    def task_configs(self, max_tasks: int) -> list[dict[str, str]]:
        return [dict(self.props)]

    def config(self) -> Sequence[ConfigKey]:
        return (ConfigKey("file", "STRING", None, False, "HIGH",
                          "Destination filename. If not specified, the standard output will be used"),)

    def version(self) -> str:
        return VERSION


class FileStreamSinkTask(SinkTask):
    """See the module docstring."""

    def start(self, props: Mapping[str, str]) -> None:
        self.filename = props.get("file") or ""
        if not self.filename:
            raise ConnectException("Missing required configuration \"file\": FileStreamSinkTask needs a "
                                   "file to write (streamsql does not write to the server's standard output)")
        try:
            self.out = open(self.filename, "a", encoding="utf-8", newline="\n")
        except OSError as exc:
            raise ConnectException(f"Couldn't find or create file '{self.filename}' for FileStreamSinkTask") from exc

    def put(self, records: Sequence[SinkRecord]) -> None:
        write = self.out.write
        for record in records:
            write(java_string(record.value) + "\n")

    def flush(self, offsets: Mapping[tuple[str, int], int]) -> None:
        self.out.flush()

    def stop(self) -> None:
        out = getattr(self, "out", None)
        if out is not None and not out.closed:
            out.close()

    def version(self) -> str:
        return VERSION


def _next_line(buf: bytes, start: int) -> tuple[int, int] | None:
    """Where the next whole line of ``buf`` from ``start`` ends and the next begins (after
    its \n, \r or \r\n), or None while there is none."""
    n = buf.find(b"\n", start)
    r = buf.find(b"\r", start, n if n >= 0 else len(buf))
    if r >= 0:
        if r + 1 >= len(buf):
            return None  # a \r\n may be split across reads: wait for the next byte
        return r, (r + 2 if buf[r + 1] == 0x0A else r + 1)
    if n >= 0:
        return n, n + 1
    return None


def _now_ms() -> int:
    return int(time.time() * 1000)

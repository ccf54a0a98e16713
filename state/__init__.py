"""streamsql.state: RocksDB state stores, changelog topics, restore and checkpoints.

Operators get their stores from a ``TaskState`` (one RocksDB instance per task)::

    from streamsql.state import TaskState, KeyValueStoreSpec, WindowStoreSpec, SessionStoreSpec

See ``streamsql.state.task`` for commits, restore and exactly-once, ``streamsql.state.store``
for the store interfaces and ``streamsql.state.keys`` for key layouts.
"""
from .checkpoint import TaskCheckpoint, read_positions
from .keys import (MAX_TS, MIN_TS, decode_ts, encode_ts, session_key, split_session_key,
                   split_window_key, window_key)
from .rocksdb import RocksDBKeyValueStore, RocksDBSessionStore, RocksDBWindowStore
from .store import (BYTES, JSON, KeyValueStore, KeyValueStoreSpec, SessionStore,
                    SessionStoreSpec, StateStore, StoreSpec, ValueSerde, WindowStore,
                    WindowStoreSpec)
from .task import RestoreStats, RocksDBConfig, TaskState, UncommittedTail, destroy_state_dir

__all__ = [
    "BYTES", "JSON", "MAX_TS", "MIN_TS", "KeyValueStore", "KeyValueStoreSpec", "RestoreStats",
    "RocksDBConfig", "RocksDBKeyValueStore", "RocksDBSessionStore", "RocksDBWindowStore",
    "SessionStore", "SessionStoreSpec", "StateStore", "StoreSpec", "TaskCheckpoint",
    "TaskState", "UncommittedTail", "ValueSerde", "WindowStore", "WindowStoreSpec",
    "decode_ts", "destroy_state_dir", "encode_ts", "read_positions", "session_key",
    "split_session_key", "split_window_key", "window_key",
]

"""streamsql.state: RocksDB state stores, changelog topics, restore and checkpoints."""

"""streamsql: a ksqlDB-style stream-processing SQL engine in Python."""

__version__ = "0.1.0"

"""streamsql.runtime.connect: connectors, as Kafka Connect runs them, on the Log.

``api`` (the connector contract), ``worker`` (runs connectors and tasks; its Python API is
what the statements and Connect's REST API use), ``storage`` (configs, offsets, statuses in
compacted topics), ``converters``, ``plugins`` (classes by Connect's names), and the
connectors: ``file`` (FileStreamSource/Sink), ``jdbc``; ``remote``, a client of a real Kafka
Connect cluster's REST API for the connectors not built in (``ksql.connect.url``).
"""

"""streamsql.runtime.connect: connectors, as Kafka Connect runs them (``api``), on the Log."""

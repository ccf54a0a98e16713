"""Schema registries: Confluent's REST model, built in (``store``) or remote (``http``)."""

"""streamsql.server: REST API, command topic, cluster membership, pull-query routing."""

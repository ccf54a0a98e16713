"""The web console ``streamsql server`` serves at ``/`` (``server/console/``).

The page (``static/``, built from ``web/`` by ``make console`` and committed, so running it
needs no Node.js and no network) talks to ksqlDB's REST API for statements, queries,
DESCRIBE/EXPLAIN, ``/clusterStatus``, ``/connectors`` and the schema registry, and to the few
JSON endpoints of ``streamsql.server.console.api`` for what that API has no answer to:
topics with their partitions' offsets, a message browser, consumer groups with their lag and
a query's topology as a graph.
"""
from streamsql.server.console.api import Console

__all__ = ["Console"]

"""``GET /metrics``: the node's numbers in Prometheus' text format (``prometheus_client``).

Every ``KsqlApp`` has a ``ServerMetrics`` with a registry of its own (not the library's
global default one: two nodes in one process, as tests run them, keep apart). Two kinds of
numbers are in it:

* what the HTTP layer counts as it answers: requests by endpoint (the route, never the raw
  path, so that 404s of random paths do not make new series) and status, and the latency of
  pull queries as a histogram. ``prometheus_client``'s metrics take a lock per update, and
  the app answers on the HTTP thread (``/info``) as well as on the engine's loop.
* what the engine keeps anyway, read at scrape time by ``EngineCollector``: records each
  persistent query's stages read of its sources' topics and wrote to its sink
  (``StageRunner``'s ``read``/``produced``, added per task run), processing-log errors by query, lag per input partition
  (end offset - position), state store sizes as RocksDB estimates them, restores under way
  (records left to replay, updated per restore chunk) and what restoring each open task's
  stores replayed. Nothing is pushed per record.

The engine's part reads objects of the engine's loop (consumers, RocksDB handles closed on
revocation there), so ``/metrics`` is served there, through the bridge like other requests
(``streamsql.server.bridge``): a scrape is a few dict walks and property reads.
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# Pull queries answer in about a millisecond on one node; the tail reaches seconds when a
# scan is big or a node is forwarded to.
_PULL_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class EngineCollector(Collector):
    """Reads an engine's counters at scrape time (see the module docstring); call
    ``collect`` on the engine's loop."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def describe(self) -> Iterable[Metric]:
        # Nothing to check at registration (the series come and go with queries).
        return ()

    def collect(self) -> Iterator[Metric]:
        engine = self.engine
        records_in = CounterMetricFamily(
            "streamsql_query_records_in", "Records a persistent query has read from its source(s) on this node",
            labels=["query_id"])
        records_out = CounterMetricFamily(
            "streamsql_query_records_out", "Records a persistent query has written to its sink on this node",
            labels=["query_id"])
        errors = CounterMetricFamily(
            "streamsql_query_processing_errors",
            "Records skipped and written to the processing log, by query (transient and pull for those queries)",
            labels=["query_id"])
        lag = GaugeMetricFamily(
            "streamsql_query_lag_records", "Records of an input partition on the log not read yet (end - position)",
            labels=["query_id", "topic", "partition"])
        keys = GaugeMetricFamily(
            "streamsql_state_store_estimated_keys", "Keys in a task's state store, as RocksDB estimates them",
            labels=["query_id", "store", "partition"])
        size = GaugeMetricFamily(
            "streamsql_state_store_size_bytes", "A task's state store on disk and in memtables, in bytes",
            labels=["query_id", "store", "partition"])
        restored = GaugeMetricFamily(
            "streamsql_state_restore_records",
            "Changelog records replayed into a task's store when the task was last opened",
            labels=["query_id", "store", "partition"])
        restored_to = GaugeMetricFamily(
            "streamsql_state_restore_end_offset", "The changelog offset a task's store was restored up to",
            labels=["query_id", "store", "partition"])
        restore_seconds = GaugeMetricFamily(
            "streamsql_state_restore_seconds", "How long restoring a task's store took when the task was last opened",
            labels=["query_id", "store", "partition"])
        remaining = GaugeMetricFamily(
            "streamsql_state_restore_remaining_records",
            "Changelog records a task's store still has to replay before the task runs (restores under way)",
            labels=["query_id", "store", "partition"])
        running = GaugeMetricFamily("streamsql_persistent_queries", "Persistent queries running on this node")
        running.add_metric([], len(engine.runners))
        for query_id, runners in list(engine.runners.items()):
            if not runners:
                continue
            sources, sink = _topics(engine, query_id)
            # In: what the stages read of the sources' topics (a join's later step reads one
            # too; internal repartition topics are not counted); out: what reached the sink.
            records_in.add_metric([query_id], sum(n for r in runners for t, n in list(r.read.items()) if t in sources)
                                  if sources else runners[0].processed)
            records_out.add_metric([query_id], sum(r.produced for r in runners if r.stage.sink_topic == sink)
                                   if sink else runners[-1].produced)
            for runner in runners:
                for (topic, partition), n in sorted(runner.lags().items()):
                    lag.add_metric([query_id, topic, str(partition)], n)
                tasks = runner.tasks
                if tasks is None:
                    continue
                for (partition, store), (_, at, end) in sorted(tasks.restoring.items()):
                    remaining.add_metric([query_id, store, str(partition)], max(end - at, 0))
                for partition, state in sorted(tasks.tasks.items()):
                    p = str(partition)
                    for store, (k, b) in state.store_sizes().items():
                        keys.add_metric([query_id, store, p], k)
                        size.add_metric([query_id, store, p], b)
                    for store, st in state.restore_stats.items():
                        restored.add_metric([query_id, store, p], st.replayed)
                        restored_to.add_metric([query_id, store, p], st.to_offset)
                        restore_seconds.add_metric([query_id, store, p], st.seconds)
        for query_id, n in list(engine.processing_error_counts.items()):
            errors.add_metric([query_id], n)
        yield from (running, records_in, records_out, errors, lag, keys, size, remaining, restored,
                    restored_to, restore_seconds)


def _topics(engine: Any, query_id: str) -> tuple[frozenset[str], str | None]:
    """The topics of a persistent query's sources, and its sink's (empty and None when the
    catalog no longer has it: a query being terminated)."""
    info = engine.catalog.queries.get(query_id)
    if info is None:
        return frozenset(), None
    sources = frozenset(s.topic for s in (engine.catalog.sources.get(n) for n in info.sources) if s is not None)
    sink = engine.catalog.sources.get(info.sink) if info.sink else None
    return sources, sink.topic if sink is not None else None


class ServerMetrics:
    """One server's registry: the HTTP metrics it updates and the engine's collector."""

    def __init__(self, engine: Any) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter("streamsql_http_requests", "HTTP requests answered, by endpoint and status",
                                ["endpoint", "status"], registry=self.registry)
        self.pull_latency = Histogram("streamsql_pull_query_latency_seconds",
                                      "Time to answer a pull query, from its request to its last row",
                                      buckets=_PULL_BUCKETS, registry=self.registry)
        self.registry.register(EngineCollector(engine))

    def request(self, endpoint: str, status: int) -> None:
        """Count one answered request."""
        self.requests.labels(endpoint, str(status)).inc()

    def render(self) -> bytes:
        """The text format (version 0.0.4) of everything in the registry."""
        return generate_latest(self.registry)

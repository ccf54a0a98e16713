package streamsql.bench;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.Locale;
import java.util.Properties;
import java.util.concurrent.atomic.AtomicBoolean;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.Serializer;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.KStream;
import org.apache.kafka.streams.kstream.KTable;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.kstream.TimeWindows;

/**
 * The Kafka Streams contender of bench/bench_versus.py: the same three workloads as the
 * benchmark's SQL, written with the Streams DSL as a ksqlDB query compiles to it.
 *
 * <pre>
 * java -cp 'classes:lib/*' streamsql.bench.VersusApp WORKLOAD BOOTSTRAP INPUT TABLE OUTPUT GUARANTEE APP_ID STATE_DIR
 * </pre>
 *
 * W1: WHERE MS > 100, {"PAGE": UCASE(PAGE), "MS": MS}. W2: tumbling 5-minute windows per
 * message key, {"N": COUNT(*), "TOTAL": SUM(MS)}, keyed by the key's bytes + the window start
 * as 8 big-endian bytes (Kafka Streams' and ksqlDB's windowed key). W3: the stream joined by
 * key to the table topic, {"PAGE", "MS", "NAME", "REGION"}. Prints "ready MILLIS" (wall clock)
 * once the instance first reaches RUNNING (partitions assigned, state restored), and stops
 * when its standard input ends or says "stop".
 */
public final class VersusApp {
  private static final ObjectMapper JSON = new ObjectMapper();
  private static final long WINDOW_MS = 5 * 60_000L;

  private VersusApp() {}

  public static void main(String[] args) throws Exception {
    String workload = args[0];
    Properties props = new Properties();
    props.put(StreamsConfig.APPLICATION_ID_CONFIG, args[6]);
    props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, args[1]);
    props.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, 1);
    props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, args[5]);
    props.put(StreamsConfig.STATE_DIR_CONFIG, args[7]);
    props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
    // ksqlDB's defaults for its Kafka Streams applications: commits every 2 s
    // (ksql.streams.commit.interval.ms), a 10 MB record cache (cache.max.bytes.buffering),
    // topology.optimization=all (a source table's topic is its changelog).
    props.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 2000);
    props.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, 10_000_000L);
    props.put(StreamsConfig.TOPOLOGY_OPTIMIZATION_CONFIG, StreamsConfig.OPTIMIZE);

    StreamsBuilder builder = new StreamsBuilder();
    KStream<String, byte[]> input =
        builder.stream(args[2], Consumed.with(Serdes.String(), Serdes.ByteArray()));
    switch (workload) {
      case "W1" -> input
          .mapValues(VersusApp::parse)
          .filter((k, v) -> v != null && v.path("MS").asLong() > 100)
          .mapValues(VersusApp::project)
          .to(args[4], Produced.with(Serdes.String(), Serdes.ByteArray()));
      case "W2" -> input
          .mapValues(VersusApp::parse)
          .filter((k, v) -> v != null)
          .mapValues(v -> v.path("MS").asLong())
          .groupByKey(Grouped.with(Serdes.String(), Serdes.Long()))
          .windowedBy(TimeWindows.ofSizeAndGrace(Duration.ofMillis(WINDOW_MS), Duration.ofDays(1)))
          .aggregate(() -> new long[2], (k, ms, acc) -> new long[] {acc[0] + 1, acc[1] + ms},
              Materialized.with(Serdes.String(), new CountSumSerde()))
          .toStream()
          .map((wk, acc) -> KeyValue.pair(windowedKey(wk.key(), wk.window().start()), total(acc)))
          .to(args[4], Produced.with(Serdes.ByteArray(), Serdes.ByteArray()));
      case "W3" -> {
        KTable<String, byte[]> users =
            builder.table(args[3], Consumed.with(Serdes.String(), Serdes.ByteArray()));
        input
            .mapValues(VersusApp::parse)
            .filter((k, v) -> v != null)
            .join(users, VersusApp::enrich)
            .to(args[4], Produced.with(Serdes.String(), Serdes.ByteArray()));
      }
      default -> throw new IllegalArgumentException("unknown workload " + workload);
    }

    KafkaStreams streams = new KafkaStreams(builder.build(props), props);
    AtomicBoolean ready = new AtomicBoolean();
    streams.setStateListener((now, before) -> {
      if (now == KafkaStreams.State.RUNNING && ready.compareAndSet(false, true)) {
        System.out.println("ready " + System.currentTimeMillis());
        System.out.flush();
      }
    });
    streams.start();
    BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
    String line;
    while ((line = in.readLine()) != null && !line.trim().equals("stop")) {
      // Only "stop" (or the parent going away) ends the run.
    }
    streams.close(Duration.ofSeconds(30));
  }

  private static JsonNode parse(byte[] value) {
    try {
      return value == null ? null : JSON.readTree(value);
    } catch (java.io.IOException e) {
      return null; // as ksqlDB: a record that cannot be deserialized is skipped
    }
  }

  private static byte[] project(JsonNode v) {
    ObjectNode out = JSON.createObjectNode();
    out.put("PAGE", v.path("PAGE").asText().toUpperCase(Locale.ROOT));
    out.put("MS", v.path("MS").asLong());
    return write(out);
  }

  private static byte[] enrich(JsonNode v, byte[] user) {
    JsonNode u = parse(user);
    ObjectNode out = JSON.createObjectNode();
    out.put("PAGE", v.path("PAGE").asText());
    out.put("MS", v.path("MS").asLong());
    out.put("NAME", u == null ? null : u.path("NAME").asText());
    out.put("REGION", u == null ? null : u.path("REGION").asText());
    return write(out);
  }

  private static byte[] total(long[] acc) {
    ObjectNode out = JSON.createObjectNode();
    out.put("N", acc[0]);
    out.put("TOTAL", acc[1]);
    return write(out);
  }

  private static byte[] windowedKey(String key, long start) {
    byte[] k = key.getBytes(StandardCharsets.UTF_8);
    return ByteBuffer.allocate(k.length + 8).put(k).putLong(start).array();
  }

  private static byte[] write(JsonNode node) {
    try {
      return JSON.writeValueAsBytes(node);
    } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
      throw new IllegalStateException(e);
    }
  }

  /** The window's accumulator (count, sum) as 16 bytes. */
  static final class CountSumSerde implements Serde<long[]> {
    @Override
    public Serializer<long[]> serializer() {
      return (topic, acc) -> acc == null ? null
          : ByteBuffer.allocate(16).putLong(acc[0]).putLong(acc[1]).array();
    }

    @Override
    public Deserializer<long[]> deserializer() {
      return (topic, bytes) -> {
        if (bytes == null) {
          return null;
        }
        ByteBuffer b = ByteBuffer.wrap(bytes);
        return new long[] {b.getLong(), b.getLong()};
      };
    }
  }
}

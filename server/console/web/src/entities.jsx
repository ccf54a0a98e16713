// ksqlDB's /ksql entities as tables: what a statement answered.
import { Table } from "./common.jsx";

export function Fields({ fields }) {
  return (
    <Table
      testid="fields"
      columns={[
        { title: "Field", get: (f) => f.name },
        { title: "Type", get: (f) => typeText(f.schema) + (f.type === "KEY" ? " (key)" : f.type === "HEADER" ? " (header)" : "") },
      ]}
      rows={fields}
    />
  );
}

export function typeText(schema) {
  if (!schema) return "";
  if (schema.type === "ARRAY") return `ARRAY<${typeText(schema.memberSchema)}>`;
  if (schema.type === "MAP") return `MAP<STRING, ${typeText(schema.memberSchema)}>`;
  if (schema.type === "STRUCT") return `STRUCT<${(schema.fields || []).map((f) => `${f.name} ${typeText(f.schema)}`).join(", ")}>`;
  return schema.type;
}

export function EntityView({ entity }) {
  const type = entity["@type"];
  if (type === "currentStatus") {
    return <p class="ok" data-testid="status">{entity.commandStatus?.message || entity.commandStatus?.status}</p>;
  }
  if (type === "streams" || type === "tables") {
    const rows = entity[type];
    return <Table testid={type} columns={[
      { title: "Name", get: (s) => <a href={`#/sources/${encodeURIComponent(s.name)}`}>{s.name}</a> },
      { title: "Topic", get: (s) => s.topic }, { title: "Key format", get: (s) => s.keyFormat },
      { title: "Value format", get: (s) => s.valueFormat }, { title: "Windowed", get: (s) => s.isWindowed ?? false },
    ]} rows={rows} />;
  }
  if (type === "queries") {
    return <Table columns={[
      { title: "Query", get: (q) => <a href={`#/queries/${encodeURIComponent(q.id)}`}>{q.id}</a> },
      { title: "Type", get: (q) => q.queryType }, { title: "State", get: (q) => q.state },
      { title: "Sinks", get: (q) => (q.sinks || []).join(", ") }, { title: "SQL", get: (q) => q.queryString },
    ]} rows={entity.queries} />;
  }
  if (type === "sourceDescription") return <SourceSummary d={entity.sourceDescription} />;
  if (type === "kafka_topics") {
    return <Table columns={[
      { title: "Topic", get: (t) => <a href={`#/topics/${encodeURIComponent(t.name)}`}>{t.name}</a> },
      { title: "Partitions", get: (t) => t.replicaInfo?.length }, { title: "Replicas", get: (t) => (t.replicaInfo || [])[0] },
    ]} rows={entity.topics} />;
  }
  if (type === "type_list") {
    return <Table columns={[{ title: "Type", get: (t) => t[0] }, { title: "Schema", get: (t) => typeText(t[1]) }]}
      rows={Object.entries(entity.types || {})} />;
  }
  if (type === "properties") {
    return <Table columns={["name", "scope", "value"]} rows={entity.properties} />;
  }
  if (type === "queryDescription") {
    const q = entity.queryDescription;
    return (
      <div>
        <p><a href={`#/queries/${encodeURIComponent(q.id)}`}>{q.id}</a> · {q.state}</p>
        <pre class="plan">{q.executionPlan}</pre>
      </div>
    );
  }
  if (type === "function_names") {
    return <Table columns={["name", "category"]} rows={entity.functions} />;
  }
  if (type === "warning_entity") return <p class="warning">{entity.message}</p>;
  return <pre class="json">{JSON.stringify(entity, null, 2)}</pre>;
}

export function SourceSummary({ d }) {
  return (
    <div class="source-summary">
      <dl class="facts" data-testid="source-facts">
        <dt>Name</dt><dd>{d.name}</dd>
        <dt>Type</dt><dd>{d.type}</dd>
        <dt>Topic</dt><dd><a href={`#/topics/${encodeURIComponent(d.topic)}`}>{d.topic}</a></dd>
        <dt>Key format</dt><dd>{d.keyFormat}</dd>
        <dt>Value format</dt><dd>{d.valueFormat}</dd>
        <dt>Partitions</dt><dd>{d.partitions}</dd>
        <dt>Replication</dt><dd>{d.replication}</dd>
        {d.windowType && <><dt>Window</dt><dd>{d.windowType}</dd></>}
        {d.timestamp && <><dt>Timestamp column</dt><dd>{d.timestamp}</dd></>}
        {d.statistics && <><dt>Statistics</dt><dd><pre>{d.statistics}</pre></dd></>}
        {d.errorStats && <><dt>Errors</dt><dd><pre>{d.errorStats}</pre></dd></>}
        {d.logStartOffsets && <><dt>Log start offsets</dt><dd>{JSON.stringify(d.logStartOffsets)}</dd></>}
      </dl>
      <Fields fields={d.fields} />
      {(d.readQueries?.length > 0 || d.writeQueries?.length > 0) && (
        <Table columns={[
          { title: "Query", get: (q) => <a href={`#/queries/${encodeURIComponent(q.id)}`}>{q.id}</a> },
          { title: "Role", get: (q) => (d.writeQueries.includes(q) ? "writes" : "reads") },
          { title: "State", get: (q) => q.state }, { title: "SQL", get: (q) => q.queryString },
        ]} rows={[...d.writeQueries, ...d.readQueries]} />
      )}
      {(d.queryRuntime || []).length > 0 && (
        <Table columns={[
          { title: "Query", get: (r) => r.queryId }, { title: "Lag", get: (r) => r.lag },
          { title: "Messages/s here", get: (r) => r.localMessagesPerSec },
          { title: "Partitions by node", get: (r) => Object.entries(r.partitionsByNode).map(([n, p]) => `${n}: ${p.join(", ")}`).join("; ") },
        ]} rows={d.queryRuntime} />
      )}
      {d.statement && <pre class="statement">{d.statement}</pre>}
    </div>
  );
}

// The console's pages besides the SQL editor: sources, queries (with their topology),
// topics (with a message browser), consumer groups and cluster nodes, connectors, and the
// schema registry.
import { useState } from "preact/hooks";
import { getJson, ksql } from "./api.js";
import { Table, Loaded, Section, ErrorBox, useLoad, time } from "./common.jsx";
import { SourceSummary, typeText } from "./entities.jsx";
import { Topology } from "./topology.jsx";

const q = encodeURIComponent;

async function list(statement, key) {
  const [entity] = await ksql(statement);
  return entity[key] || [];
}

export function SourcesPage() {
  const [state, reload] = useLoad(async () => {
    const [streams, tables, types] = await Promise.all([
      list("SHOW STREAMS EXTENDED;", "sourceDescriptions"),
      list("SHOW TABLES EXTENDED;", "sourceDescriptions"),
      ksql("SHOW TYPES;").then(([e]) => Object.entries(e.types || {})),
    ]);
    return { streams, tables, types };
  });
  const columns = [
    { title: "Name", get: (s) => <a href={`#/sources/${q(s.name)}`}>{s.name}</a> },
    { title: "Topic", get: (s) => <a href={`#/topics/${q(s.topic)}`}>{s.topic}</a> },
    { title: "Partitions", get: (s) => s.partitions },
    { title: "Key / value format", get: (s) => `${s.keyFormat} / ${s.valueFormat}` },
    { title: "Columns", get: (s) => s.fields.length },
    { title: "Queries (write / read)", get: (s) => `${s.writeQueries.length} / ${s.readQueries.length}` },
    { title: "Statistics", get: (s) => s.statistics.split("\n")[0] },
  ];
  return (
    <Loaded state={state}>
      {(d) => (
        <>
          <Section title={`Streams (${d.streams.length})`} actions={<button onClick={reload}>Refresh</button>}>
            <Table testid="streams" columns={columns} rows={d.streams} empty="No streams yet: CREATE STREAM in the SQL editor." />
          </Section>
          <Section title={`Tables (${d.tables.length})`}>
            <Table testid="tables" columns={columns} rows={d.tables} empty="No tables." />
          </Section>
          <Section title={`Types (${d.types.length})`}>
            <Table columns={[{ title: "Type", get: (t) => t[0] }, { title: "Schema", get: (t) => typeText(t[1]) }]} rows={d.types} empty="No custom types." />
          </Section>
        </>
      )}
    </Loaded>
  );
}

export function SourcePage({ name }) {
  const [state, reload] = useLoad(async () => {
    const [entity] = await ksql(`DESCRIBE \`${name.replace(/`/g, "``")}\` EXTENDED;`);
    return entity.sourceDescription;
  }, [name]);
  return (
    <Loaded state={state}>
      {(d) => (
        <Section title={`${d.type === "TABLE" ? "Table" : "Stream"} ${d.name}`} actions={<button onClick={reload}>Refresh</button>}>
          <SourceSummary d={d} />
        </Section>
      )}
    </Loaded>
  );
}

export function QueriesPage() {
  const [state, reload] = useLoad(() => list("SHOW QUERIES EXTENDED;", "queries").catch(() => list("SHOW QUERIES;", "queries")));
  return (
    <Section title="Queries" actions={<button onClick={reload}>Refresh</button>}>
      <Loaded state={state}>
        {(rows) => (
          <Table testid="queries" columns={[
            { title: "Query", get: (r) => (r.queryType === "PERSISTENT" ? <a href={`#/queries/${q(r.id)}`}>{r.id}</a> : r.id) },
            { title: "Type", get: (r) => r.queryType }, { title: "State", get: (r) => r.state },
            { title: "Sinks", get: (r) => (r.sinks || []).join(", ") }, { title: "SQL", get: (r) => r.queryString },
          ]} rows={rows} empty="No queries are running." />
        )}
      </Loaded>
    </Section>
  );
}

export function QueryPage({ id }) {
  const [state, reload] = useLoad(async () => {
    const [[entity], topology] = await Promise.all([ksql(`EXPLAIN ${id};`), getJson(`/console/api/queries/${q(id)}/topology`)]);
    return { d: entity.queryDescription, topology };
  }, [id]);
  return (
    <Loaded state={state}>
      {({ d, topology }) => (
        <>
          <Section title={`Query ${d.id}`} actions={<button onClick={reload}>Refresh</button>}>
            <dl class="facts">
              <dt>State</dt><dd data-testid="query-state">{d.state}</dd>
              <dt>Type</dt><dd>{d.queryType}</dd>
              <dt>Sources</dt><dd>{d.sources.map((s) => <a href={`#/sources/${q(s)}`}>{s} </a>)}</dd>
              <dt>Sinks</dt><dd>{d.sinks.map((s) => <a href={`#/sources/${q(s)}`}>{s} </a>)}</dd>
              {(d.queryErrors || []).length > 0 && <><dt>Errors</dt><dd><pre>{d.queryErrors.map((e) => JSON.stringify(e)).join("\n")}</pre></dd></>}
            </dl>
            <pre class="statement">{d.statementText}</pre>
          </Section>
          <Section title="Topology">
            <Topology graph={topology} />
          </Section>
          <Section title="Execution plan">
            <pre class="plan">{d.executionPlan}</pre>
          </Section>
        </>
      )}
    </Loaded>
  );
}

export function TopicsPage() {
  const [showInternal, setShowInternal] = useState(false);
  const [state, reload] = useLoad(() => getJson("/console/api/topics"));
  return (
    <Section title="Topics" actions={<>
      <label><input type="checkbox" checked={showInternal} onChange={(e) => setShowInternal(e.target.checked)} /> internal topics</label>
      <button onClick={reload}>Refresh</button>
    </>}>
      <Loaded state={state}>
        {(d) => (
          <Table testid="topics" columns={[
            { title: "Topic", get: (t) => <a href={`#/topics/${q(t.name)}`}>{t.name}</a> },
            { title: "Partitions", get: (t) => t.partitions.length },
            { title: "Records", get: (t) => t.records },
            { title: "Offsets (start – end)", get: (t) => t.partitions.map((p) => `${p.partition}: ${p.beginOffset}–${p.endOffset}`).join(", ") },
            { title: "Streams / tables", get: (t) => t.sources.map((s) => s.name).join(", ") },
            { title: "Cleanup", get: (t) => t.config["cleanup.policy"] || "" },
          ]} rows={d.topics.filter((t) => showInternal || !t.internal)} empty="No topics." />
        )}
      </Loaded>
    </Section>
  );
}

export function TopicPage({ name }) {
  const [state, reload] = useLoad(async () => (await getJson("/console/api/topics")).topics.find((t) => t.name === name) || null, [name]);
  return (
    <>
      <Section title={`Topic ${name}`} actions={<button onClick={reload}>Refresh</button>}>
        {state.error && <ErrorBox error={state.error} />}
        {!state.loading && !state.error && !state.data && <ErrorBox error={`Topic ${name} does not exist`} />}
        {state.data && (
          <>
            <p>
              {state.data.sources.length > 0 && <>Declared as {state.data.sources.map((s) => <a href={`#/sources/${q(s.name)}`}>{s.type} {s.name} </a>)}· </>}
              {state.data.replicas} replica{state.data.replicas === 1 ? "" : "s"}
              {Object.keys(state.data.config).length > 0 && <> · {Object.entries(state.data.config).map(([k, v]) => `${k}=${v}`).join(", ")}</>}
            </p>
            <Table testid="partitions" columns={[
              { title: "Partition", get: (p) => p.partition }, { title: "Start offset", get: (p) => p.beginOffset },
              { title: "End offset", get: (p) => p.endOffset }, { title: "Records", get: (p) => p.records },
            ]} rows={state.data.partitions} />
          </>
        )}
      </Section>
      {state.data && <MessageBrowser topic={name} partitions={state.data.partitions.length} />}
    </>
  );
}

function MessageBrowser({ topic, partitions }) {
  const [form, setForm] = useState({ partition: 0, from: "beginning", offset: "", timestamp: "", limit: 20 });
  const [page, setPage] = useState(null);
  const [error, setError] = useState(null);
  const set = (k) => (e) => setForm({ ...form, [k]: e.target.value });

  async function load(params) {
    setError(null);
    try {
      const search = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== "" && v !== null));
      setPage(await getJson(`/console/api/topics/${q(topic)}/messages?${search}`));
    } catch (err) {
      setError(err);
    }
  }
  const view = () => {
    const ts = form.from === "timestamp" ? Date.parse(form.timestamp.endsWith("Z") ? form.timestamp : form.timestamp + "Z") : "";
    load({ partition: form.partition, from: form.from, offset: form.offset, timestamp: Number.isNaN(ts) ? "" : ts, limit: form.limit });
  };
  const at = (offset) => load({ partition: page.partition, from: "offset", offset, limit: page.limit });

  return (
    <Section title="Messages">
      <div class="toolbar" data-testid="browser-form">
        <label>Partition <select value={form.partition} onChange={set("partition")} data-testid="partition">
          {Array.from({ length: partitions }, (_, p) => <option value={p}>{p}</option>)}
        </select></label>
        <label>From <select value={form.from} onChange={set("from")} data-testid="from">
          <option value="beginning">beginning</option><option value="end">end</option>
          <option value="offset">offset</option><option value="timestamp">timestamp</option>
        </select></label>
        {form.from === "offset" && <label>Offset <input type="number" min="0" value={form.offset} onInput={set("offset")} data-testid="offset" /></label>}
        {form.from === "timestamp" && <label>Timestamp (UTC) <input type="text" placeholder="2024-01-01T00:00:00Z" value={form.timestamp} onInput={set("timestamp")} data-testid="timestamp" /></label>}
        <label>Count <input type="number" min="1" max="500" value={form.limit} onInput={set("limit")} data-testid="limit" /></label>
        <button class="primary" onClick={view} data-testid="view">View messages</button>
      </div>
      {error && <ErrorBox error={error} />}
      {page && (
        <>
          <div class="toolbar">
            <button disabled={page.previousOffset === null} onClick={() => at(page.previousOffset)} data-testid="previous">‹ Previous</button>
            <button disabled={page.nextOffset === null} onClick={() => at(page.nextOffset)} data-testid="next">Next ›</button>
            <span class="muted" data-testid="page-info">
              Partition {page.partition}: offsets {page.records.length ? `${page.records[0].offset}–${page.records[page.records.length - 1].offset}` : "none"} of {page.beginOffset}–{page.endOffset - 1}
            </span>
          </div>
          <Table testid="messages" columns={[
            { title: "Offset", get: (r) => r.offset },
            { title: "Timestamp", get: (r) => time(r.timestamp) },
            { title: "Key", get: (r) => <Decoded text={r.key} format={r.keyFormat} /> },
            { title: "Value", get: (r) => <Decoded text={r.value} format={r.valueFormat} /> },
            { title: "Headers", get: (r) => r.headers.map((h) => `${h.key}: ${h.value ?? "null"}`).join(", ") },
          ]} rows={page.records} empty="No messages from there." />
        </>
      )}
    </Section>
  );
}

function Decoded({ text, format }) {
  if (text === null) return <span class="null">null</span>;
  return <span><span class="payload">{text}</span>{format && <span class="format">{format}</span>}</span>;
}

export function GroupsPage() {
  const [state, reload] = useLoad(async () => {
    const [groups, cluster] = await Promise.all([getJson("/console/api/groups"), getJson("/clusterStatus")]);
    return { groups: groups.groups, cluster: cluster.clusterStatus };
  });
  return (
    <Loaded state={state}>
      {(d) => (
        <>
          <Section title="Consumer groups" actions={<button onClick={reload}>Refresh</button>}>
            {d.groups.length === 0 && <p class="muted">No consumer groups: no persistent query runs.</p>}
            {d.groups.map((g) => (
              <div class="group" data-testid="group">
                <h3>{g.group} <span class="muted">· <a href={`#/queries/${q(g.queryId)}`}>{g.queryId}</a> · {g.state} · lag <span data-testid="group-lag">{g.lag}</span></span></h3>
                <Table testid="group-partitions" columns={[
                  { title: "Topic", get: (p) => p.topic }, { title: "Partition", get: (p) => p.partition },
                  { title: "Committed offset", get: (p) => p.committedOffset }, { title: "End offset", get: (p) => p.endOffset },
                  { title: "Lag", get: (p) => p.lag },
                ]} rows={g.partitions} />
                <Table columns={[
                  { title: "Member", get: (m) => m[0] }, { title: "Active partitions", get: (m) => m[1].active.join(", ") },
                  { title: "Standby tasks", get: (m) => m[1].standby.join(", ") },
                ]} rows={Object.entries(g.members)} />
              </div>
            ))}
          </Section>
          <Section title="Nodes">
            <Table testid="nodes" columns={[
              { title: "Node", get: (n) => n[0] }, { title: "Alive", get: (n) => n[1].hostAlive },
              { title: "Last update", get: (n) => time(n[1].lastStatusUpdateMs) },
              { title: "Active tasks", get: (n) => tasks(n[1].activeStandbyPerQuery, "active") },
              { title: "Standby tasks", get: (n) => tasks(n[1].activeStandbyPerQuery, "standBy") },
            ]} rows={Object.entries(d.cluster || {})} />
          </Section>
        </>
      )}
    </Loaded>
  );
}

function tasks(perQuery, kind) {
  return Object.entries(perQuery || {}).map(([query, s]) => {
    const parts = s[kind + "Partitions"] || [];
    return parts.length ? `${query}: ${parts.map((p) => `${p.topic}-${p.partition}`).join(", ")}` : null;
  }).filter(Boolean).join("; ");
}

export function ConnectorsPage() {
  const [state, reload] = useLoad(async () => Object.values(await getJson("/connectors?expand=status&expand=info")));
  return (
    <Section title="Connectors" actions={<button onClick={reload}>Refresh</button>}>
      <Loaded state={state}>
        {(rows) => (
          <Table testid="connectors" columns={[
            { title: "Name", get: (c) => c.info?.name || c.status?.name }, { title: "Type", get: (c) => c.info?.type },
            { title: "Class", get: (c) => c.info?.config?.["connector.class"] },
            { title: "State", get: (c) => c.status?.connector?.state },
            { title: "Tasks", get: (c) => (c.status?.tasks || []).map((t) => `${t.id}: ${t.state}`).join(", ") },
            { title: "Topics", get: (c) => c.info?.config?.topic || c.info?.config?.topics || c.info?.config?.["topic.prefix"] },
          ]} rows={rows} empty="No connectors. CREATE SOURCE CONNECTOR … in the SQL editor makes one." />
        )}
      </Loaded>
    </Section>
  );
}

export function SchemasPage() {
  const [state, reload] = useLoad(async () => {
    const subjects = await getJson("/schema-registry/subjects");
    return Promise.all(subjects.map(async (subject) => {
      const versions = await getJson(`/schema-registry/subjects/${q(subject)}/versions`);
      const latest = await getJson(`/schema-registry/subjects/${q(subject)}/versions/latest`);
      return { subject, versions, latest };
    }));
  });
  const [open, setOpen] = useState(null);
  return (
    <Section title="Schema registry" actions={<button onClick={reload}>Refresh</button>}>
      <Loaded state={state}>
        {(rows) => (
          <>
            <Table testid="subjects" onRow={(r) => setOpen(open === r.subject ? null : r.subject)} columns={[
              { title: "Subject", get: (r) => r.subject }, { title: "Versions", get: (r) => r.versions.join(", ") },
              { title: "Latest id", get: (r) => r.latest.id }, { title: "Type", get: (r) => r.latest.schemaType || "AVRO" },
            ]} rows={rows} empty="No subjects: streams and tables in AVRO, PROTOBUF or JSON_SR register theirs." />
            {rows.filter((r) => r.subject === open).map((r) => (
              <pre class="json">{pretty(r.latest.schema)}</pre>
            ))}
          </>
        )}
      </Loaded>
    </Section>
  );
}

function pretty(schema) {
  try {
    return JSON.stringify(JSON.parse(schema), null, 2);
  } catch {
    return schema;
  }
}

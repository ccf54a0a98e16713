// The console's shell: a sidebar of pages, routed by the URL's hash (#/sql, #/topics/x, ...).
import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { SqlPage } from "./editor.jsx";
import { SourcesPage, SourcePage, QueriesPage, QueryPage, TopicsPage, TopicPage, GroupsPage, ConnectorsPage, SchemasPage } from "./pages.jsx";
import { getJson } from "./api.js";
import "./style.css";

const NAV = [
  ["#/sql", "SQL editor"],
  ["#/sources", "Streams & tables"],
  ["#/queries", "Queries"],
  ["#/topics", "Topics"],
  ["#/groups", "Consumer groups"],
  ["#/connectors", "Connectors"],
  ["#/schemas", "Schema registry"],
];

function useHash() {
  const [hash, setHash] = useState(location.hash || "#/sql");
  useEffect(() => {
    const on = () => setHash(location.hash || "#/sql");
    addEventListener("hashchange", on);
    return () => removeEventListener("hashchange", on);
  }, []);
  return hash;
}

// The editor's text and results outlive a visit to another page.
const sqlState = {};

function page(hash) {
  const [, name, arg] = hash.split("/").map((p, i) => (i ? decodeURIComponent(p) : p));
  switch (name) {
    case "sources": return arg ? <SourcePage name={arg} key={arg} /> : <SourcesPage />;
    case "queries": return arg ? <QueryPage id={arg} key={arg} /> : <QueriesPage />;
    case "topics": return arg ? <TopicPage name={arg} key={arg} /> : <TopicsPage />;
    case "groups": return <GroupsPage />;
    case "connectors": return <ConnectorsPage />;
    case "schemas": return <SchemasPage />;
    default: return <SqlPage state={sqlState} />;
  }
}

function App() {
  const hash = useHash();
  const [info, setInfo] = useState(null);
  useEffect(() => { getJson("/info").then((i) => setInfo(i.KsqlServerInfo), () => {}); }, []);
  const current = "#/" + (hash.split("/")[1] || "sql");
  return (
    <div class="shell">
      <nav class="sidebar">
        <div class="brand">streamsql</div>
        {NAV.map(([href, text]) => <a href={href} class={current === href ? "active" : ""}>{text}</a>)}
        {info && (
          <div class="server muted">
            {info.ksqlServiceId}<br />{info.kafkaClusterId}<br />v{info.streamsqlVersion}
          </div>
        )}
      </nav>
      <main class="content">{page(hash)}</main>
    </div>
  );
}

render(<App />, document.getElementById("app"));

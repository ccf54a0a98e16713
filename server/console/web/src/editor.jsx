// The SQL editor: CodeMirror 6 with SQL highlighting; runs a script statement by statement
// (/ksql for statements, /query-stream for SELECT and PRINT) and shows each result; a push
// query streams rows until its LIMIT or Stop; a failing statement's line:column is marked.
import { useEffect, useRef, useState } from "preact/hooks";
import { EditorView, basicSetup } from "codemirror";
import { keymap } from "@codemirror/view";
import { Prec } from "@codemirror/state";
import { sql, StandardSQL } from "@codemirror/lang-sql";
import { setDiagnostics, lintGutter } from "@codemirror/lint";
import { ksql, queryStream, splitStatements, errorPosition, isQuery, ApiError } from "./api.js";
import { Table, cell } from "./common.jsx";
import { EntityView } from "./entities.jsx";

const START = `-- Ctrl-Enter runs the script, one statement after another.
SHOW STREAMS;
`;

export function SqlPage({ state }) {
  const host = useRef(null);
  const view = useRef(null);
  const [results, setResults] = useState(state.results || []);
  const [running, setRunning] = useState(null);
  const [offsetReset, setOffsetReset] = useState(state.offsetReset || "latest");

  useEffect(() => {
    const run = () => { document.getElementById("run-button")?.click(); return true; };
    view.current = new EditorView({
      doc: state.text ?? START,
      extensions: [
        basicSetup,
        lintGutter(),
        sql({ dialect: StandardSQL, upperCaseKeywords: true }),
        Prec.highest(keymap.of([{ key: "Mod-Enter", run }])),
        EditorView.updateListener.of((u) => { if (u.docChanged) state.text = u.state.doc.toString(); }),
      ],
      parent: host.current,
    });
    window.__consoleEditor = view.current; // for the browser tests and the curious
    return () => view.current.destroy();
  }, []);

  useEffect(() => { state.results = results; }, [results]);
  useEffect(() => { state.offsetReset = offsetReset; }, [offsetReset]);

  async function runScript() {
    const editor = view.current;
    const text = editor.state.doc.toString();
    editor.dispatch(setDiagnostics(editor.state, []));
    const out = [];
    setResults([]);
    const properties = { "auto.offset.reset": offsetReset };
    for (const statement of splitStatements(text)) {
      const entry = { statement: statement.text, entities: null, error: null, query: null };
      out.push(entry);
      setResults([...out]);
      try {
        if (isQuery(statement.text)) {
          entry.query = { header: null, rows: [], lines: [], error: null, live: true };
          const handle = queryStream(statement.text, properties, {
            onHeader: (h) => { entry.query.header = h; setResults([...out]); },
            onRow: (r) => { entry.query.rows.push(r); setResults([...out]); },
            onText: (t) => { entry.query.lines.push(t); setResults([...out]); },
            onError: (m) => { entry.query.error = m; setResults([...out]); },
          });
          setRunning(handle);
          try {
            await handle.done;
          } finally {
            entry.query.live = false;
            setRunning(null);
          }
        } else {
          const entities = await ksql(statement.text, properties);
          entry.entities = entities;
        }
      } catch (error) {
        entry.error = error instanceof ApiError ? error.message : String(error);
        if (entry.query) entry.query.live = false;
        mark(editor, statement, entry.error);
        setResults([...out]);
        return;
      }
      setResults([...out]);
    }
  }

  return (
    <div class="sql-page">
      <div class="toolbar">
        <button id="run-button" class="primary" disabled={!!running} onClick={runScript} data-testid="run">Run ▸</button>
        <button disabled={!running} onClick={() => running && running.stop()} data-testid="stop">■ Stop</button>
        <label>
          auto.offset.reset{" "}
          <select value={offsetReset} onChange={(e) => setOffsetReset(e.target.value)} data-testid="offset-reset">
            <option value="latest">latest</option>
            <option value="earliest">earliest</option>
          </select>
        </label>
        <span class="muted">Ctrl-Enter runs</span>
        {running && <span class="live" data-testid="live">● streaming</span>}
      </div>
      <div class="editor" ref={host} data-testid="editor" />
      <div class="results" data-testid="results">
        {results.map((r) => <Result entry={r} />)}
      </div>
    </div>
  );
}

// Underlines the token at the error's line:column (relative to the statement sent).
function mark(editor, statement, message) {
  const at = errorPosition(message);
  const doc = editor.state.doc;
  let from = statement.from;
  if (at) {
    const startLine = doc.lineAt(statement.from);
    const lineNo = Math.min(startLine.number + at.line - 1, doc.lines);
    const line = doc.line(lineNo);
    const base = at.line === 1 ? statement.from : line.from;
    from = Math.min(base + at.column - 1, line.to);
  }
  const word = /^[\w$`'"]+/.exec(doc.sliceString(from, Math.min(from + 200, doc.length)));
  const to = Math.min(doc.length, from + (word ? word[0].length : 1));
  editor.dispatch(setDiagnostics(editor.state, [{ from, to, severity: "error", message }]));
  editor.dispatch({ selection: { anchor: from }, scrollIntoView: true });
}

function Result({ entry }) {
  return (
    <div class="result card" data-testid="result">
      <pre class="statement">{entry.statement}</pre>
      {entry.error && <div class="error" role="alert" data-testid="statement-error">{entry.error}</div>}
      {entry.entities && entry.entities.map((e) => <EntityView entity={e} />)}
      {entry.query && <QueryResult query={entry.query} />}
    </div>
  );
}

function QueryResult({ query }) {
  const header = query.header;
  return (
    <div>
      {header && (
        <p class="muted">
          {header.queryId ? `Query ${header.queryId}` : "Pull query"} · {query.rows.length} row{query.rows.length === 1 ? "" : "s"}
          {query.live ? " · streaming…" : ""}
        </p>
      )}
      {header && (
        <Table
          testid="rows"
          columns={header.columnNames.map((name, i) => ({ title: `${name} ${header.columnTypes?.[i] ?? ""}`, get: (r) => r[i] }))}
          rows={query.rows}
          empty={query.live ? "Waiting for rows…" : "No rows."}
        />
      )}
      {query.lines.length > 0 && <pre class="print">{query.lines.join("\n")}</pre>}
      {query.error && <div class="error" role="alert">{query.error}</div>}
    </div>
  );
}

export { cell };

// Small pieces every page uses: a data table, a loader hook, errors, time formatting.
import { isValidElement } from "preact";
import { useEffect, useState, useCallback } from "preact/hooks";

export function useLoad(load, deps = []) {
  const [state, setState] = useState({ loading: true, data: null, error: null });
  const reload = useCallback(() => {
    setState((s) => ({ ...s, loading: true }));
    load().then(
      (data) => setState({ loading: false, data, error: null }),
      (error) => setState({ loading: false, data: null, error }),
    );
  }, deps);
  useEffect(reload, [reload]);
  return [state, reload];
}

export function Loaded({ state, children }) {
  if (state.error) return <ErrorBox error={state.error} />;
  if (state.data === null) return <p class="muted">Loading…</p>;
  return children(state.data);
}

export function ErrorBox({ error }) {
  return <div class="error" role="alert">{String(error && error.message ? error.message : error)}</div>;
}

export function cell(value) {
  if (value === null || value === undefined) return <span class="null">null</span>;
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

// columns: [{ title, get(row) }] or strings (the row's fields / array positions)
export function Table({ columns, rows, empty = "Nothing here.", testid, onRow, rowKey }) {
  if (!rows || rows.length === 0) return <p class="muted">{empty}</p>;
  const cols = columns.map((c, i) => (typeof c === "string" ? { title: c, get: (r) => (Array.isArray(r) ? r[i] : r[c]) } : c));
  return (
    <div class="table-wrap">
      <table data-testid={testid}>
        <thead>
          <tr>{cols.map((c) => <th>{c.title}</th>)}</tr>
        </thead>
        <tbody>
          {rows.map((r, i) => (
            <tr key={rowKey ? rowKey(r) : i} class={onRow ? "clickable" : ""} onClick={onRow ? () => onRow(r) : undefined}>
              {cols.map((c) => {
                const v = c.get(r);
                return <td>{isValidElement(v) ? v : cell(v)}</td>;
              })}
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

export function time(ms) {
  if (ms === null || ms === undefined || ms < 0) return "";
  return new Date(ms).toISOString().replace("T", " ").replace("Z", " Z");
}

export function Section({ title, children, actions }) {
  return (
    <section class="card">
      <header class="card-head">
        <h2>{title}</h2>
        <div class="actions">{actions}</div>
      </header>
      {children}
    </section>
  );
}

export function link(href, text) {
  return <a href={href}>{text}</a>;
}

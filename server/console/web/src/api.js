// The server's APIs as the page uses them: ksqlDB's REST API (/ksql, /query-stream,
// /close-query, /clusterStatus), Kafka Connect's (/connectors), the schema registry's, and
// the console's own JSON endpoints (/console/api/...). Same origin: the browser sends the
// credentials it was asked for when the page loaded.

export class ApiError extends Error {
  constructor(message, body, status) {
    super(message);
    this.body = body;
    this.status = status;
  }
}

async function answer(response) {
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = text;
  }
  if (!response.ok) {
    const message = (body && body.message) || `${response.status} ${response.statusText}`;
    throw new ApiError(message, body, response.status);
  }
  return body;
}

export async function getJson(path) {
  return answer(await fetch(path, { headers: { Accept: "application/json" } }));
}

export async function ksql(statement, properties = {}) {
  return answer(await fetch("/ksql", {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify({ ksql: statement, streamsProperties: properties }),
  }));
}

// Runs a SELECT (or PRINT) on /query-stream, calling onHeader once and onRow per row as
// they arrive; resolves when the query ends (its LIMIT, a pull query's end, stop()).
// Returns { done, stop }.
export function queryStream(sql, properties, { onHeader, onRow, onError, onText }) {
  const controller = new AbortController();
  let queryId = null;
  const done = (async () => {
    const response = await fetch("/query-stream", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/vnd.ksqlapi.delimited.v1" },
      body: JSON.stringify({ sql, properties }),
      signal: controller.signal,
    });
    if (!response.ok) {
      await answer(response);
      return;
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let first = true;
    const line = (text) => {
      if (!text.trim()) return;
      let value;
      try {
        value = JSON.parse(text);
      } catch {
        onText(text); // PRINT's plain lines
        return;
      }
      if (first && value && !Array.isArray(value) && value.columnNames) {
        queryId = value.queryId || null;
        onHeader(value);
      } else if (Array.isArray(value)) {
        onRow(value);
      } else if (value && value["@type"] && value["@type"].includes("error")) {
        onError(value.message || JSON.stringify(value));
      } else if (value && value.finalMessage) {
        // the end of a query with a LIMIT
      } else {
        onText(text);
      }
      first = false;
    };
    try {
      for (;;) {
        const { value, done: ended } = await reader.read();
        if (ended) break;
        buffer += decoder.decode(value, { stream: true });
        const lines = buffer.split("\n");
        buffer = lines.pop();
        lines.forEach(line);
      }
      line(buffer);
    } catch (error) {
      if (error.name !== "AbortError") throw error;
    }
  })();
  const stop = async () => {
    if (queryId) {
      try {
        await fetch("/close-query", {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ queryId }),
        });
      } catch {
        // the query may have ended meanwhile; aborting below ends our side anyway
      }
    }
    controller.abort();
  };
  return { done, stop };
}

// Statements of a script with where each starts, so an error's line:column can be found
// in the editor. Quotes, backquoted names and comments may hold ';'.
export function splitStatements(text) {
  const out = [];
  let start = 0;
  let i = 0;
  const n = text.length;
  while (i < n) {
    const c = text[i];
    if (c === "'" || c === "`" || c === '"') {
      i += 1;
      while (i < n) {
        if (text[i] === c) {
          if (text[i + 1] === c) { i += 2; continue; }
          break;
        }
        i += 1;
      }
      i += 1;
    } else if (c === "-" && text[i + 1] === "-") {
      while (i < n && text[i] !== "\n") i += 1;
    } else if (c === "/" && text[i + 1] === "*") {
      const end = text.indexOf("*/", i + 2);
      i = end < 0 ? n : end + 2;
    } else if (c === ";") {
      push(start, i);
      i += 1;
      start = i;
    } else {
      i += 1;
    }
  }
  push(start, n);
  return out;

  function push(from, to) {
    const piece = text.slice(from, to);
    const stripped = piece.replace(/--[^\n]*/g, "").replace(/\/\*[\s\S]*?\*\//g, "");
    if (!stripped.trim()) return;
    const lead = piece.length - piece.trimStart().length;
    out.push({ text: piece.trim() + ";", from: from + lead });
  }
}

// "line L:C: ..." of a ksqlDB error, as {line, column} (1-based), or null.
export function errorPosition(message) {
  const found = /line (\d+):(\d+)/.exec(message || "");
  return found ? { line: Number(found[1]), column: Number(found[2]) } : null;
}

export function isQuery(statement) {
  const head = statement.replace(/^(\s|--[^\n]*\n|\/\*[\s\S]*?\*\/)*/, "");
  return /^(SELECT|PRINT)\b/i.test(head);
}

// A persistent query's topology as an SVG: topics and stages laid out left to right by
// dagre (sources, stages, repartition and changelog topics, sink).
import dagre from "@dagrejs/dagre";

const KIND_LABEL = { source: "source topic", sink: "sink topic", repartition: "repartition topic", changelog: "changelog topic", topic: "topic", stage: "stage" };
const CHAR = 7.2;

export function Topology({ graph }) {
  if (!graph.nodes.length) return <p class="muted">No stages run on this node.</p>;
  const g = new dagre.graphlib.Graph({ multigraph: true });
  g.setGraph({ rankdir: "TB", nodesep: 30, ranksep: 46, marginx: 12, marginy: 12 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const n of graph.nodes) {
    const lines = nodeLines(n, graph.queryId);
    const width = Math.max(...lines.map((l) => l.length)) * CHAR + 24;
    g.setNode(n.id, { width, height: 18 * lines.length + 16, lines, kind: n.kind, title: n.label });
  }
  graph.edges.forEach((e, i) => {
    const label = e.label ? `store ${e.label}` : "";
    g.setEdge(e.from, e.to, { label, width: label.length * CHAR, height: label ? 14 : 0, labelpos: "r", labeloffset: 6 }, String(i));
  });
  dagre.layout(g);
  const { width, height } = g.graph();
  return (
    <div class="topology">
      <svg width={width} height={height} viewBox={`0 0 ${width} ${height}`} data-testid="topology" role="img" aria-label={`Topology of ${graph.queryId}`}>
        <defs>
          <marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">
            <path d="M 0 0 L 10 5 L 0 10 z" fill="#7a8699" />
          </marker>
        </defs>
        {g.edges().map((e) => {
          const edge = g.edge(e);
          const d = edge.points.map((p, i) => `${i ? "L" : "M"}${p.x},${p.y}`).join(" ");
          return (
            <g class="edge">
              <path d={d} marker-end="url(#arrow)" class={g.node(e.w).kind === "changelog" ? "dashed" : ""} />
              {edge.label && <text x={edge.x} y={edge.y + 4} text-anchor="middle" class="edge-label">{edge.label}</text>}
            </g>
          );
        })}
        {g.nodes().map((id) => {
          const n = g.node(id);
          const x = n.x - n.width / 2;
          const y = n.y - n.height / 2;
          const shape = (
            <g class={`node ${n.kind}`} data-kind={n.kind}>
              <title>{n.title}</title>
              <rect x={x} y={y} width={n.width} height={n.height} rx={n.kind === "stage" ? 4 : 14} />
              {n.lines.map((l, i) => (
                <text x={n.x} y={y + 20 + i * 18} text-anchor="middle" class={i === 0 ? "kind" : ""}>{l}</text>
              ))}
            </g>
          );
          // A topic's node opens the topic's page (its offsets and messages).
          return n.kind === "stage" ? shape : <a href={`#/topics/${encodeURIComponent(n.title)}`}>{shape}</a>;
        })}
      </svg>
      <p class="legend muted">
        {["source", "stage", "repartition", "changelog", "sink"].map((k) => <span class={`swatch ${k}`}>{KIND_LABEL[k]}</span>)}
      </p>
    </div>
  );
}

// An internal topic's name without the query's prefix (the full name is the node's title).
function shortName(name, queryId) {
  const at = name.indexOf(`query_${queryId}-`);
  return at >= 0 ? name.slice(at + `query_${queryId}-`.length) : name;
}

function nodeLines(n, queryId) {
  const lines = [KIND_LABEL[n.kind] || n.kind, n.kind === "stage" ? n.label : shortName(n.label, queryId)];
  if (n.source && n.kind !== "stage") lines.push(`(${n.source})`);
  if (n.kind === "stage" && n.source) lines.push(n.source);
  return lines;
}

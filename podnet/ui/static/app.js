// podnet's web view: one page, no library. The server pushes the whole view (topology and service maps)
// over Server-Sent Events whenever the cluster moves; the matrix, explanations and traces are asked for.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const MESH_DRAWN = 8;  // nodes up to which every tunnel is drawn
const ui = { who: null, view: null, stream: null, edge: null, matrix: null, journey: null };
const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const svgTags = ["svg", "g", "rect", "text", "line", "path", "circle", "title", "tspan", "marker", "defs", "polygon"];
  const node = svgTags.includes(tag) ? document.createElementNS(SVG, tag) : document.createElement(tag);
  if (tag === "svg") node.setAttribute("preserveAspectRatio", "xMinYMin meet");
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children.flat()) if (child !== null && child !== undefined) node.append(child);
  return node;
}

function clear(node) { while (node.firstChild) node.firstChild.remove(); return node; }

async function api(method, path, body) {
  const init = { method, headers: {}, credentials: "same-origin" };
  if (method === "POST") { init.headers["Content-Type"] = "application/json"; init.body = JSON.stringify(body || {}); }
  const response = await fetch(path, init);
  let data = null;
  try { data = await response.json(); } catch (e) { data = { message: response.statusText }; }
  if (response.status === 401 && path !== "/api/login") showLogin();
  return { ok: response.ok, status: response.status, data };
}

function hue(text) { let h = 0; for (const c of text) h = (h * 31 + c.charCodeAt(0)) % 360; return h; }
function nsColour(ns) { return `hsl(${hue(ns)}, 55%, 55%)`; }
function short(text, n) { return text.length > n ? text.slice(0, n - 1) + "…" : text; }

// ---- login and the live stream ------------------------------------------------------------------

function showLogin(message) {
  if (ui.stream) { ui.stream.close(); ui.stream = null; }
  $("login").hidden = false;
  $("logout").hidden = true;
  $("who").textContent = "";
  if (message) $("login-error").textContent = message;
  setLive(false);
}

function setLive(on) { $("live").className = "live " + (on ? "on" : "off"); $("live").textContent = on ? "live" : "offline"; }

function loggedIn(who) {
  ui.who = who;
  $("login").hidden = true;
  $("logout").hidden = false;
  $("who").textContent = who.user + (who.canProbe ? "" : " (read-only)");
  document.body.dataset.canProbe = who.canProbe;
  for (const b of document.querySelectorAll(".probe")) b.hidden = !who.canProbe;
  openStream();
}

function openStream() {
  if (ui.stream) ui.stream.close();
  const stream = new EventSource("/api/events");
  ui.stream = stream;
  stream.addEventListener("open", () => setLive(true));
  stream.addEventListener("state", (event) => { ui.view = JSON.parse(event.data); setLive(true); render(); });
  stream.addEventListener("logout", () => showLogin("the session ended"));
  stream.addEventListener("error", async () => {
    setLive(false);
    if (stream.readyState === EventSource.CLOSED) {
      const who = await api("GET", "/api/whoami");
      if (who.ok) setTimeout(openStream, 1000);
    }
  });
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("login-error").textContent = "";
  const answer = await api("POST", "/api/login", { token: $("token").value });
  $("token").value = "";
  if (answer.ok) loggedIn(answer.data); else $("login-error").textContent = answer.data.message;
});

$("logout").addEventListener("click", async () => { await api("POST", "/api/logout"); showLogin(); });

for (const button of document.querySelectorAll("#tabs button")) {
  button.addEventListener("click", () => showTab(button.dataset.tab));
}

function showTab(tab) {
  for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("active", b.dataset.tab === tab);
  for (const v of document.querySelectorAll(".view")) v.classList.toggle("active", v.id === tab);
  document.body.dataset.tab = tab;
  render();
}

function render() {
  if (!ui.view) return;
  fillNamespaces();
  fillSources();
  renderTopology();
  renderMap();
}

function fillNamespaces() {
  for (const id of ["ns", "matrix-ns"]) {
    const select = $(id);
    const wanted = ui.view.namespaces.join(",");
    if (select.dataset.options === wanted) continue;
    const current = select.value || (ui.view.namespaces.includes("shop") ? "shop" : ui.view.namespaces[0]);
    clear(select).append(...ui.view.namespaces.map((ns) => el("option", { value: ns, text: ns })));
    select.value = current;
    select.dataset.options = wanted;
  }
}

function fillSources() {
  const select = $("journey-src");
  const pods = ui.view.topology.nodes.flatMap((n) => n.pods).filter((p) => p.phase === "Running" && !p.hostNetwork).map((p) => p.key);
  const wanted = pods.join(",");
  if (select.dataset.options === wanted) return;
  const current = select.value;
  clear(select).append(...pods.map((key) => el("option", { value: key, text: key })));
  if (pods.includes(current)) select.value = current;
  select.dataset.options = wanted;
}

// ---- topology -----------------------------------------------------------------------------------

function condition(process) {
  return !process.running ? "stopped" : process.healthy === false ? "unhealthy" : "running";
}

function renderTopology() {
  const topo = ui.view.topology;
  clear($("control")).append(...topo.control.map((p) =>
    el("span", { class: `badge ${condition(p)}`, "data-process": p.name, text: `${p.name} ${condition(p)}` })));
  const svg = clear($("topology-svg"));
  const nodes = topo.nodes;
  const columns = Math.max(1, Math.min(nodes.length, Math.ceil(Math.sqrt(nodes.length * 1.5))));
  const width = 330, gap = 60, listed = 14, square = 14;
  const heights = nodes.map((n) => 104 + (n.pods.length <= listed ? n.pods.length * 17 : Math.ceil(n.pods.length / 18) * (square + 3)));
  const rows = Math.ceil(nodes.length / columns);
  const rowHeight = Array.from({ length: rows }, (_, r) => Math.max(...heights.slice(r * columns, (r + 1) * columns)));
  const place = {};
  let y = 20;
  nodes.forEach((node, i) => {
    const row = Math.floor(i / columns), col = i % columns;
    if (col === 0 && row > 0) y += rowHeight[row - 1] + gap;
    place[node.name] = { x: 20 + col * (width + gap), y, h: heights[i] };
  });
  const total = y + (rowHeight[rows - 1] || 0) + 40 + (nodes.length <= columns ? 40 + columns * 25 : 0);
  svg.setAttribute("viewBox", `0 0 ${20 + columns * (width + gap)} ${total}`);
  // Tunnels hang below the nodes as arcs, so that one between two distant nodes passes no node between.
  const bottom = (name) => ({ x: place[name].x + width / 2, y: place[name].y + place[name].h });
  // Past a handful of nodes a full mesh of arcs hides more than it shows: a line of text says it instead.
  const drawn = nodes.length <= MESH_DRAWN ? topo.tunnels : [];
  if (!drawn.length && topo.tunnels.length) {
    const down = topo.tunnels.filter((t) => !t.up).length;
    svg.append(el("text", { x: 20, y: total - 14, "font-size": 13, fill: "#667085", class: "tunnel-summary",
      text: `${topo.tunnels.length} ${topo.tunnels[0].encapsulation.toUpperCase()} tunnels, a full mesh: ${topo.tunnels.length - down} up, ${down} to a node that is not Ready` }));
  }
  // Each tunnel's packet rate each way, as its sending node counts it ("—" until two reads are in).
  const rate = (value) => (value === null || value === undefined ? "—" : `${value}/s`);
  drawn.forEach((tunnel) => {
    const a = bottom(tunnel.a), b = bottom(tunnel.b);
    const sag = 18 + Math.abs(a.x - b.x) / 12;
    const my = Math.max(a.y, b.y) + sag;
    const rates = `${tunnel.a} → ${rate(tunnel.rates.ab)} · ${tunnel.b} → ${rate(tunnel.rates.ba)}`;
    svg.append(el("path", { class: "tunnel" + (tunnel.up ? "" : " down"), d: `M ${a.x} ${a.y} Q ${(a.x + b.x) / 2} ${my * 2 - Math.max(a.y, b.y)} ${b.x} ${b.y}`,
      fill: "none", "data-tunnel": `${tunnel.a}~${tunnel.b}`, "data-rate-ab": tunnel.rates.ab ?? "", "data-rate-ba": tunnel.rates.ba ?? "" },
      el("title", { text: `${tunnel.encapsulation} tunnel ${tunnel.a} ⇄ ${tunnel.b}\n${rates}` })));
    if (nodes.length <= 6) {
      svg.append(el("text", { x: (a.x + b.x) / 2, y: my + 4, "text-anchor": "middle", "font-size": 11, fill: "#7d8aa5",
        class: "tunnel-label", text: `${tunnel.encapsulation.toUpperCase()} ${tunnel.a} ⇄ ${tunnel.b}: ${rates}` +
          (tunnel.bgp.length ? ` · BGP ${tunnel.bgp[0].toLowerCase()}` : "") }));
    }
  });
  for (const node of nodes) {
    const { x, y: top, h } = place[node.name];
    const rates = node.rates && node.rates.tx !== undefined ? `tunnel ↑ ${node.rates.tx}/s ↓ ${node.rates.rx}/s` : "tunnel rates —";
    const agent = node.agent === false ? "agent stopped" : node.agent ? "agent running" : "agent ?";
    const g = el("g", { class: "node", "data-node": node.name, "data-ready": String(node.ready) },
      el("rect", { class: "node-box", x, y: top, width, height: h, rx: 10 }),
      el("text", { x: x + 12, y: top + 22, "font-weight": 700, "font-size": 16, text: node.name }),
      el("text", { x: x + width - 12, y: top + 22, "text-anchor": "end", "font-weight": 700, "font-size": 12,
        fill: node.ready ? "var(--allowed)" : "var(--denied)", class: "node-status", text: node.ready ? "Ready" : `NotReady ${node.reason || ""}` }),
      el("text", { x: x + 12, y: top + 42, "font-size": 12, fill: "#667085", text: `${node.address || "?"}  pods ${node.podCIDR || "?"}` + (node.bgp.length ?
          `  · BGP ${node.bgp.filter((p) => p.state === "ESTABLISHED").length}/${node.bgp.length} established` : "") }),
      el("text", { x: x + 12, y: top + 60, "font-size": 12, fill: node.agent === false ? "var(--denied)" : "#667085",
        class: "node-agent", text: `${agent} · ${node.processes.filter((p) => condition(p) === "running").length}/${node.processes.length} processes` +
          `${node.processes.filter((p) => condition(p) !== "running").map((p) => ` (${p.name} ${condition(p)})`).join("")} · ${rates}` }),
      el("line", { x1: x + 12, x2: x + width - 12, y1: top + 72, y2: top + 72, stroke: "#e5e7eb" }));
    node.pods.forEach((pod, i) => {
      const ns = pod.key.split("/")[0];
      const tip = el("title", { text: `${pod.key}\n${pod.ip || "no IP"} · ${pod.phase}${pod.ready ? "" : " · not ready"}` });
      const attrs = { class: "pod" + (pod.greyed ? " greyed" : ""), "data-pod": pod.key, "data-greyed": String(pod.greyed) };
      if (node.pods.length <= listed) {
        const py = top + 88 + i * 17;
        g.append(el("g", attrs, tip,
          el("rect", { x: x + 12, y: py - 10, width: 10, height: 10, rx: 2, fill: nsColour(ns) }),
          el("text", { x: x + 28, y: py, "font-size": 12, text: short(pod.key, 34) }),
          el("text", { x: x + width - 12, y: py, "font-size": 11, "text-anchor": "end", fill: "#667085", text: pod.ip || "" })));
      } else {
        const px = x + 12 + (i % 18) * (square + 3), py = top + 80 + Math.floor(i / 18) * (square + 3);
        g.append(el("rect", { ...attrs, x: px, y: py, width: square, height: square, rx: 2, fill: nsColour(ns) }, tip));
      }
    });
    svg.append(g);
  }
}

// ---- service map --------------------------------------------------------------------------------

$("ns").addEventListener("change", () => { ui.edge = null; $("edge-panel").hidden = true; renderMap(); });

function renderMap() {
  const ns = $("ns").value;
  const map = ui.view.maps[ns];
  const svg = clear($("map-svg"));
  if (!map) return;
  const services = map.boxes.filter((b) => b.kind === "service");
  const boxes = map.boxes.filter((b) => b.kind !== "service");
  const servicesOf = {};
  for (const s of services) for (const w of s.selects) (servicesOf[w] = servicesOf[w] || []).push(s);
  for (const s of services) if (!s.selects.length) boxes.push(s);
  // Columns follow the traffic the policies let through (all of it when none was): each box one column
  // right of the furthest box that reaches it, loops cut where a depth-first walk meets them again.
  const allowed = map.edges.filter((e) => e.allowed > 0);
  const rank = layers(boxes.map((b) => b.id), (allowed.length ? allowed : map.edges).map((e) => [e.from, e.to]));
  const columns = {};
  for (const b of boxes) (columns[rank[b.id]] = columns[rank[b.id]] || []).push(b);
  const bw = 250, colGap = 150, rowGap = 36, left = 110;
  const height = (b) => 46 + (servicesOf[b.id] || []).length * 18 + (b.pods ? 16 : 0);
  const place = {};
  let maxY = 0;
  for (const [col, list] of Object.entries(columns)) {
    let y = 90;
    for (const b of list) { place[b.id] = { x: left + Number(col) * (bw + colGap), y, h: height(b) }; y += height(b) + rowGap; }
    maxY = Math.max(maxY, y);
  }
  const width = left + 60 + Object.keys(columns).length * (bw + colGap);
  svg.setAttribute("viewBox", `0 0 ${width} ${maxY + 60}`);
  svg.append(el("defs", {}, ...["allowed", "denied", "mixed"].map((v) =>
    el("marker", { id: `arrow-${v}`, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 12, markerHeight: 12,
      markerUnits: "userSpaceOnUse", orient: "auto-start-reverse" },
      el("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: `var(--${v})` })))));
  const edgeLayer = el("g"), boxLayer = el("g");
  svg.append(edgeLayer, boxLayer);
  for (const b of boxes) {
    const p = place[b.id];
    const g = el("g", { class: "box-group", "data-box": b.id, "data-kind": b.kind },
      el("rect", { class: "box " + b.kind, x: p.x, y: p.y, width: bw, height: p.h, rx: 8 }),
      el("text", { x: p.x + 10, y: p.y + 20, "font-weight": 700, text: short(b.name, 30) }));
    if (b.pods) g.append(el("text", { x: p.x + 10, y: p.y + 38, "font-size": 12, fill: "#667085", text: `${b.ready}/${b.pods.length} pods ready` }));
    if (b.kind === "service") g.append(el("text", { x: p.x + 10, y: p.y + 38, "font-size": 12, fill: "#667085", text: `Service ${b.clusterIP} ${b.ports.join(" ")}` }));
    (servicesOf[b.id] || []).forEach((s, i) => g.append(el("text", { x: p.x + 10, y: p.y + 56 + i * 18, "font-size": 12, fill: "#3056d3",
      "data-service": s.id, text: short(`⬡ svc ${s.name} ${s.clusterIP} ${s.ports.join(" ")}`, 40) })));
    boxLayer.append(g);
  }
  const floor = Math.max(...Object.values(place).map((p) => p.y + p.h));
  // Forward edges to the next column go straight across; longer ones arc over the boxes between, edges
  // back to an earlier column arc under them, and a workload talking to itself loops over its corner.
  map.edges.forEach((e, i) => {
    const a = place[e.from], b = place[e.to];
    if (!a || !b) return;
    const lift = 12 * (i % 4);
    let d, lx, ly;
    if (e.from === e.to) {
      const x = a.x + bw - 30, y = a.y;
      d = `M ${x} ${y} C ${x + 10} ${y - 50}, ${x + 70} ${y - 20}, ${x + 30} ${y + 8}`; lx = x + 40; ly = y - 34;
    } else if (b.x === a.x) {
      const y1 = a.y + a.h / 2 + 6, y2 = b.y + b.h / 2 + 6, out = 50 + lift + Math.abs(y2 - y1) / 6;
      d = `M ${a.x} ${y1} C ${a.x - out} ${y1}, ${b.x - out} ${y2}, ${b.x} ${y2}`; lx = a.x - out * 0.75; ly = (y1 + y2) / 2 + 4;
    } else if (b.x > a.x) {
      const x1 = a.x + bw, y1 = a.y + a.h / 2 - 8, x2 = b.x, y2 = b.y + b.h / 2 - 8;
      if (b.x - a.x > bw + colGap) {
        const top = Math.min(a.y, b.y) - 40 - lift;
        d = `M ${x1 - 40} ${a.y} C ${x1} ${top}, ${x2} ${top}, ${x2 + 40} ${b.y}`; lx = (x1 + x2) / 2; ly = top + 8;
      } else {
        d = `M ${x1} ${y1} C ${x1 + 60} ${y1}, ${x2 - 60} ${y2}, ${x2} ${y2}`; lx = (x1 + x2) / 2; ly = (y1 + y2) / 2 - 6;
      }
    } else {
      const ax = a.x + bw / 2 - 20, bx = b.x + bw / 2 + 20, low = floor + 30 + lift;
      d = `M ${ax} ${a.y + a.h} C ${ax} ${low}, ${bx} ${low}, ${bx} ${b.y + b.h}`; lx = (ax + bx) / 2; ly = low - 2;
    }
    const label = Object.entries(e.ports).map(([port, c]) => `${port.replace("/TCP", "")}${c.allowed ? " ✓" + c.allowed : ""}${c.denied ? " ✗" + c.denied : ""}`).join(" · ");
    const stroke = Math.min(6, 1.5 + Math.log2(1 + e.allowed + e.denied) / 1.5);
    edgeLayer.append(el("g", { class: "edge", "data-from": e.from, "data-to": e.to, "data-verdict": e.verdict,
      "data-allowed": e.allowed, "data-denied": e.denied, onclick: () => { ui.edge = [e.from, e.to]; showEdge(); } },
      el("title", { text: `${e.from} → ${e.to}: ${e.allowed} allowed, ${e.denied} denied` }),
      el("path", { d, stroke: `var(--${e.verdict})`, "stroke-width": stroke, "marker-end": `url(#arrow-${e.verdict})` }),
      el("rect", { x: lx - label.length * 3.1 - 4, y: ly - 11, width: label.length * 6.2 + 8, height: 15, rx: 3, fill: "#fff", opacity: 0.85 }),
      el("text", { x: lx, y: ly, "text-anchor": "middle", "font-size": 11, fill: `var(--${e.verdict})`, text: label })));
  });
  if (ui.edge) showEdge();
}

function layers(ids, edges) {
  const out = Object.fromEntries(ids.map((id) => [id, []]));
  for (const [a, b] of edges) if (a !== b && a in out && b in out) out[a].push(b);
  const incoming = new Set(edges.filter(([a, b]) => a !== b).map(([, b]) => b));
  const state = {}, dag = Object.fromEntries(ids.map((id) => [id, []]));
  const visit = (v) => {
    state[v] = 1;
    for (const w of out[v]) { if (state[w] === 1) continue; dag[v].push(w); if (!state[w]) visit(w); }
    state[v] = 2;
  };
  for (const v of [...ids.filter((id) => !incoming.has(id)), ...ids]) if (!state[v]) visit(v);
  const rank = Object.fromEntries(ids.map((id) => [id, 0]));
  for (let round = 0; round < ids.length; round++) {
    let moved = false;
    for (const v of ids) for (const w of dag[v]) if (rank[w] < rank[v] + 1) { rank[w] = rank[v] + 1; moved = true; }
    if (!moved) break;
  }
  return rank;
}

function describeVerdicts(flow) {
  return Object.entries(flow.verdicts).map(([direction, v]) =>
    el("div", {}, el("span", { class: `verdict-${v.verdict}`, text: `${direction} ${v.verdict}` }),
      ` at ${v.node}: ${v.reason}`, v.policy ? el("code", { text: ` [${v.policy} rule ${v.rule}]` }) : ""));
}

function showEdge() {
  const map = ui.view.maps[$("ns").value];
  const edge = map && map.edges.find((e) => e.from === ui.edge[0] && e.to === ui.edge[1]);
  const panel = $("edge-panel");
  if (!edge) { panel.hidden = true; return; }
  panel.hidden = false;
  clear(panel).append(
    el("h3", { text: `${edge.from} → ${edge.to}` }),
    el("div", {}, el("span", { class: "verdict-allowed", text: `${edge.allowed} allowed` }), " · ",
      el("span", { class: "verdict-denied", text: `${edge.denied} denied` }), " connections"),
    ...edge.flows.slice().reverse().map((f) => el("div", { class: "flow", "data-flow-verdict": f.allowed ? "allowed" : "denied" },
      el("div", {}, el("b", { text: new Date(f.time * 1000).toLocaleTimeString() }),
        ` ${f.srcPod || f.src}:${f.srcPort} → ${f.dstPod || f.dst}:${f.port}/${f.protocol} `,
        el("span", { class: f.allowed ? "verdict-allowed" : "verdict-denied", text: f.allowed ? "allowed" : "denied" })),
      ...describeVerdicts(f))));
}

// ---- the policy matrix --------------------------------------------------------------------------

$("matrix-form").addEventListener("submit", (event) => { event.preventDefault(); loadMatrix(false); });
$("matrix-probe").addEventListener("click", () => loadMatrix(true));

async function loadMatrix(probe) {
  const query = new URLSearchParams({ namespace: $("matrix-ns").value, ports: $("matrix-ports").value,
    protocols: $("matrix-protocols").value, probe: probe ? "1" : "0" });
  $("matrix-status").textContent = probe ? "probing…" : "computing…";
  document.body.dataset.matrix = "loading";
  const answer = await api("GET", `/api/matrix?${query}`);
  if (!answer.ok) { $("matrix-status").textContent = answer.data.message; document.body.dataset.matrix = "error"; return; }
  ui.matrix = answer.data;
  const m = ui.matrix;
  $("matrix-status").textContent = `${m.pods.length} pods · ${m.probed ? "probed" : "policies only"}` +
    (m.probed ? ` · ${m.disagreements} disagreements` : "");
  renderMatrix();
  document.body.dataset.matrix = m.probed ? "probed" : "static";
}

function renderMatrix() {
  const m = ui.matrix;
  const holder = clear($("matrix-grids"));
  const cell = Math.max(10, Math.min(26, Math.floor(620 / Math.max(1, m.pods.length))));
  // One namespace: its pods by name alone.
  const name = (pod) => (m.namespace ? pod.slice(m.namespace.length + 1) : pod);
  const label = Math.min(260, 7 * Math.max(...m.pods.map((p) => name(p).length)));
  const index = Object.fromEntries(m.pods.map((p, i) => [p, i]));
  for (const combo of m.combinations) {
    const size = m.pods.length * cell;
    const svg = el("svg", { class: "canvas grid", "data-port": combo.port, "data-protocol": combo.protocol,
      viewBox: `0 0 ${1.5 * label + size + 20} ${label + size + 40}`, style: `max-width:${1.5 * label + size + 20}px` });
    svg.append(el("text", { x: 8, y: 18, "font-weight": 700, text: `${combo.port}/${combo.protocol}  (rows: from · columns: to)` }));
    m.pods.forEach((p, i) => {
      svg.append(el("text", { x: label - 6, y: 30 + label + i * cell + cell * 0.7, "text-anchor": "end", "font-size": Math.min(12, cell - 2), text: short(name(p), 36) }));
      svg.append(el("text", { transform: `translate(${label + i * cell + cell * 0.7}, ${label + 24}) rotate(-60)`, "font-size": Math.min(12, cell - 2), text: short(name(p), 36) }));
    });
    for (const c of m.cells) {
      if (c.port !== combo.port || c.protocol !== combo.protocol) continue;
      const shown = c.probed === null ? c.policy : c.probed;
      const fill = c.self ? "#c9ccd3" : shown ? "var(--allowed)" : "var(--denied)";
      const rect = el("rect", { class: "cell" + (c.disagree ? " disagree" : ""), x: label + index[c.to] * cell, y: 30 + label + index[c.from] * cell,
        width: cell, height: cell, fill, opacity: m.probed ? 1 : 0.75,
        "data-from": c.from, "data-to": c.to, "data-port": c.port, "data-protocol": c.protocol,
        "data-policy": String(c.policy), "data-probed": c.probed === null ? "" : String(c.probed),
        onclick: (event) => explainCell(c, event.target) },
        el("title", { text: `${c.from} → ${c.to} ${c.port}/${c.protocol}\npolicies: ${c.policy ? "allowed" : "denied"}` +
          (c.probed === null ? "" : `\nprobe: ${c.probed ? "reached" : "no answer"}`) }));
      svg.append(rect);
    }
    holder.append(svg);
  }
}

async function explainCell(c, rect) {
  for (const r of document.querySelectorAll("rect.cell.selected")) r.classList.remove("selected");
  rect.classList.add("selected");
  const panel = $("explain-panel");
  panel.hidden = false;
  clear(panel).append(el("p", { text: "asking…" }));
  const query = new URLSearchParams({ from: c.from, to: c.to, port: c.port, protocol: c.protocol });
  const answer = await api("GET", `/api/explain?${query}`);
  clear(panel);
  if (!answer.ok) { panel.append(el("p", { class: "error", text: answer.data.message })); return; }
  const e = answer.data;
  const side = (name, v) => el("div", { class: "rule", "data-direction": name },
    el("span", { class: v.allowed ? "verdict-allowed" : "verdict-denied", text: `${name}: ${v.allowed ? "allowed" : "denied"}` }),
    el("div", { text: v.reason }), v.policy ? el("code", { class: "deciding", text: `${v.policy} · ${name} rule ${v.rule}` }) : "");
  panel.append(
    el("h3", { text: `${e.from} → ${e.to} ${e.port}/${e.protocol}` }),
    el("p", {}, el("span", { id: "explain-verdict", class: e.allowed ? "verdict-allowed" : "verdict-denied", text: e.allowed ? "allowed" : "denied" }),
      c.probed === null ? "" : ` · probe ${c.probed ? "reached it" : "got no answer"}`),
    side("egress", e.egress), side("ingress", e.ingress),
    el("h3", { text: `flow log: ${e.seen} verdicts` }),
    ...e.flows.map((f) => el("div", { class: "flow" }, el("span", { class: `verdict-${f.verdict}`, text: `${f.direction} ${f.verdict}` }),
      ` at ${f.node}: ${f.reason}`)),
    ...e.unreachable.map((u) => el("p", { class: "error", text: u })));
  if (ui.who.canProbe) {
    panel.append(el("button", { class: "probe", id: "trace-cell", text: "trace this connection", onclick: () => {
      $("journey-src").value = c.from; $("journey-dst").value = c.to; $("journey-port").value = c.port;
      $("journey-protocol").value = c.protocol; showTab("journey"); runTrace();
    } }));
  }
}

// ---- a packet's journey -------------------------------------------------------------------------

$("journey-form").addEventListener("submit", (event) => { event.preventDefault(); runTrace(); });

async function runTrace() {
  $("journey-status").textContent = "tracing…";
  document.body.dataset.journey = "loading";
  const answer = await api("POST", "/api/trace", { src: $("journey-src").value, destination: $("journey-dst").value,
    port: $("journey-port").value, protocol: $("journey-protocol").value });
  if (!answer.ok) { $("journey-status").textContent = answer.data.message; document.body.dataset.journey = "error"; return; }
  ui.journey = answer.data;
  $("journey-status").textContent = `${ui.journey.src} → ${ui.journey.destination}/${ui.journey.protocol}: ` +
    (ui.journey.answered ? "answered" : "no answer");
  renderJourney();
  document.body.dataset.journey = "done";
}

function stageKind(s) {
  if (s.stage === "drop" || s.stage === "reject" || /denied|no answer|rejected/.test(s.detail)) return "bad";
  if (s.stage.endsWith("-encap") || s.stage.endsWith("-decap")) return "wire";
  if (s.stage === "result" || s.stage === "deliver" || /^allowed/.test(s.detail)) return "good";
  return "";
}

function renderJourney() {
  const j = ui.journey;
  const svg = clear($("journey-svg"));
  const lanes = j.nodes.length ? j.nodes : ["?"];
  const laneWidth = 470, boxH = 38, step = 50, top = 50;
  const x = (node) => 20 + Math.max(0, lanes.indexOf(node)) * (laneWidth + 80);
  const height = top + j.stages.length * step + 20;
  svg.setAttribute("viewBox", `0 0 ${40 + lanes.length * (laneWidth + 80)} ${height}`);
  svg.append(el("defs", {}, el("marker", { id: "arrow-step", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 6, markerHeight: 6, orient: "auto" },
    el("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#7d8aa5" }))));
  lanes.forEach((node) => {
    svg.append(el("rect", { x: x(node) - 10, y: 8, width: laneWidth + 20, height: height - 12, rx: 10, fill: "#f7f8fa", stroke: "#e1e4ea" }));
    svg.append(el("text", { x: x(node), y: 32, "font-weight": 700, "font-size": 15, text: node, "data-lane": node }));
  });
  j.stages.forEach((s, i) => {
    const sx = x(s.node), sy = top + i * step;
    if (i > 0) {
      const prev = j.stages[i - 1], px = x(prev.node), py = top + (i - 1) * step + boxH;
      const crossing = prev.node !== s.node;
      svg.append(el("path", { d: crossing ? `M ${px + laneWidth / 2} ${py} C ${px + laneWidth / 2} ${sy}, ${sx + laneWidth / 2} ${py}, ${sx + laneWidth / 2} ${sy}`
        : `M ${sx + 20} ${py} L ${sx + 20} ${sy}`, fill: "none", stroke: crossing ? "#3056d3" : "#7d8aa5", "stroke-width": crossing ? 2.5 : 1.5,
        "stroke-dasharray": crossing ? "6 4" : null, "marker-end": "url(#arrow-step)" }));
    }
    svg.append(el("g", { class: `stage ${stageKind(s)}`, "data-stage": s.stage, "data-n": s.n, "data-node": s.node || "", "data-leg": s.leg,
      onclick: () => showStage(s) },
      el("rect", { x: sx, y: sy, width: laneWidth, height: boxH, rx: 6 }),
      el("text", { x: sx + 10, y: sy + 16, "font-weight": 700, "font-size": 12, text: `${s.n}. ${s.stage}` }),
      el("text", { x: sx + 10, y: sy + 31, "font-size": 11, fill: "#475467", text: short(s.detail, 78) }),
      el("title", { text: s.detail })));
  });
}

function showStage(s) {
  const panel = $("stage-panel");
  panel.hidden = false;
  for (const g of document.querySelectorAll("g.stage.selected")) g.classList.remove("selected");
  document.querySelector(`g.stage[data-n="${s.n}"]`)?.classList.add("selected");
  clear(panel).append(el("h3", { text: `${s.n}. ${s.stage}` }), el("p", { text: `on ${s.node || "the far node"} (${s.leg === "out" ? "on the way" : s.leg === "far" ? "at the destination's node" : "the way back"})` }),
    el("pre", { text: s.detail }));
  if (!s.layers) return;
  // The packet as the stage held it, as Wireshark shows one: a tree of layers (outermost first, each
  // opened), then its bytes.
  panel.append(el("h3", { text: `the packet, ${s.length} bytes` }),
    el("div", { class: "layers" }, ...s.layers.map((layer) => el("details", { class: "layer", open: true, "data-protocol": layer.protocol },
      el("summary", { text: layer.title }),
      el("table", {}, ...layer.fields.map(([name, value]) => el("tr", {}, el("th", { text: name }), el("td", { text: value }))))))),
    el("pre", { class: "hex", text: s.hex.join("\n") }));
}

// ---- start --------------------------------------------------------------------------------------

(async () => {
  const who = await api("GET", "/api/whoami");
  if (who.ok) loggedIn(who.data); else showLogin();
})();

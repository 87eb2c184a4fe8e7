// Live network map: listens to /console/events (Server-Sent Events) and
// redraws the SVG and the path table from each JSON snapshot
// {nodes:[{name,ipv4,online}], paths:[{a,b,kind}]}. Layout matches the
// server's (console_events.go): nodes on a ring, the first at the top.
"use strict";
(function () {
  const svg = document.getElementById("netmap");
  if (!svg || !window.EventSource) return;
  const NS = "http://www.w3.org/2000/svg";
  const size = Number(svg.dataset.size), nodeR = Number(svg.dataset.nodeR), ring = 220;
  const status = document.getElementById("map-status");
  const nodesG = document.getElementById("nodes"), pathsG = document.getElementById("paths");
  const tbody = document.querySelector("#path-table tbody");

  function pos(i, n) {
    if (n === 1) return [size / 2, size / 2];
    const a = 2 * Math.PI * i / n;
    return [size / 2 + ring * Math.sin(a), size / 2 - ring * Math.cos(a)];
  }
  function el(name, attrs, text) {
    const e = document.createElementNS(NS, name);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function draw(g) {
    const at = {};
    nodesG.replaceChildren();
    pathsG.replaceChildren();
    g.nodes.forEach(function (n, i) {
      const p = pos(i, g.nodes.length);
      at[n.name] = p;
      const grp = el("g", { "class": "agent" });
      const c = el("circle", { "class": "node " + (n.online ? "online" : "offline"), cx: p[0], cy: p[1], r: nodeR, "data-name": n.name });
      c.appendChild(el("title", {}, n.name + " (" + n.ipv4 + ") " + (n.online ? "online" : "offline")));
      grp.appendChild(c);
      grp.appendChild(el("text", { "class": "label", x: p[0], y: p[1] + nodeR + 16, "text-anchor": "middle" }, n.name));
      nodesG.appendChild(grp);
    });
    const rows = [];
    g.paths.forEach(function (p) {
      const a = at[p.a], b = at[p.b];
      if (!a || !b) return;
      const line = el("line", { "class": "path " + p.kind, x1: a[0], y1: a[1], x2: b[0], y2: b[1] });
      line.appendChild(el("title", {}, p.a + " – " + p.b + ": " + p.kind));
      pathsG.appendChild(line);
      const tr = document.createElement("tr");
      [p.a, p.b, p.kind].forEach(function (t) { const td = document.createElement("td"); td.textContent = t; tr.appendChild(td); });
      rows.push(tr);
    });
    tbody.replaceChildren.apply(tbody, rows);
    const online = g.nodes.filter(function (n) { return n.online; }).length;
    status.textContent = "Live: " + g.nodes.length + " agents, " + online + " online, " + g.paths.length + " paths. Updated " + new Date().toLocaleTimeString() + ".";
    svg.dataset.updates = String(Number(svg.dataset.updates || 0) + 1);
  }
  const es = new EventSource("/console/events");
  es.addEventListener("snapshot", function (ev) { draw(JSON.parse(ev.data)); });
  es.onerror = function () { status.textContent = "Disconnected from the coordinator; retrying…"; };
})();

// edgecam fleet console: everything it shows comes from the topics and payloads of
// docs/protocol.md, over MQTT on WebSocket; everything it sends is validated against
// docs/schemas/ before it is published. No framework: the DOM is updated at most
// once per animation frame, from what changed since the last one.
"use strict";

(function () {
  const $ = (sel) => document.querySelector(sel);
  const STORAGE_KEY = "edgecam-console.settings";
  const FIELDS = ["broker", "username", "password", "group", "bucket", "key-template", "link-template"];
  const MAX_EVENTS = 100;       // recent events kept per camera
  const MAX_PLATES = 50;        // plate rows kept per camera
  const MAX_INTERVALS = 96;     // count intervals kept per camera and kind
  const MAX_METRICS = 5;        // metrics messages kept per camera
  const MAX_SEEN_IDS = 2000;    // event ids remembered per camera, for duplicates
  const GAP_GRACE_MS = 10000;   // a missing seq is flagged once it stayed missing this long
  const MAX_LATENCIES = 5000;

  const app = {
    client: null,
    settings: {},
    cameras: new Map(),
    selected: null,
    subscribedConfig: [],
    dirtyFleet: new Set(),
    dirtyCamera: false,
    frame: 0,
    pendingTs: [],
    latencies: [],
    eventsShown: 0,
    longTasks: { count: 0, maxMs: 0 },
    groupConfig: undefined,
  };

  // ---- settings ------------------------------------------------------------

  function loadSettings() {
    let saved = {};
    try { saved = JSON.parse(localStorage.getItem(STORAGE_KEY) || "{}"); } catch (_) { saved = {}; }
    // The page's URL fragment (#broker=…&username=…) fills the form too; it is
    // never sent to the server that hosts the page.
    const hash = new URLSearchParams(location.hash.slice(1));
    for (const f of FIELDS) {
      const v = hash.has(f) ? hash.get(f) : saved[f];
      if (v !== undefined && v !== null) $("#" + f).value = v;
    }
    if (!$("#key-template").value) $("#key-template").value = "{camera}/{request_id}{ext}";
    return hash;
  }

  function readSettings() {
    const s = {};
    for (const f of FIELDS) s[f] = $("#" + f).value.trim();
    return s;
  }

  // ---- connection ----------------------------------------------------------

  function setConn(cls, text) {
    const el = $("#conn-state");
    el.className = "conn " + cls;
    el.textContent = text;
  }

  function connect() {
    disconnect();
    app.settings = readSettings();
    try { localStorage.setItem(STORAGE_KEY, JSON.stringify(app.settings)); } catch (_) { /* private mode */ }
    if (!app.settings.broker) { setConn("error", "no broker URL"); return; }
    setConn("connecting", "connecting…");
    const client = mqtt.connect(app.settings.broker, {
      username: app.settings.username || undefined,
      password: app.settings.password || undefined,
      clientId: "edgecam-console-" + Math.random().toString(16).slice(2, 10),
      clean: true,
      protocolVersion: 4,
      reconnectPeriod: 3000,
      connectTimeout: 10000,
    });
    app.client = client;
    client.on("connect", () => {
      setConn("connected", "connected");
      const topics = { "+/status": { qos: 1 }, "+/status/metrics": { qos: 0 }, "+/events/#": { qos: 1 },
        "+/file/response": { qos: 1 }, "+/config/status": { qos: 1 } };
      if (app.settings.group) topics["fleet/" + app.settings.group + "/config"] = { qos: 1 };
      client.subscribe(topics, (err) => { if (err) setConn("error", "subscribe refused: " + err.message); });
      app.subscribedConfig = [];
      if (app.selected) watchConfig(app.selected);
      $("#settings").hidden = true;
    });
    client.on("reconnect", () => setConn("connecting", "reconnecting…"));
    client.on("close", () => { if (app.client === client) setConn("disconnected", "disconnected"); });
    client.on("error", (e) => setConn("error", "error: " + e.message));
    client.on("message", (topic, payload, packet) => onMessage(topic, payload, packet));
    $("#cfg-group-topic").textContent = app.settings.group ? "fleet/" + app.settings.group + "/config" : "no group set";
  }

  function disconnect() {
    if (app.client) {
      const c = app.client;
      app.client = null;
      c.end(true);
      setConn("disconnected", "disconnected");
    }
  }

  // ---- state ---------------------------------------------------------------

  function camera(id) {
    let c = app.cameras.get(id);
    if (!c) {
      c = { id, status: null, metrics: [], lastEvent: null, events: [], plates: [], seen: new Set(),
        seenOrder: [], maxSeq: null, gaps: [], intervals: new Map(), requests: new Map(),
        config: undefined, configEdited: false, configStatus: null };
      app.cameras.set(id, c);
    }
    return c;
  }

  function touch(c) {
    app.dirtyFleet.add(c.id);
    if (c.id === app.selected) app.dirtyCamera = true;
    schedule();
  }

  function parse(payload) {
    if (payload.length === 0) return null;
    try { return JSON.parse(new TextDecoder().decode(payload)); } catch (_) { return undefined; }
  }

  function onMessage(topic, payload, packet) {
    const parts = topic.split("/");
    if (parts[0] === "fleet" && parts[2] === "config" && parts.length === 3) {
      app.groupConfig = parse(payload);
      showOverlay("#cfg-group", app.groupConfig, false);
      return;
    }
    const c = camera(parts[0]);
    const rest = parts.slice(1).join("/");
    const body = parse(payload);
    if (body === undefined) { c.bad = (c.bad || 0) + 1; touch(c); return; }
    if (rest === "status") {
      c.status = body;
    } else if (rest === "status/metrics") {
      if (body) { c.metrics.push({ at: Date.now(), m: body }); if (c.metrics.length > MAX_METRICS) c.metrics.shift(); }
    } else if (parts[1] === "events" && body && Array.isArray(body.events)) {
      for (const e of body.events) onEvent(c, e);
    } else if (rest === "file/response" && body) {
      onResponse(c, body);
    } else if (rest === "config/status") {
      c.configStatus = body;
    } else if (rest === "config") {
      c.config = body;
      if (c.id === app.selected && !c.configEdited) showOverlay("#cfg-camera", body, packet && packet.retain);
    }
    touch(c);
  }

  function onEvent(c, e) {
    if (!e || typeof e.event_id !== "string") return;
    if (c.seen.has(e.event_id)) return; // at least once: a repeat of an event already shown
    c.seen.add(e.event_id);
    c.seenOrder.push(e.event_id);
    if (c.seenOrder.length > MAX_SEEN_IDS) c.seen.delete(c.seenOrder.shift());
    if (Number.isInteger(e.seq)) noteSeq(c, e.seq);
    c.lastEvent = e;
    c.events.unshift(e);
    if (c.events.length > MAX_EVENTS) c.events.pop();
    const p = e.payload || {};
    if (e.kind === "plate") {
      c.plates.unshift(e);
      if (c.plates.length > MAX_PLATES) c.plates.pop();
    } else if ((e.kind === "people_count" || e.kind === "vehicle_count") && p.interval_start) {
      const kind = e.kind === "people_count" ? "people" : "vehicles";
      const key = kind + "|" + p.interval_start;
      const iv = c.intervals.get(key) || { kind, start: Date.parse(p.interval_start), in: 0, out: 0 };
      for (const l of Object.values(p.lines || {})) { iv.in += l.in || 0; iv.out += l.out || 0; }
      c.intervals.set(key, iv);
      trimIntervals(c);
    }
    if (Number.isFinite(e.ts)) app.pendingTs.push(e.ts);
  }

  function trimIntervals(c) {
    for (const kind of ["people", "vehicles"]) {
      const keys = [...c.intervals.entries()].filter(([, v]) => v.kind === kind).sort((a, b) => a[1].start - b[1].start);
      while (keys.length > MAX_INTERVALS) c.intervals.delete(keys.shift()[0]);
    }
  }

  // `seq` is strictly increasing per camera over all kinds: a hole that stays
  // unfilled is an event the camera dropped (and counted), or one still on its way.
  function noteSeq(c, seq) {
    const now = Date.now();
    if (c.maxSeq === null) { c.maxSeq = seq; return; }
    if (seq === c.maxSeq + 1) { c.maxSeq = seq; return; }
    if (seq > c.maxSeq + 1) {
      c.gaps.push({ from: c.maxSeq + 1, to: seq - 1, at: now });
      if (c.gaps.length > 100) c.gaps.shift();
      c.maxSeq = seq;
      return;
    }
    const i = c.gaps.findIndex((g) => seq >= g.from && seq <= g.to);
    if (i >= 0) {
      const g = c.gaps[i];
      const parts = [];
      if (g.from < seq) parts.push({ from: g.from, to: seq - 1, at: g.at });
      if (seq < g.to) parts.push({ from: seq + 1, to: g.to, at: g.at });
      c.gaps.splice(i, 1, ...parts);
    }
  }

  function lastingGaps(c) {
    const now = Date.now();
    return c.gaps.filter((g) => now - g.at >= GAP_GRACE_MS);
  }

  function onResponse(c, r) {
    const id = r.request_id === null ? "(unreadable request)" : String(r.request_id);
    const q = c.requests.get(id) || { id, what: "(another client's request)", created: Date.now() };
    q.state = r.state;
    q.ts = r.ts;
    if (r.state === "uploading") { q.percent = r.percent; q.bytes = r.bytes; q.size = r.size; }
    if (r.state === "done") { q.percent = 100; q.size = r.size; q.sha256 = r.sha256; q.location = r.location; q.reason = undefined; }
    if (r.state === "rejected" || r.state === "failed") {
      q.reason = r.reason;
      q.retrying = r.retrying;
      q.attempt = r.attempt;
    }
    c.requests.set(id, q);
  }

  // ---- requests --------------------------------------------------------------

  function fill(template, values) {
    return template.replace(/\{(\w+)\}/g, (m, k) => (values[k] !== undefined ? values[k] : m));
  }

  function parseTime(text) {
    const t = text.trim();
    const rel = /^-(\d+)\s*(s|m|h)$/.exec(t);
    if (rel) return new Date(Date.now() - Number(rel[1]) * { s: 1e3, m: 60e3, h: 3600e3 }[rel[2]]);
    const d = new Date(t);
    return Number.isNaN(d.getTime()) ? null : d;
  }

  function rfc3339(d) {
    return d.toISOString().replace(/\.\d{3}Z$/, "Z");
  }

  // Builds and publishes a file request; returns an error text, or null when sent.
  function sendRequest(kind, fields) {
    const cam = app.selected;
    if (!app.client || !app.client.connected) return "not connected to the broker";
    if (!cam) return "no camera selected";
    const s = app.settings;
    if (!s.bucket) return "set the S3 bucket under Connection first";
    const requestId = "console-" + Date.now().toString(36) + "-" + Math.random().toString(36).slice(2, 6);
    const body = { request_id: requestId };
    let what, ext;
    if (kind === "snapshot") {
      body.event_id = fields.event.trim();
      what = "snapshot of " + body.event_id;
      ext = ".jpg";
    } else if (kind === "clip") {
      const from = parseTime(fields.from), to = parseTime(fields.to);
      if (!from || !to) return "from and to must be times (RFC 3339, or -30s / -5m / -1h from now)";
      if (to <= from) return "to must be after from";
      body.from = rfc3339(from);
      body.to = rfc3339(to);
      what = "clip " + body.from + " – " + body.to;
      ext = ".mkv";
    } else {
      body.file = fields.file.trim();
      what = "file " + body.file;
      const m = /\.[A-Za-z0-9]{1,8}$/.exec(body.file);
      ext = m ? m[0] : "";
    }
    const key = fill(s["key-template"] || "{camera}/{request_id}{ext}", { camera: cam, request_id: requestId, ext });
    body.s3 = { bucket: s.bucket, key };
    const errors = EdgecamSchema.validate(EDGECAM_SCHEMAS["file-request"], body);
    if (errors.length) return "not a valid request: " + errors.map((e) => (e.path || "request") + " " + e.error).join("; ");
    const c = camera(cam);
    c.requests.set(requestId, { id: requestId, what, state: "sent", created: Date.now(), key, bucket: s.bucket, eventId: body.event_id });
    app.client.publish(cam + "/file/request", JSON.stringify(body), { qos: 1 });
    touch(c);
    return null;
  }

  function linkFor(c, q) {
    const t = app.settings["link-template"];
    if (!t || q.state !== "done") return null;
    return fill(t, { bucket: q.bucket || "", key: q.key || "", location: q.location || "", camera: c.id, request_id: q.id });
  }

  // ---- configuration ---------------------------------------------------------

  function showOverlay(sel, value, _retained) {
    $(sel).value = value === null || value === undefined ? "" : JSON.stringify(value, null, 2);
  }

  function watchConfig(id) {
    if (!app.client) return;
    if (app.subscribedConfig.length) app.client.unsubscribe(app.subscribedConfig);
    app.subscribedConfig = [id + "/config"];
    app.client.subscribe(app.subscribedConfig, { qos: 1 });
  }

  // Validates the editor's JSON and publishes it retained; returns the errors.
  function publishOverlay(topic, text, current) {
    const errors = [];
    if (!app.client || !app.client.connected) return ["not connected to the broker"];
    if (text.trim() === "") {
      if (!confirm("Publish an empty retained message to " + topic + "? The camera reverts to what lies under this overlay.")) return [];
      app.client.publish(topic, "", { qos: 1, retain: true });
      return [];
    }
    let value;
    try { value = JSON.parse(text); } catch (e) { return ["not JSON: " + e.message]; }
    for (const e of EdgecamSchema.validate(EDGECAM_SCHEMAS["remote-config"], value)) {
      errors.push((e.path || "(the overlay)") + ": " + e.error);
    }
    if (current && Number.isInteger(current.version) && Number.isInteger(value.version) && value.version <= current.version) {
      errors.push("version: must be greater than " + current.version + ", the version retained now (the camera refuses older ones)");
    }
    if (errors.length === 0) app.client.publish(topic, JSON.stringify(value), { qos: 1, retain: true });
    return errors;
  }

  function showErrors(sel, errors) {
    const ul = $(sel);
    ul.replaceChildren(...errors.map((e) => { const li = document.createElement("li"); li.textContent = e; return li; }));
  }

  // ---- rendering -------------------------------------------------------------

  function schedule() {
    if (!app.frame) app.frame = requestAnimationFrame(render);
  }

  function render() {
    app.frame = 0;
    for (const id of app.dirtyFleet) renderFleetRow(app.cameras.get(id));
    app.dirtyFleet.clear();
    renderSummary();
    if (app.dirtyCamera && app.selected) renderCamera(app.cameras.get(app.selected));
    app.dirtyCamera = false;
    const now = Date.now();
    for (const ts of app.pendingTs) app.latencies.push(now - ts);
    app.eventsShown += app.pendingTs.length;
    app.pendingTs = [];
    if (app.latencies.length > MAX_LATENCIES) app.latencies.splice(0, app.latencies.length - MAX_LATENCIES);
  }

  function fmtBytes(n) {
    if (!Number.isFinite(n)) return "";
    if (n >= 1 << 30) return (n / (1 << 30)).toFixed(1) + " GiB";
    if (n >= 1 << 20) return (n / (1 << 20)).toFixed(1) + " MiB";
    if (n >= 1 << 10) return (n / (1 << 10)).toFixed(1) + " KiB";
    return n + " B";
  }

  function fmtAge(s) {
    if (s === null || s === undefined) return "";
    if (s < 120) return Math.round(s) + " s";
    if (s < 7200) return Math.round(s / 60) + " min";
    return (s / 3600).toFixed(1) + " h";
  }

  function fmtTime(ms) {
    return Number.isFinite(ms) ? new Date(ms).toLocaleString() : "";
  }

  // Stage states: from the retained status, published again whenever one
  // changes, else from the latest metrics.
  function stagesOf(c) {
    if (c.status && c.status.state === "online" && c.status.stages) return c.status.stages;
    const last = c.metrics[c.metrics.length - 1];
    return (last && last.m.stages) || {};
  }

  function warnings(c) {
    const w = [];
    const st = c.status;
    if (st && st.state === "offline") w.push("offline (" + (st.reason || "no reason") + ")");
    const ms = c.metrics.map((x) => x.m);
    const last = ms[ms.length - 1];
    if (last) {
      const depths = ms.slice(-3).map((m) => (m.outbox || {}).depth);
      if (depths.length === 3 && depths[0] < depths[1] && depths[1] < depths[2]) w.push("backlog growing (" + depths[2] + " events)");
      if (ms.length >= 2) {
        const prev = ms[ms.length - 2];
        for (const k of ["evicted", "expired", "refused"]) {
          const d = ((last.outbox || {})[k] || 0) - ((prev.outbox || {})[k] || 0);
          if (d > 0) w.push(d + " events " + k);
        }
        const interval = last.ts - prev.ts;
        const since = Date.now() - c.metrics[c.metrics.length - 1].at;
        if (st && st.state === "online" && interval > 0 && since > 3 * interval) w.push("no metrics for " + fmtAge(since / 1000));
      }
      if (last.video && last.video.last_error) w.push("video: " + last.video.last_error);
    }
    for (const [name, s] of Object.entries(stagesOf(c))) {
      if (s.state === "restarting" || s.state === "degraded") {
        w.push(name + " " + s.state + (s.last_error ? ": " + s.last_error : ""));
      }
      if (s.busy_s) w.push(name + " busy on one piece of work for " + fmtAge(s.busy_s));
    }
    const gaps = lastingGaps(c);
    if (gaps.length) w.push("missing seq " + gaps.map((g) => (g.from === g.to ? g.from : g.from + "–" + g.to)).join(", "));
    if (c.bad) w.push(c.bad + " unreadable messages");
    return w;
  }

  function cell(tr, i) {
    while (tr.children.length <= i) tr.appendChild(document.createElement("td"));
    return tr.children[i];
  }

  function renderFleetRow(c) {
    if (!c) return;
    const tbody = $("#fleet tbody");
    let tr = tbody.querySelector('tr[data-camera="' + CSS.escape(c.id) + '"]');
    if (!tr) {
      tr = document.createElement("tr");
      tr.dataset.camera = c.id;
      const after = [...tbody.children].find((r) => r.dataset.camera > c.id);
      tbody.insertBefore(tr, after || null);
    }
    tr.classList.toggle("selected", c.id === app.selected);
    const st = c.status || {};
    const last = (c.metrics[c.metrics.length - 1] || {}).m || {};
    const ob = last.outbox || {};
    const stages = Object.values(stagesOf(c));
    const running = stages.filter((s) => s.state === "running").length;
    const values = [
      c.id,
      st.state || "unknown",
      st.version || last.version || "",
      fmtTime(st.started_at),
      ob.depth !== undefined ? String(ob.depth) : "",
      fmtAge(ob.oldest_age_s),
      ob.evicted !== undefined ? ob.evicted + " / " + ob.refused : "",
      fmtBytes(last.rss_bytes),
      last.video && Number.isFinite(last.video.analysed_fps) ? last.video.analysed_fps.toFixed(1) : "",
      stages.length ? running + "/" + stages.length + " running" : "",
      c.lastEvent ? c.lastEvent.kind + " #" + c.lastEvent.seq + " " + new Date(c.lastEvent.ts).toLocaleTimeString() : "",
      warnings(c).join("; "),
    ];
    values.forEach((v, i) => { const td = cell(tr, i); if (td.textContent !== v) td.textContent = v; });
    cell(tr, 1).className = "state " + (st.state || "");
    cell(tr, 11).className = "warn";
  }

  function renderSummary() {
    let online = 0;
    for (const c of app.cameras.values()) if (c.status && c.status.state === "online") online++;
    const lat = percentiles(app.latencies.slice(-500));
    $("#fleet-summary").textContent = app.cameras.size + " cameras, " + online + " online" +
      (lat ? " · events shown " + lat.p50 + " ms (median) after their timestamp, p99 " + lat.p99 + " ms" : "");
  }

  function percentiles(xs) {
    if (!xs.length) return null;
    const s = [...xs].sort((a, b) => a - b);
    const at = (q) => s[Math.min(s.length - 1, Math.floor(q * s.length))];
    return { p50: at(0.5), p99: at(0.99), n: s.length };
  }

  function renderCamera(c) {
    if (!c) return;
    $("#camera-title").textContent = c.id;
    renderPlates(c);
    const gaps = lastingGaps(c);
    $("#gaps").textContent = gaps.length
      ? "missing seq: " + gaps.map((g) => (g.from === g.to ? g.from : g.from + "–" + g.to)).join(", ") + " (dropped by the camera and counted in its metrics, or still on their way)"
      : c.maxSeq !== null ? "no gaps in seq up to " + c.maxSeq : "";
    $("#gaps").className = gaps.length ? "gap" : "muted";
    renderChart(c);
    renderEvents(c);
    renderRequests(c);
    renderConfigStatus(c);
  }

  function renderPlates(c) {
    const snapshots = new Map();
    for (const q of c.requests.values()) if (q.eventId && q.state === "done") snapshots.set(q.eventId, q);
    const rows = c.plates.map((e) => {
      const p = e.payload || {};
      const tr = document.createElement("tr");
      tr.className = "plate";
      tr.dataset.eventId = e.event_id;
      const vals = [
        new Date(e.ts).toLocaleTimeString(),
        p.plate === null ? `(unread: ${(p.reason || "").replace(/_/g, " ")})` : p.plate || "",
        p.plate !== null && Number.isFinite(p.confidence) ? p.confidence.toFixed(2) : "",
        p.vehicle ? p.vehicle.class : "",
        p.direction || "",
        String(e.seq),
      ];
      for (const v of vals) { const td = document.createElement("td"); td.textContent = v; tr.appendChild(td); }
      tr.children[1].className = p.plate === null ? "plate-text unread" : "plate-text";
      const td = document.createElement("td");
      const done = snapshots.get(e.event_id);
      const link = done ? linkFor(c, done) : null;
      if (link) {
        const a = document.createElement("a");
        a.href = link;
        a.target = "_blank";
        a.rel = "noopener";
        a.className = "snapshot-link";
        const img = document.createElement("img");
        img.className = "thumb";
        img.alt = "snapshot";
        img.src = link;
        a.appendChild(img);
        td.appendChild(a);
      } else if (done) {
        td.textContent = "uploaded";
      } else if (p.snapshot) {
        const b = document.createElement("button");
        b.type = "button";
        b.className = "link snapshot-request";
        b.textContent = "request";
        b.addEventListener("click", () => { const err = sendRequest("snapshot", { event: e.event_id }); $("#req-error").textContent = err || ""; });
        td.appendChild(b);
      }
      tr.appendChild(td);
      return tr;
    });
    $("#plates tbody").replaceChildren(...rows);
  }

  function renderChart(c) {
    const svg = $("#chart");
    const ivs = [...c.intervals.values()].sort((a, b) => a.start - b.start);
    const series = [
      { kind: "people", dir: "in", color: "#2457c5" }, { kind: "people", dir: "out", color: "#8fb0f0" },
      { kind: "vehicles", dir: "in", color: "#1f7a3a" }, { kind: "vehicles", dir: "out", color: "#8fcf9f" },
    ];
    const ns = "http://www.w3.org/2000/svg";
    const shapes = [];
    if (ivs.length) {
      const t0 = ivs[0].start, t1 = Math.max(ivs[ivs.length - 1].start, t0 + 1);
      const max = Math.max(1, ...ivs.map((v) => Math.max(v.in, v.out)));
      for (const s of series) {
        const pts = ivs.filter((v) => v.kind === s.kind).map((v) => [10 + 580 * (v.start - t0) / (t1 - t0), 190 - 170 * v[s.dir] / max]);
        if (!pts.length) continue;
        const pl = document.createElementNS(ns, "polyline");
        pl.setAttribute("points", pts.map((p) => p[0].toFixed(1) + "," + p[1].toFixed(1)).join(" "));
        pl.setAttribute("fill", "none");
        pl.setAttribute("stroke", s.color);
        pl.setAttribute("stroke-width", "2");
        pl.setAttribute("vector-effect", "non-scaling-stroke");
        shapes.push(pl);
      }
      const label = document.createElementNS(ns, "text");
      label.setAttribute("x", "12");
      label.setAttribute("y", "16");
      label.setAttribute("font-size", "12");
      label.textContent = "max " + max + " per interval";
      shapes.push(label);
    }
    svg.replaceChildren(...shapes);
    const totals = {};
    for (const v of ivs) {
      const t = totals[v.kind] || (totals[v.kind] = { in: 0, out: 0 });
      t.in += v.in; t.out += v.out;
    }
    $("#chart-legend").replaceChildren(...series.map((s) => {
      const span = document.createElement("span");
      const i = document.createElement("i");
      i.style.background = s.color;
      span.appendChild(i);
      span.appendChild(document.createTextNode(s.kind + " " + s.dir + " " + ((totals[s.kind] || {})[s.dir] || 0)));
      span.dataset.series = s.kind + "-" + s.dir;
      return span;
    }));
  }

  function renderEvents(c) {
    const items = c.events.slice(0, 30).map((e) => {
      const li = document.createElement("li");
      li.value = e.seq;
      li.textContent = new Date(e.ts).toLocaleTimeString() + " " + e.kind + " " + JSON.stringify(e.payload).slice(0, 160);
      return li;
    });
    $("#events").replaceChildren(...items);
  }

  function renderRequests(c) {
    const rows = [...c.requests.values()].sort((a, b) => b.created - a.created).map((q) => {
      const tr = document.createElement("tr");
      tr.dataset.requestId = q.id;
      const td = () => { const d = document.createElement("td"); tr.appendChild(d); return d; };
      td().textContent = q.id;
      td().textContent = q.what;
      const st = td();
      st.className = "req-state";
      st.textContent = q.state + (q.state === "failed" ? (q.retrying ? " (retrying, attempt " + q.attempt + ")" : " (final)") : "");
      const pr = td();
      const bar = document.createElement("progress");
      bar.max = 100;
      if (Number.isFinite(q.percent)) bar.value = q.percent; else bar.removeAttribute("value");
      pr.appendChild(bar);
      const res = td();
      res.className = "req-result";
      if (q.state === "done") {
        const size = document.createElement("span");
        size.className = "req-size";
        size.dataset.bytes = q.size;
        size.textContent = fmtBytes(q.size) + " ";
        const sha = document.createElement("code");
        sha.className = "req-sha";
        sha.textContent = q.sha256;
        res.append(size, sha);
        const link = linkFor(c, q);
        if (link) {
          const a = document.createElement("a");
          a.className = "req-link";
          a.href = link;
          a.target = "_blank";
          a.rel = "noopener";
          a.textContent = " open";
          res.appendChild(a);
        }
      } else if (q.reason) {
        res.className = "req-result error";
        res.textContent = q.reason;
      } else if (q.state === "uploading") {
        res.textContent = fmtBytes(q.bytes) + " of " + fmtBytes(q.size);
      }
      return tr;
    });
    $("#requests tbody").replaceChildren(...rows);
  }

  function renderConfigStatus(c) {
    const s = c.configStatus;
    const el = $("#cfg-status");
    if (!s) { el.textContent = "no configuration status yet"; el.className = "muted"; return; }
    let text = s.state + " (" + s.source + " message) at " + fmtTime(s.ts) + "; in effect: camera version " + s.version + ", group version " + s.group_version;
    if (s.state === "rejected") {
      text += "; refused version " + s.rejected_version + ": " + (s.errors || []).map((e) => (e.field || "(payload)") + " " + e.error).join("; ");
    }
    el.textContent = text;
    el.className = s.state === "rejected" ? "error" : "";
    el.dataset.state = s.state;
    el.dataset.version = s.version;
  }

  function select(id) {
    const prev = app.selected;
    app.selected = id;
    $("#camera-view").hidden = false;
    $("#cfg-camera-topic").textContent = id + "/config";
    const c = camera(id);
    c.configEdited = false;
    showOverlay("#cfg-camera", c.config, true);
    showErrors("#cfg-camera-errors", []);
    if (prev !== id) watchConfig(id);
    if (prev) app.dirtyFleet.add(prev);
    app.dirtyFleet.add(id);
    app.dirtyCamera = true;
    schedule();
  }

  // ---- wiring ----------------------------------------------------------------

  function showKindFields() {
    const kind = $("#req-kind").value;
    for (const l of document.querySelectorAll("#request-form [data-kind]")) l.hidden = l.dataset.kind !== kind;
  }

  function init() {
    const hash = loadSettings();
    $("#settings").addEventListener("submit", (ev) => { ev.preventDefault(); connect(); });
    $("#disconnect").addEventListener("click", disconnect);
    $("#settings-toggle").addEventListener("click", () => { $("#settings").hidden = !$("#settings").hidden; });
    $("#fleet tbody").addEventListener("click", (ev) => {
      const tr = ev.target.closest("tr[data-camera]");
      if (tr) select(tr.dataset.camera);
    });
    $("#req-kind").addEventListener("change", showKindFields);
    showKindFields();
    $("#request-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const err = sendRequest($("#req-kind").value, { event: $("#req-event").value, from: $("#req-from").value, to: $("#req-to").value, file: $("#req-file").value });
      $("#req-error").textContent = err || "";
    });
    $("#cfg-camera").addEventListener("input", () => { const c = app.selected && camera(app.selected); if (c) c.configEdited = true; });
    $("#cfg-camera-publish").addEventListener("click", () => {
      if (!app.selected) return;
      const c = camera(app.selected);
      const errors = publishOverlay(app.selected + "/config", $("#cfg-camera").value, c.config);
      showErrors("#cfg-camera-errors", errors);
      if (!errors.length) c.configEdited = false;
    });
    $("#cfg-group-publish").addEventListener("click", () => {
      if (!app.settings.group) { showErrors("#cfg-group-errors", ["set the fleet group under Connection first"]); return; }
      showErrors("#cfg-group-errors", publishOverlay("fleet/" + app.settings.group + "/config", $("#cfg-group").value, app.groupConfig));
    });
    if ("PerformanceObserver" in window) {
      try {
        new PerformanceObserver((list) => {
          for (const e of list.getEntries()) { app.longTasks.count++; app.longTasks.maxMs = Math.max(app.longTasks.maxMs, e.duration); }
        }).observe({ entryTypes: ["longtask"] });
      } catch (_) { /* not supported */ }
    }
    // Gaps and stale metrics age without any message arriving.
    setInterval(() => { for (const id of app.cameras.keys()) app.dirtyFleet.add(id); app.dirtyCamera = true; schedule(); }, 2000);
    if (hash.get("connect") === "1" && $("#broker").value) connect();
    if (hash.get("camera")) select(hash.get("camera"));
  }

  // What the page measured, for people and for tests: delays from an event's
  // timestamp to its appearance on screen, and main-thread tasks over 50 ms.
  window.edgecamConsole = {
    latencies: () => app.latencies.slice(),
    eventsShown: () => app.eventsShown,
    longTasks: () => Object.assign({}, app.longTasks),
    cameras: () => app.cameras.size,
    validate: (schema, value) => EdgecamSchema.validate(EDGECAM_SCHEMAS[schema], value),
  };

  init();
})();

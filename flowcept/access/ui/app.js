/* flowcept web UI.  Plain JavaScript, no libraries, no network but this server.

   Everything shown comes from the public JSON API (/api/v1/...): nothing is computed over
   all tasks here; pages, bins and groups are made by the server.  Every value is untrusted
   text: the DOM is built with createElement/textContent only (never innerHTML), links
   are built from encoded parts. */
"use strict";
(function () {
  const TOKEN_KEY = "flowcept.token";
  const PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#9c755f",
    "#ff9da7", "#86bcb6", "#d4a6c8", "#a0cbe8", "#ffbe7d"];
  const OTHER = "#b5bcc6";
  const ERROR = "#d62728";
  const PAGE_SIZES = [25, 50, 100, 200];
  const LIVE_MS = 5000;
  const view = document.getElementById("view");
  let caps = null;            // /api/v1/capabilities
  let sources = null;         // /api/v1/sources items
  let cleanups = [];          // timers and listeners of the current view
  let renderSeq = 0;

  // -- DOM -------------------------------------------------------------------------------------
  function h(tag, attrs, ...kids) {
    const el = tag.startsWith("svg:") ? document.createElementNS("http://www.w3.org/2000/svg", tag.slice(4))
      : document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") el.textContent = String(v);
      else if (k === "on") for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
      else if (k === "class") el.setAttribute("class", v);
      else if (k === "value" && "value" in el) el.value = v;
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    add(el, kids);
    return el;
  }
  function add(el, kids) {
    for (const k of kids.flat(Infinity)) {
      if (k === null || k === undefined || k === false) continue;
      el.appendChild(k instanceof Node ? k : document.createTextNode(String(k)));
    }
    return el;
  }
  function clear(el) { while (el.firstChild) el.removeChild(el.firstChild); return el; }
  function card(title, right, ...body) {
    return h("section", { class: "card" }, h("h2", {}, title, right ? h("span", { class: "right" }, right) : null), ...body);
  }
  function badge(status) {
    const s = String(status || "");
    return h("span", { class: "badge " + (["FINISHED", "ERROR", "RUNNING"].includes(s) ? s : "other") }, s || "?");
  }
  function link(hash, text, attrs) { return h("a", Object.assign({ href: hash }, attrs || {}), text); }

  // -- formatting ------------------------------------------------------------------------------
  const nf = new Intl.NumberFormat("en-US");
  function fmtInt(n) { return n === null || n === undefined ? "" : nf.format(n); }
  function pad(n, w) { return String(n).padStart(w || 2, "0"); }
  function fmtTime(s) {
    if (s === null || s === undefined || !isFinite(s)) return "";
    const d = new Date(s * 1000);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:` +
      `${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
  }
  function fmtDur(s) {
    if (s === null || s === undefined || !isFinite(s)) return "";
    const a = Math.abs(s);
    if (a === 0) return "0 s";
    if (a < 1e-6) return (s * 1e9).toFixed(0) + " ns";
    if (a < 1e-3) return (s * 1e6).toPrecision(3) + " µs";
    if (a < 1) return (s * 1e3).toPrecision(3) + " ms";
    if (a < 60) return s.toPrecision(3) + " s";
    if (a < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
    return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
  }
  function shortId(id) { return id ? String(id).replace(/^0+(?=.)/, "") : ""; }

  // -- hash routes -----------------------------------------------------------------------------
  function route() {
    const raw = location.hash.replace(/^#\/?/, "");
    const q = raw.indexOf("?");
    const path = (q < 0 ? raw : raw.slice(0, q)).split("/").map(decodeURIComponent);
    const params = new URLSearchParams(q < 0 ? "" : raw.slice(q + 1));
    return { path, params };
  }
  function hash(parts, params) {
    let s = "#/" + parts.map((p) => encodeURIComponent(p)).join("/");
    if (params) {
      const u = new URLSearchParams();
      for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") u.set(k, v);
      const t = u.toString();
      if (t) s += "?" + t;
    }
    return s;
  }
  function tasksHash(source, params) { return hash(["tasks", source], params); }
  function taskHash(source, id) { return hash(["task", source, id]); }
  function workflowHash(source, wf) { return hash(["workflow", source, wf || "-"]); }

  // -- API -------------------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }
  function url(path, params) {
    const u = new URLSearchParams();
    for (const [k, v] of Object.entries(params || {})) {
      if (v === null || v === undefined || v === "") continue;
      u.set(k, typeof v === "object" ? JSON.stringify(v) : String(v));
    }
    const t = u.toString();
    return path + (t ? "?" + t : "");
  }
  async function request(path, params, init) {
    for (;;) {
      const headers = Object.assign({}, (init && init.headers) || {});
      const token = sessionStorage.getItem(TOKEN_KEY);
      if (token) headers.Authorization = "Bearer " + token;
      const r = await fetch(url(path, params), Object.assign({}, init || {}, { headers }));
      if (r.status === 401) {
        await signIn(token ? "That token was refused; check it and try again." : null);
        continue;
      }
      if (!r.ok) {
        let msg = `${r.status} ${r.statusText}`;
        try { const b = await r.json(); if (b && b.error) msg = b.error; } catch (e) { /* not JSON */ }
        throw new ApiError(r.status, msg);
      }
      return r;
    }
  }
  // integers past 2^53 (start_ns, end_ns) stay exact as decimal strings where the browser
  // gives the reviver the source text; durOf() subtracts them as BigInts
  function parseJson(text) {
    return JSON.parse(text, (k, v, ctx) => (typeof v === "number" && !Number.isSafeInteger(v) && Number.isInteger(v) &&
      ctx && typeof ctx.source === "string" && /^-?\d+$/.test(ctx.source)) ? ctx.source : v);
  }
  function durOf(d) {
    if (d.end_ns === undefined || d.start_ns === undefined) return null;
    return Number(BigInt(d.end_ns) - BigInt(d.start_ns)) / 1e9;
  }
  async function api(path, params) { return parseJson(await (await request(path, params)).text()); }
  async function apiText(path, params) {
    const text = await (await request(path, params)).text();
    return [parseJson(text), text];
  }
  async function post(path, body) {
    return parseJson(await (await request(path, null, { method: "POST", body: JSON.stringify(body),
      headers: { "Content-Type": "application/json" } })).text());
  }

  let signing = null;
  function signIn(problem) {
    if (signing) return signing;
    const dlg = document.getElementById("login");
    const form = document.getElementById("login-form");
    const input = document.getElementById("login-token");
    const err = document.getElementById("login-error");
    err.hidden = !problem;
    err.textContent = problem || "";
    input.value = "";
    signing = new Promise((resolve) => {
      function done(ev) {
        ev.preventDefault();
        sessionStorage.setItem(TOKEN_KEY, input.value.trim());
        form.removeEventListener("submit", done);
        dlg.close();
        signing = null;
        document.getElementById("sign-out").hidden = false;
        resolve();
      }
      form.addEventListener("submit", done);
      dlg.addEventListener("cancel", (ev) => ev.preventDefault());
      dlg.showModal();
      input.focus();
    });
    return signing;
  }
  document.getElementById("sign-out").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    location.reload();
  });

  async function boot() {
    if (!caps) {
      caps = await api("/api/v1/capabilities");
      document.getElementById("nav-ask").hidden = !caps.ask.enabled;
      document.getElementById("server-info").textContent = "flowcept " + caps.version;
      document.getElementById("sign-out").hidden = !sessionStorage.getItem(TOKEN_KEY);
    }
    if (!sources) sources = (await api("/api/v1/sources")).items;
  }
  function sourceKind(name) {
    const s = (sources || []).find((x) => x.name === name);
    return s ? s.kind : null;
  }

  // -- views -----------------------------------------------------------------------------------
  async function render() {
    const seq = ++renderSeq;
    for (const fn of cleanups) fn();
    cleanups = [];
    const { path, params } = route();
    const name = path[0] || "runs";
    for (const a of document.querySelectorAll("header nav a")) a.classList.toggle("active", a.dataset.nav === name);
    clear(view).appendChild(h("div", { class: "loading" }, "Loading…"));
    try {
      await boot();
      if (seq !== renderSeq) return;
      const page = h("div", { class: "page" });
      const current = () => seq === renderSeq;
      if (name === "runs") await runsView(page, params, current);
      else if (name === "workflow") await workflowView(page, path[1], path[2], current);
      else if (name === "tasks") await tasksView(page, path[1] || (sources[0] && sources[0].name), params, current);
      else if (name === "task") await taskView(page, path[1], path[2], current);
      else if (name === "ask") await askView(page, params, current);
      else page.appendChild(h("div", { class: "banner error" }, "No such page: ", "#/" + path.join("/")));
      if (seq !== renderSeq) return;
      clear(view).appendChild(page);
    } catch (e) {
      if (seq !== renderSeq) return;
      clear(view).appendChild(h("div", { class: "banner error" }, e.message || String(e)));
    }
  }
  window.addEventListener("hashchange", render);

  function sortHeader(label, field, sort, onSort, cls) {
    const cur = (sort || "").split(",")[0];
    const dir = cur === field ? "▲" : cur === "-" + field ? "▼" : "";
    return h("th", { class: "sortable " + (cls || ""), title: "sort by " + field,
      on: { click: () => onSort(cur === "-" + field ? field : "-" + field) } }, label, dir ? h("span", { class: "dir" }, dir) : null);
  }

  // Runs ----------------------------------------------------------------------------------------
  async function runsView(page, params, current) {
    const q = params.get("q") || "";
    const sort = params.get("sort") || "-started_at";
    const limit = 50;
    const offset = parseInt(params.get("offset") || "0", 10) || 0;
    const go = (over) => { location.hash = hash(["runs"], Object.assign({ q, sort, offset: 0 }, over)); };
    const data = await api("/api/v1/runs", { q, sort, limit, offset });
    const search = h("input", { type: "search", placeholder: "name, campaign, user, job, id…", value: q, id: "runs-q" });
    let timer = null;
    search.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(() => go({ q: search.value.trim() }), 350);
    });
    cleanups.push(() => clearTimeout(timer));
    const cols = [["Workflow", "name"], ["Source", "source"], ["Campaign", "campaign_id"], ["User", "user"],
      ["Started", "started_at"], ["Duration", "duration_s", "num"], ["Ranks", "ranks", "num"],
      ["Tasks", "tasks", "num"], ["Failures", "failures", "num"]];
    const rows = data.items.map((r) => {
      const wf = workflowHash(r.source, r.workflow_id);
      const fail = r.failures > 0
        ? link(tasksHash(r.source, { status: "ERROR", filter: r.workflow_id ? JSON.stringify({ workflow_id: r.workflow_id }) : "" }),
          fmtInt(r.failures), { class: "count-bad", title: "failed tasks" }) : "0";
      return h("tr", { "data-source": r.source, "data-workflow": r.workflow_id || "" },
        h("td", { class: "wrap" }, link(wf, r.name || (r.workflow_id ? "workflow " + shortId(r.workflow_id) : r.source), { class: "run-link" }),
          h("div", { class: "note mono" }, r.workflow_id || "(tasks without a workflow)")),
        h("td", { class: "wrap" }, r.source, " ", r.kind === "store"
          ? h("span", { class: "badge live", title: "a store: its pages refresh while it is written" }, "store")
          : h("span", { class: "badge other", title: "an archive: it does not change" }, r.kind || "")),
        h("td", { class: "wrap" }, r.campaign_id || ""),
        h("td", {}, r.user || ""),
        h("td", {}, fmtTime(r.started_at)),
        h("td", { class: "num" }, fmtDur(r.duration_s)),
        h("td", { class: "num" }, fmtInt(r.ranks)),
        h("td", { class: "num" }, fmtInt(r.tasks)),
        h("td", { class: "num" }, fail));
    });
    add(page, [
      h("div", { class: "page-head" }, h("h1", {}, "Runs"),
        h("span", { class: "sub" }, `${fmtInt(data.total)} workflow${data.total === 1 ? "" : "s"} in ${sources.length} source${sources.length === 1 ? "" : "s"}`)),
      card("Workflows served", h("label", {}, search),
        h("div", { class: "table-wrap" }, h("table", { class: "data", id: "runs-table" },
          h("thead", {}, h("tr", {}, cols.map(([l, f, c]) => sortHeader(l, f, sort, (s) => go({ sort: s }), c)))),
          h("tbody", {}, rows))),
        rows.length ? null : h("div", { class: "empty" }, q ? "No run matches that search." : "Nothing is served."),
        pager(data.total, offset, data.count, limit, (o) => go({ offset: o }))),
    ]);
  }

  function pager(total, offset, count, limit, goOffset, more) {
    return h("div", { class: "pager" },
      h("span", { class: "info" }, total ? `${fmtInt(offset + 1)}–${fmtInt(offset + count)} of ${fmtInt(total)}` : "none"),
      more || null,
      h("button", { class: "small", disabled: offset <= 0, on: { click: () => goOffset(0) } }, "First"),
      h("button", { class: "small", disabled: offset <= 0, on: { click: () => goOffset(Math.max(0, offset - limit)) } }, "Previous"),
      h("button", { class: "small", disabled: offset + count >= total, on: { click: () => goOffset(offset + limit) } }, "Next"));
  }

  // Workflow -------------------------------------------------------------------------------------
  function colourMap(names) {
    const m = new Map();
    names.forEach((n, i) => m.set(n, i < PALETTE.length ? PALETTE[i] : OTHER));
    m.set("other", OTHER);
    return m;
  }

  async function workflowView(page, source, wf, current) {
    const wfId = wf && wf !== "-" ? wf : null;
    const flt = wfId ? { workflow_id: wfId } : {};
    const live = sourceKind(source) === "store";
    const head = h("div");
    const figures = h("div", { class: "figures" });
    const timelineCard = h("div");
    const actBody = h("div", { class: "body flush" });
    const rankBody = h("div", { class: "body" });
    const failBody = h("div", { class: "body flush" });
    const liveNote = h("span", { class: "note" });
    let colours = null;
    let tl = null;

    async function load(first) {
      const [summary, byAct, byRank, groups] = await Promise.all([
        api("/api/v1/workflows/summary", { source, workflow_id: wfId }),
        api("/api/v1/stats", { source, by: "activity", filter: flt }),
        api("/api/v1/stats", { source, by: "rank", filter: flt }),
        api("/api/v1/failures/groups", { source, filter: flt, limit: 20 })]);
      if (!current()) return;
      const doc = (wfId && summary.workflows[wfId]) || {};
      if (!colours) colours = colourMap([...byAct.items].sort((a, b) => b.total_s - a.total_s).map((r) => r.activity));
      else byAct.items.forEach((r) => { if (!colours.has(r.activity)) colours.set(r.activity, PALETTE[colours.size % PALETTE.length]); });
      clear(head).appendChild(h("div", {},
        h("div", { class: "crumbs" }, link("#/runs", "Runs"), h("span", { class: "sep" }, "/"), source),
        h("div", { class: "page-head" }, h("h1", { id: "wf-name" }, doc.name || (wfId ? "workflow " + shortId(wfId) : source)),
          h("span", { class: "sub" }, wfId || ""),
          live ? h("span", { class: "badge live", id: "live-badge" }, "live") : null, liveNote,
          h("span", { class: "spacer" }),
          link(tasksHash(source, { filter: wfId ? JSON.stringify(flt) : "" }), "Browse tasks →", { id: "browse-tasks" }))));
      const errs = summary.by_status.ERROR || 0;
      clear(figures);
      add(figures, [
        fig("Tasks", fmtInt(summary.tasks), false, "wf-tasks"),
        fig("Failed", fmtInt(errs), errs > 0, "wf-failed"),
        fig("Ranks", fmtInt(summary.ranks.length)),
        fig("Hosts", fmtInt(summary.hosts.length)),
        fig("Started", fmtTime(summary.started_at), false, null, true),
        fig("Duration", fmtDur(summary.duration_s)),
        fig("Campaign", doc.campaign_id || "—", false, null, true),
        fig("User", doc.user || "—", false, null, true),
        fig("Job", doc.job || "—", false, null, true)]);
      renderActivities(actBody, byAct, colours, source, flt);
      renderRanks(rankBody, byRank, source, flt);
      renderFailures(failBody, groups, source, flt);
      if (first) {
        tl = timelineWidget(source, flt, colours);
        timelineCard.appendChild(tl.el);
        cleanups.push(tl.destroy);
      } else {
        tl.refresh();
      }
      if (live) liveNote.textContent = "updated " + new Date().toLocaleTimeString();
    }
    function fig(k, v, bad, id, small) {
      return h("div", { class: "figure" }, h("div", { class: "k" }, k),
        h("div", { class: "v" + (bad ? " bad" : "") + (small ? " small" : ""), id: id }, v));
    }
    await load(true);
    add(page, [head, h("section", { class: "card" }, figures), timelineCard,
      h("div", { class: "grid2 wide-left" },
        card("Durations per activity", null, actBody),
        card("Load per rank", "busy time of the tasks on each rank", rankBody)),
      card("Failures by error type", null, failBody)]);
    if (live) {
      let busy = false;
      const timer = setInterval(async () => {
        if (document.hidden || busy) return;
        busy = true;
        try { await load(false); } catch (e) { liveNote.textContent = "refresh failed: " + e.message; } finally { busy = false; }
      }, LIVE_MS);
      cleanups.push(() => clearInterval(timer));
    }
  }

  function renderActivities(body, stats, colours, source, flt) {
    const total = stats.items.reduce((a, r) => a + r.total_s, 0) || 1;
    const rows = [...stats.items].sort((a, b) => b.total_s - a.total_s).map((r) => h("tr", { "data-activity": r.activity },
      h("td", { class: "wrap" }, h("span", { class: "swatch", "data-colour": colours.get(r.activity) || OTHER }),
        link(tasksHash(source, { filter: JSON.stringify(flt), activity: r.activity }), r.activity)),
      h("td", { class: "num" }, fmtInt(r.count)),
      h("td", { class: "num" }, r.errors ? h("span", { class: "count-bad" }, fmtInt(r.errors)) : "0"),
      h("td", { class: "num" }, fmtDur(r.mean_s)),
      h("td", { class: "num" }, fmtDur(r.p50_s)),
      h("td", { class: "num" }, fmtDur(r.p95_s)),
      h("td", { class: "num" }, fmtDur(r.max_s)),
      h("td", { class: "num" }, fmtDur(r.total_s)),
      h("td", {}, barOf(r.total_s / total))));
    clear(body).appendChild(rows.length ? h("div", { class: "table-wrap" }, h("table", { class: "data", id: "activity-table" },
      h("thead", {}, h("tr", {}, ["Activity", "Tasks", "Errors", "Mean", "p50", "p95", "Max", "Total", "Share"]
        .map((t, i) => h("th", { class: i > 0 && i < 8 ? "num" : "" }, t)))),
      h("tbody", {}, rows))) : h("div", { class: "empty" }, "No tasks."));
    paintSwatches(body);
  }
  function paintSwatches(root) {
    for (const s of root.querySelectorAll(".swatch[data-colour]")) s.style.background = s.dataset.colour;
  }
  function barOf(frac) {
    const inner = h("span");
    inner.style.width = (Math.max(0, Math.min(1, frac)) * 100).toFixed(1) + "%";
    return h("div", { class: "bar", title: (frac * 100).toFixed(1) + " %" }, inner);
  }

  function renderRanks(body, stats, source, flt) {
    clear(body);
    const items = stats.items;
    if (!items.length) { body.appendChild(h("div", { class: "empty" }, "No tasks.")); return; }
    const max = Math.max(...items.map((r) => r.total_s)) || 1;
    const mean = items.reduce((a, r) => a + r.total_s, 0) / items.length;
    const canvas = h("canvas", { height: 150, id: "rank-chart" });
    const wrap = h("div", { class: "chart" }, canvas);
    const tip = h("div", { class: "tooltip", hidden: true });
    wrap.style.position = "relative";
    wrap.appendChild(tip);
    add(body, [wrap, h("div", { class: "note" },
      `${fmtInt(items.length)} rank${items.length === 1 ? "" : "s"} · busiest ${fmtDur(max)} · mean ${fmtDur(mean)} · imbalance (max/mean) ${(max / (mean || 1)).toFixed(2)}`)]);
    if (items.length <= 16) {
      body.appendChild(h("table", { class: "data", id: "rank-table" },
        h("thead", {}, h("tr", {}, h("th", {}, "Rank"), h("th", { class: "num" }, "Tasks"), h("th", { class: "num" }, "Errors"),
          h("th", { class: "num" }, "Busy"), h("th", {}, ""))),
        h("tbody", {}, items.map((r) => h("tr", { "data-rank": r.rank },
          h("td", {}, link(tasksHash(source, { filter: JSON.stringify(flt), rank: r.rank }), "rank " + r.rank)),
          h("td", { class: "num" }, fmtInt(r.count)),
          h("td", { class: "num" }, r.errors ? h("span", { class: "count-bad" }, fmtInt(r.errors)) : "0"),
          h("td", { class: "num" }, fmtDur(r.total_s)),
          h("td", {}, barOf(r.total_s / max)))))));
    }
    const draw = () => {
      const w = canvas.clientWidth || 400;
      const ctx = hidpi(canvas, w, 150);
      ctx.font = "11px system-ui, sans-serif";
      const left = 12 + Math.max(...[0, 0.5, 1].map((f) => ctx.measureText(fmtDur(max * f)).width));
      const bottom = 20, top = 8, plotW = w - left - 8, plotH = 150 - top - bottom;
      ctx.clearRect(0, 0, w, 150);
      ctx.fillStyle = "#5e6877"; ctx.textAlign = "right";
      for (const f of [0, 0.5, 1]) {
        const y = top + plotH * (1 - f);
        ctx.fillText(fmtDur(max * f), left - 6, y + 4);
        ctx.strokeStyle = "#eceef2"; ctx.beginPath(); ctx.moveTo(left, y + 0.5); ctx.lineTo(left + plotW, y + 0.5); ctx.stroke();
      }
      const bw = Math.min(44, plotW / items.length);
      items.forEach((r, i) => {
        const bh = plotH * (r.total_s / max);
        const x = left + i * bw + (bw > 4 ? 1 : 0), wd = Math.max(1, bw - (bw > 4 ? 2 : 0));
        ctx.fillStyle = "#7f9cc7";
        ctx.fillRect(x, top + plotH - bh, wd, bh);
        if (r.errors) { ctx.fillStyle = ERROR; ctx.fillRect(x, top + plotH - bh, wd, 3); }
      });
      ctx.strokeStyle = "#2563c9"; ctx.setLineDash([4, 3]);
      const my = top + plotH * (1 - mean / max);
      ctx.beginPath(); ctx.moveTo(left, my); ctx.lineTo(left + bw * items.length, my); ctx.stroke(); ctx.setLineDash([]);
      ctx.textAlign = "center"; ctx.fillStyle = "#5e6877";
      const step = Math.ceil(items.length / Math.max(1, Math.floor(plotW / 40)));
      items.forEach((r, i) => { if (i % step === 0) ctx.fillText(String(r.rank), left + (i + 0.5) * bw, 150 - 6); });
      canvas.onmousemove = (ev) => {
        const i = Math.floor((ev.offsetX - left) / bw);
        if (i < 0 || i >= items.length) { tip.hidden = true; return; }
        const r = items[i];
        tip.textContent = `rank ${r.rank}\n${fmtInt(r.count)} tasks, ${fmtInt(r.errors)} errors\nbusy ${fmtDur(r.total_s)} · mean task ${fmtDur(r.mean_s)}`;
        tip.hidden = false;
        tip.style.left = Math.min(ev.offsetX + 12, w - 220) + "px";
        tip.style.top = (ev.offsetY + 12) + "px";
      };
      canvas.onmouseleave = () => { tip.hidden = true; };
      canvas.onclick = (ev) => {
        const i = Math.floor((ev.offsetX - left) / bw);
        if (i >= 0 && i < items.length) location.hash = tasksHash(source, { filter: JSON.stringify(flt), rank: items[i].rank });
      };
    };
    requestAnimationFrame(draw);
    const ro = new ResizeObserver(() => draw());
    ro.observe(canvas);
    cleanups.push(() => ro.disconnect());
  }

  function renderFailures(body, groups, source, flt) {
    clear(body);
    if (!groups.items.length) { body.appendChild(h("div", { class: "empty", id: "no-failures" }, "No failed tasks.")); return; }
    const row = (g) => {
      const narrowed = Object.assign({}, flt, g.type === "(no error recorded)" ? {} : { "error.type": g.type });
      const acts = Object.entries(g.activities).map(([a, n]) => h("span", { class: "chip" }, a, " ", h("span", { class: "muted" }, "×" + n)));
      const examples = g.task_ids.map((t) => h("span", { class: "chip mono" }, link(taskHash(source, t), "…" + t.slice(-6), { title: t })));
      const others = g.messages.length - 1;
      return h("tr", { "data-type": g.type },
        h("td", { class: "wrap mono" }, link(tasksHash(source, { status: "ERROR", filter: JSON.stringify(narrowed) }), g.type)),
        h("td", { class: "num count-bad" }, fmtInt(g.count)),
        h("td", { class: "wrap" }, h("div", { class: "chips" }, acts)),
        h("td", { class: "num" }, fmtInt(g.ranks.count)),
        h("td", {}, fmtTime(g.first_at)),
        h("td", { class: "wrap mono" }, g.messages.length ? g.messages[0].message : "",
          others > 0 ? h("div", { class: "note" }, `and ${others} other message${others > 1 ? "s" : ""}`) : null),
        h("td", { class: "wrap" }, h("div", { class: "chips" }, examples)));
    };
    const head = h("thead", {}, h("tr", {}, h("th", {}, "Error type"), h("th", { class: "num" }, "Tasks"), h("th", {}, "Activities"),
      h("th", { class: "num" }, "Ranks"), h("th", {}, "First"), h("th", {}, "Commonest message"), h("th", {}, "Examples")));
    add(body, [
      h("div", { class: "table-wrap" }, h("table", { class: "data", id: "failure-groups" }, head, h("tbody", {}, groups.items.map(row)))),
      groups.groups > groups.items.length ? h("div", { class: "note body" }, `${groups.groups - groups.items.length} more error types not shown`) : null]);
  }

  // the timeline: rows of ranks, time across; the server sends tasks or bins for the window
  function hidpi(canvas, w, hgt) {
    const dpr = window.devicePixelRatio || 1;
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(hgt * dpr);
    canvas.style.height = hgt + "px";
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    return ctx;
  }
  function niceStep(span, target) {
    const raw = span / Math.max(1, target);
    const p = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= raw) return m * p;
    return 10 * p;
  }

  function timelineWidget(source, flt, colours) {
    const LEFT = 96, TOP = 24, RIGHT = 12;
    const canvas = h("canvas", { id: "timeline-canvas" });
    const tip = h("div", { class: "tooltip", hidden: true });
    const info = h("span", { class: "note", id: "timeline-info" });
    const legend = h("div", { class: "legend", id: "timeline-legend" });
    const zoomOut = h("button", { class: "small", disabled: true, id: "zoom-out" }, "Zoom out");
    const reset = h("button", { class: "small", disabled: true, id: "zoom-reset" }, "Reset");
    const box = h("div", { class: "timeline" }, canvas, tip);
    const el = card("Timeline", [info, zoomOut, reset], box, legend);
    let data = null, stack = [], win = null, drag = null, seq = 0, layout = null;

    async function fetchWindow() {
      const my = ++seq;
      const width = Math.max(200, Math.floor(canvas.clientWidth || box.clientWidth || 900) - LEFT - RIGHT);
      const params = { source, filter: flt, bins: Math.min(4096, width), max_rows: 64 };
      if (win) { params.t0 = win[0]; params.t1 = win[1]; }
      const d = await api("/api/v1/timeline", params);
      if (my !== seq) return;
      data = d;
      draw();
    }
    function draw() {
      if (!data) return;
      const w = canvas.clientWidth || 900;
      const rows = Math.max(1, data.rows.length);
      const lane = Math.max(6, Math.min(28, Math.floor(380 / rows)));
      const height = TOP + rows * lane + 8;
      const ctx = hidpi(canvas, w, height);
      const plotW = w - LEFT - RIGHT;
      const span = data.t1 - data.t0;
      layout = { lane, plotW, span, height };
      ctx.clearRect(0, 0, w, height);
      ctx.font = "11px system-ui, sans-serif";
      // axis: seconds since the window start (the start itself is in the info line)
      const step = niceStep(span, Math.max(2, Math.floor(plotW / 110)));
      ctx.fillStyle = "#5e6877"; ctx.textAlign = "center";
      for (let t = 0; t <= span + 1e-12; t += step) {
        const x = LEFT + (t / span) * plotW;
        ctx.strokeStyle = "#eceef2"; ctx.beginPath(); ctx.moveTo(x + 0.5, TOP - 4); ctx.lineTo(x + 0.5, height - 8); ctx.stroke();
        ctx.fillText("+" + fmtDur(t).replace(" ", "\u2009"), Math.min(Math.max(x, LEFT + 14), w - 24), 14);
      }
      ctx.textAlign = "right";
      data.rows.forEach((r, i) => {
        const y = TOP + i * lane;
        if (i % 2 === 1) { ctx.fillStyle = "#f7f8fa"; ctx.fillRect(LEFT, y, plotW, lane); }
        if (lane >= 9 || i % Math.ceil(9 / lane) === 0) { ctx.fillStyle = "#3b4452"; ctx.fillText(r.label, LEFT - 8, y + Math.min(lane, 14) / 2 + 4); }
      });
      const pad = lane > 10 ? 2 : 0;
      if (data.mode === "tasks") {
        for (const t of data.items) {
          const x0 = LEFT + (Math.max(0, t.start) / span) * plotW;
          const x1 = LEFT + (Math.min(span, t.end) / span) * plotW;
          const y = TOP + t.row * lane + pad;
          ctx.fillStyle = t.status === "ERROR" ? ERROR : (colours.get(t.activity_id) || OTHER);
          ctx.fillRect(x0, y, Math.max(1, x1 - x0), lane - 2 * pad);
          if (x1 - x0 > 3 && lane > 10) { ctx.strokeStyle = "rgba(255,255,255,.8)"; ctx.strokeRect(x0 + 0.5, y + 0.5, Math.max(1, x1 - x0) - 1, lane - 2 * pad - 1); }
        }
      } else {
        const bw = plotW / data.bins;
        const names = data.activities;
        data.cells.busy.forEach((row, i) => {
          const y = TOP + i * lane + pad;
          for (let b = 0; b < row.length; b++) {
            const busy = row[b];
            const a = data.cells.activity[i][b];
            if (a < 0) continue;
            ctx.globalAlpha = 0.3 + 0.7 * Math.min(1, busy / 100);
            ctx.fillStyle = colours.get(names[a]) || OTHER;
            ctx.fillRect(LEFT + b * bw, y, Math.max(1, bw), lane - 2 * pad);
          }
          ctx.globalAlpha = 1;
          const errs = data.cells.errors[i];
          ctx.fillStyle = ERROR;
          for (let b = 0; b < errs.length; b++) if (errs[b]) ctx.fillRect(LEFT + b * bw + bw / 2 - 1.5, y, 3, lane - 2 * pad);
        });
      }
      if (drag && drag.x1 !== undefined) {
        ctx.fillStyle = "rgba(37, 99, 201, .15)";
        ctx.fillRect(Math.min(drag.x0, drag.x1), TOP, Math.abs(drag.x1 - drag.x0), height - TOP - 8);
      }
      const shown = data.mode === "tasks" ? `${fmtInt(data.tasks)} tasks` : `${fmtInt(data.tasks)} tasks in ${fmtInt(data.bins)} bins of ${fmtDur(data.width_s)}`;
      info.textContent = `${fmtTime(data.t0)} · ${fmtDur(span)} · ${shown}`;
      zoomOut.disabled = reset.disabled = !win;
      clear(legend);
      const seen = data.mode === "tasks" ? data.activities : data.activities;
      for (const n of seen.slice(0, 12)) {
        const sw = h("span", { class: "swatch" });
        sw.style.background = colours.get(n) || OTHER;
        legend.appendChild(h("span", { class: "item" }, sw, n));
      }
      if (seen.length > 12) legend.appendChild(h("span", { class: "item" }, `+${seen.length - 12} more`));
      const esw = h("span", { class: "swatch" });
      esw.style.background = ERROR;
      legend.appendChild(h("span", { class: "item" }, esw, data.mode === "tasks" ? "failed task" : "bin with failures"));
      legend.appendChild(h("span", { class: "item muted" }, data.mode === "tasks" ? "click a task to open it; drag to zoom"
        : "shade: how busy the rank was; drag to zoom, click a bin for its tasks"));
    }
    function at(ev) {
      if (!data || !layout) return null;
      const x = ev.offsetX, y = ev.offsetY;
      const row = Math.floor((y - TOP) / layout.lane);
      if (x < LEFT || x > LEFT + layout.plotW || row < 0 || row >= data.rows.length) return null;
      const t = ((x - LEFT) / layout.plotW) * layout.span;
      if (data.mode === "tasks") {
        const eps = (2 / layout.plotW) * layout.span;
        const hit = data.items.filter((it) => it.row === row && it.start - eps <= t && it.end + eps >= t);
        return { row, t, task: hit.length ? hit[hit.length - 1] : null };
      }
      const b = Math.min(data.bins - 1, Math.floor(((x - LEFT) / layout.plotW) * data.bins));
      return { row, t, bin: b };
    }
    canvas.addEventListener("mousemove", (ev) => {
      if (drag) { drag.x1 = Math.max(LEFT, Math.min(ev.offsetX, LEFT + layout.plotW)); draw(); return; }
      const p = at(ev);
      if (!p) { tip.hidden = true; return; }
      const r = data.rows[p.row];
      if (data.mode === "tasks") {
        if (!p.task) { tip.hidden = true; return; }
        const k = p.task;
        tip.textContent = `${k.activity_id}\n${k.status} · rank ${k.rank}\n${fmtDur(k.end - k.start)} at +${fmtDur(k.start)}`;
      } else {
        const c = data.cells, b = p.bin, i = p.row;
        const a = c.activity[i][b];
        tip.textContent = `${r.label} · +${fmtDur(b * data.width_s)} … +${fmtDur((b + 1) * data.width_s)}\n` +
          `busy ${c.busy[i][b]} %${a >= 0 ? ", mostly " + data.activities[a] : ""}\n${fmtInt(c.started[i][b])} started, ${fmtInt(c.errors[i][b])} failed`;
      }
      tip.hidden = false;
      tip.style.left = Math.min(ev.offsetX + 14, (canvas.clientWidth || 900) - 260) + "px";
      tip.style.top = (ev.offsetY + 14) + "px";
    });
    canvas.addEventListener("mouseleave", () => { tip.hidden = true; });
    canvas.addEventListener("mousedown", (ev) => {
      if (!layout || ev.offsetX < LEFT) return;
      drag = { x0: ev.offsetX };
    });
    window.addEventListener("mouseup", onUp);
    function onUp(ev) {
      if (!drag) return;
      const d = drag;
      drag = null;
      if (d.x1 !== undefined && Math.abs(d.x1 - d.x0) >= 4) {
        const a = Math.min(d.x0, d.x1), b = Math.max(d.x0, d.x1);
        zoomTo(data.t0 + ((a - LEFT) / layout.plotW) * layout.span, data.t0 + ((b - LEFT) / layout.plotW) * layout.span);
        return;
      }
      if (ev.target !== canvas) { draw(); return; }
      const p = at(ev);
      if (!p) return;
      if (data.mode === "tasks" && p.task) { location.hash = taskHash(source, p.task.task_id); return; }
      if (data.mode === "bins") {
        const r = data.rows[p.row];
        const t0 = data.t0 + p.bin * data.width_s, t1 = t0 + data.width_s;
        const f = Object.assign({}, flt, { started_at: { $lte: t1 }, ended_at: { $gte: t0 } });
        if (r.ranks[0] === r.ranks[1]) f.rank = r.ranks[0]; else f.rank = { $gte: r.ranks[0], $lte: r.ranks[1] };
        location.hash = tasksHash(source, { filter: JSON.stringify(f) });
      }
    }
    function zoomTo(a, b) {
      if (b - a < 1e-6) b = a + 1e-6;
      stack.push(win);
      win = [a, b];
      fetchWindow();
    }
    zoomOut.addEventListener("click", () => {
      if (!win || !data) return;
      const prev = stack.pop();
      win = prev === undefined ? null : prev;
      fetchWindow();
    });
    reset.addEventListener("click", () => { stack = []; win = null; fetchWindow(); });
    const ro = new ResizeObserver(() => { if (data) draw(); });
    ro.observe(box);
    requestAnimationFrame(() => fetchWindow().catch((e) => { info.textContent = e.message; }));
    return {
      el,
      refresh: () => fetchWindow().catch((e) => { info.textContent = e.message; }),
      zoom: zoomTo,
      destroy: () => { ro.disconnect(); window.removeEventListener("mouseup", onUp); seq++; },
    };
  }

  // Tasks -------------------------------------------------------------------------------------------
  const BASE_COLUMNS = [["Task", "task_id"], ["Activity", "activity_id"], ["Status", "status"], ["Rank", "rank", "num"],
    ["Host", "hostname"], ["Started", "started_at"], ["Duration", null, "num"]];
  const cursors = new Map();   // query -> cursor of each page seen, for Previous

  function combinedFilter(params) {
    const parts = [];
    const text = (params.get("filter") || "").trim();
    if (text) parts.push(JSON.parse(text));
    if (params.get("status")) parts.push({ status: params.get("status") });
    if (params.get("activity")) parts.push({ activity_id: params.get("activity") });
    if (params.get("rank") !== null && params.get("rank") !== "") {
      const r = Number(params.get("rank"));
      if (!Number.isInteger(r)) throw new Error("rank must be a whole number");
      parts.push({ rank: r });
    }
    if (params.get("host")) parts.push({ hostname: params.get("host") });
    return parts.length === 0 ? {} : parts.length === 1 ? parts[0] : { $and: parts };
  }

  async function tasksView(page, source, params, current) {
    if (!source) { page.appendChild(h("div", { class: "banner error" }, "Nothing is served.")); return; }
    const limit = PAGE_SIZES.includes(Number(params.get("limit"))) ? Number(params.get("limit")) : 50;
    const sort = params.get("sort") || "start_ns";
    const fields = (params.get("fields") || "").split(",").map((s) => s.trim()).filter(Boolean);
    const cursor = params.get("cursor") || "";
    const go = (over) => {
      const p = Object.fromEntries(params.entries());
      delete p.cursor;
      location.hash = tasksHash(source, Object.assign(p, over));
    };
    // the form
    const ctl = {};
    ctl.filter = h("input", { type: "text", class: "mono", id: "f-filter", value: params.get("filter") || "",
      placeholder: '{"used.model": {"$regex": "^model-"}, "rank": {"$in": [0, 1]}}', spellcheck: "false" });
    ctl.status = h("select", { id: "f-status" }, ["", "FINISHED", "ERROR", "RUNNING"].map((s) =>
      h("option", { value: s, selected: (params.get("status") || "") === s }, s || "any")));
    ctl.activity = h("input", { type: "text", id: "f-activity", list: "activities", value: params.get("activity") || "", placeholder: "any" });
    ctl.rank = h("input", { type: "number", id: "f-rank", min: 0, value: params.get("rank") || "", placeholder: "any" });
    ctl.rank.style.width = "90px";
    ctl.host = h("input", { type: "text", id: "f-host", value: params.get("host") || "", placeholder: "any" });
    ctl.fields = h("input", { type: "text", class: "mono", id: "f-fields", value: params.get("fields") || "",
      placeholder: "used.path, generated.energy" });
    const datalist = h("datalist", { id: "activities" });
    const formError = h("p", { class: "error-text", id: "filter-error", hidden: true });
    const apply = () => {
      const text = ctl.filter.value.trim();
      if (text) {
        try { const v = JSON.parse(text); if (typeof v !== "object" || Array.isArray(v) || v === null) throw new Error("a filter is a JSON object"); }
        catch (e) { ctl.filter.classList.add("invalid"); formError.hidden = false; formError.textContent = "Filter: " + e.message; return; }
      }
      go({ filter: text, status: ctl.status.value, activity: ctl.activity.value.trim(), rank: ctl.rank.value,
        host: ctl.host.value.trim(), fields: ctl.fields.value.trim() });
    };
    const form = h("form", { class: "toolbar", id: "tasks-form", on: { submit: (ev) => { ev.preventDefault(); apply(); } } },
      sources.length > 1 ? h("label", {}, "Source", h("select", { id: "f-source", on: { change: (ev) => { location.hash = tasksHash(ev.target.value, {}); } } },
        sources.map((s) => h("option", { value: s.name, selected: s.name === source }, s.name)))) : null,
      h("label", { class: "grow" }, "Filter (JSON, as flowcept query --filter)", ctl.filter),
      h("label", {}, "Status", ctl.status),
      h("label", {}, "Activity", ctl.activity, datalist),
      h("label", {}, "Rank", ctl.rank),
      h("label", {}, "Host", ctl.host),
      h("label", {}, "Also show fields", ctl.fields),
      h("button", { type: "submit", class: "primary", id: "f-apply" }, "Apply"),
      h("button", { type: "button", on: { click: () => { location.hash = tasksHash(source, {}); } } }, "Clear"));
    add(page, [h("div", { class: "page-head" }, h("h1", {}, "Tasks"), h("span", { class: "sub" }, source)),
      card("Filter", null, h("div", { class: "body" }, form, formError))]);
    api("/api/v1/stats", { source, by: "activity" }).then((s) => {
      for (const r of s.items) datalist.appendChild(h("option", { value: r.activity }));
    }).catch(() => {});

    let flt;
    try { flt = combinedFilter(params); } catch (e) {
      formError.hidden = false; formError.textContent = "Filter: " + e.message; ctl.filter.classList.add("invalid");
      return;
    }
    const projection = ["task_id", "activity_id", "status", "rank", "hostname", "started_at", "start_ns", "end_ns", ...fields];
    let data;
    try {
      data = await api("/api/v1/tasks", { source, filter: flt, projection: projection.join(","), sort, limit, cursor });
    } catch (e) {
      if (!(e instanceof ApiError) || e.status >= 500) throw e;
      formError.hidden = false; formError.textContent = e.message;
      return;
    }
    const qkey = JSON.stringify([source, flt, sort, limit]);
    if (!cursors.has(qkey)) cursors.set(qkey, [""]);
    const seen = cursors.get(qkey);
    const pageNo = Math.max(0, seen.indexOf(cursor));
    if (data.next_cursor && seen[pageNo + 1] !== data.next_cursor) { seen.length = pageNo + 1; seen.push(data.next_cursor); }
    const cols = [...BASE_COLUMNS, ...fields.map((f) => [f, f])];
    const rows = data.items.map((d) => h("tr", { "data-task": d.task_id, "data-status": d.status },
      h("td", { class: "mono" }, link(taskHash(source, d.task_id), d.task_id, { class: "task-link" })),
      h("td", { class: "wrap" }, d.activity_id),
      h("td", {}, badge(d.status)),
      h("td", { class: "num" }, d.rank),
      h("td", {}, d.hostname),
      h("td", {}, fmtTime(d.started_at)),
      h("td", { class: "num" }, fmtDur(durOf(d))),
      fields.map((f) => h("td", { class: "cut mono", title: cellText(getPath(d, f)) }, cellText(getPath(d, f))))));
    const exportFmt = h("select", { id: "export-format" }, caps.export_formats.map((f) => h("option", { value: f }, f.toUpperCase())));
    const exportNote = h("span", { class: "note", id: "export-note" });
    const exportBtn = h("button", { class: "small", id: "export", type: "button", on: { click: async () => {
      exportBtn.disabled = true;
      exportNote.textContent = "preparing…";
      try {
        const fmt = exportFmt.value;
        const r = await request("/api/v1/tasks/export", { source, filter: flt, sort, format: fmt,
          projection: fmt === "jsonl" ? (fields.length ? projection.join(",") : "") : ["task_id", "activity_id", "status", "rank", "hostname", "started_at", "duration_s", ...fields].join(",") });
        const blob = await r.blob();
        const a = h("a", { href: URL.createObjectURL(blob), download: `${source}-tasks.${fmt}` });
        document.body.appendChild(a);
        a.click();
        setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
        exportNote.textContent = `${fmtInt(blob.size)} bytes`;
      } catch (e) { exportNote.textContent = "export failed: " + e.message; } finally { exportBtn.disabled = false; }
    } } }, "Export all matches");
    const sizeSel = h("select", { id: "page-size", on: { change: (ev) => go({ limit: ev.target.value }) } },
      PAGE_SIZES.map((n) => h("option", { value: n, selected: n === limit }, n + " / page")));
    const offset = data.offset;
    // the page comes first; the number of matches follows when the server has counted them
    const countText = (total) => total ? `${fmtInt(offset + 1)}–${fmtInt(offset + data.count)} of ${fmtInt(total)}` : "no task matches";
    const countInfo = h("span", { class: "info", id: "tasks-count" }, data.total != null ? countText(data.total)
      : data.count ? `${fmtInt(offset + 1)}–${fmtInt(offset + data.count)} of …` : "no task matches");
    if (data.total == null && data.count) {
      api("/api/v1/tasks/count", { source, filter: flt }).then((c) => { countInfo.textContent = countText(c.total); }).catch(() => {});
    }
    const nav = h("div", { class: "pager" },
      countInfo,
      exportFmt, exportBtn, exportNote, sizeSel,
      h("button", { class: "small", disabled: !cursor, on: { click: () => go({}) } }, "First"),
      h("button", { class: "small", disabled: !cursor, id: "prev", on: { click: () => go({ cursor: seen[pageNo - 1] || "" }) } }, "Previous"),
      h("button", { class: "small", disabled: !data.next_cursor, id: "next", on: { click: () => go({ cursor: data.next_cursor }) } }, "Next"));
    const onSort = (s) => go({ sort: s });
    page.appendChild(card("Matches", h("span", { class: "mono note", title: "the filter sent to the server" }, JSON.stringify(flt)),
      h("div", { class: "table-wrap" }, h("table", { class: "data", id: "tasks-table" },
        h("thead", {}, h("tr", {}, cols.map(([l, f, c]) => f ? sortHeader(l, f === "started_at" ? "start_ns" : f, sort, onSort, c) : h("th", { class: c || "" }, l)))),
        h("tbody", {}, rows))),
      rows.length ? null : h("div", { class: "empty" }, "No task matches this filter."),
      nav));
  }
  function getPath(d, path) {
    let v = d;
    for (const p of path.split(".")) { if (v === null || typeof v !== "object" || !(p in v)) return undefined; v = v[p]; }
    return v;
  }
  function cellText(v) {
    if (v === undefined || v === null) return "";
    const s = typeof v === "object" ? JSON.stringify(v) : String(v);
    return s.length > 300 ? s.slice(0, 300) + "…" : s;
  }

  // Task ----------------------------------------------------------------------------------------------
  async function taskView(page, source, id, current) {
    const [d, raw] = await apiText("/api/v1/tasks/" + encodeURIComponent(id), { source });
    const dur = durOf(d);
    const wfLink = d.workflow_id ? link(workflowHash(source, d.workflow_id), d.workflow_id, { class: "mono" }) : "";
    add(page, [
      h("div", { class: "crumbs" }, link("#/runs", "Runs"), h("span", { class: "sep" }, "/"),
        d.workflow_id ? link(workflowHash(source, d.workflow_id), "workflow " + shortId(d.workflow_id)) : source,
        h("span", { class: "sep" }, "/"), link(tasksHash(source, { filter: d.workflow_id ? JSON.stringify({ workflow_id: d.workflow_id }) : "" }), "tasks")),
      h("div", { class: "page-head" }, h("h1", { id: "task-activity" }, d.activity_id), badge(d.status),
        h("span", { class: "sub", id: "task-id" }, d.task_id)),
    ]);
    if (d.error || d.status === "ERROR") {
      const e = d.error || {};
      page.appendChild(h("div", { class: "error-panel", id: "task-error" },
        h("div", { class: "type" }, e.type || "failed (no error recorded)"),
        e.message ? h("div", { class: "msg" }, e.message) : null,
        e.traceback ? h("details", {}, h("summary", {}, "traceback"), h("pre", { class: "raw" }, e.traceback)) : null));
    }
    const facts = [["Task id", h("span", { class: "mono" }, d.task_id)], ["Workflow", wfLink],
      ["Parent", d.parent_task_id ? link(taskHash(source, d.parent_task_id), d.parent_task_id, { class: "mono", id: "parent-link" }) : "—"],
      ["Status", badge(d.status)], ["Rank", d.rank], ["Thread", d.thread_id], ["Host", d.hostname],
      ["Started", fmtTime(d.started_at)], ["Ended", fmtTime(d.ended_at)], ["Duration", fmtDur(dur)],
      ["Tags", Array.isArray(d.tags) && d.tags.length ? h("span", { class: "chips" }, d.tags.map((t) => h("span", { class: "chip" }, String(t)))) : "—"]];
    const telemetry = pickTelemetry(d);
    const children = h("div", { class: "body flush" }, h("div", { class: "loading" }, "Loading…"));
    const graphBody = h("div", { class: "graph", id: "lineage" }, h("div", { class: "loading" }, "Loading…"));
    const graphNote = h("span", { id: "lineage-counts" });
    add(page, [
      h("div", { class: "grid2" },
        card("Task", null, h("div", { class: "body" }, h("dl", { class: "facts", id: "task-facts" }, facts.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])))),
        h("div", {},
          card("Inputs (used)", null, h("div", { class: "body json", id: "task-used" }, jsonTree(d.used))),
          card("Outputs (generated)", null, h("div", { class: "body json", id: "task-generated" }, jsonTree(d.generated))))),
      card("Lineage", graphNote, graphBody),
      card("Children", null, children),
      d.custom_metadata && Object.keys(d.custom_metadata).length
        ? card("Custom metadata", null, h("div", { class: "body json" }, jsonTree(withoutTelemetry(d.custom_metadata)))) : null,
      telemetry ? card("Telemetry", null, h("div", { class: "body json", id: "task-telemetry" }, jsonTree(telemetry))) : null,
      card("All fields", null, h("details", {}, h("summary", { class: "body note" }, "the task as the API returns it"),
        h("pre", { class: "raw", id: "task-raw" }, raw))),
    ]);
    api("/api/v1/tasks", { source, filter: { parent_task_id: d.task_id }, limit: 20, count: true,
      projection: "task_id,activity_id,status,rank,started_at,start_ns,end_ns" }).then((c) => {
      clear(children);
      if (!c.total) { children.appendChild(h("div", { class: "empty" }, "No child tasks.")); return; }
      add(children, [h("table", { class: "data", id: "children-table" },
        h("thead", {}, h("tr", {}, h("th", {}, "Task"), h("th", {}, "Activity"), h("th", {}, "Status"), h("th", { class: "num" }, "Rank"), h("th", { class: "num" }, "Duration"))),
        h("tbody", {}, c.items.map((x) => h("tr", {},
          h("td", { class: "mono" }, link(taskHash(source, x.task_id), x.task_id)), h("td", { class: "wrap" }, x.activity_id),
          h("td", {}, badge(x.status)), h("td", { class: "num" }, x.rank), h("td", { class: "num" }, fmtDur(durOf(x))))))),
      c.total > c.count ? h("div", { class: "pager" }, h("span", { class: "info" }, `${c.count} of ${fmtInt(c.total)}`),
        link(tasksHash(source, { filter: JSON.stringify({ parent_task_id: d.task_id }) }), "all children →")) : null]);
    }).catch((e) => { clear(children).appendChild(h("div", { class: "banner error" }, e.message)); });
    // a large source's lineage index is built once, in the background, over more than one
    // query's budget: while the server says so, the box shows its progress and asks again
    const loadGraph = () => api("/api/v1/tasks/" + encodeURIComponent(d.task_id) + "/graph", { source, max_nodes: 12 }).then((g) => {
      graphNote.textContent = `${fmtInt(g.ancestors)} upstream · ${fmtInt(g.descendants)} downstream`;
      clear(graphBody).appendChild(lineageGraph(g, source));
    }).catch((e) => {
      const building = e.status === 503 && /is being built/.test(e.message);
      clear(graphBody).appendChild(h("div", { class: building ? "loading" : "banner error" }, e.message));
      if (building) setTimeout(() => { if (graphBody.isConnected) loadGraph(); }, 3000);
    });
    loadGraph();
  }
  function pickTelemetry(d) {
    const out = {};
    for (const src of [d, d.custom_metadata || {}]) {
      for (const k of ["telemetry_at_start", "telemetry_at_end", "telemetry"]) if (src && src[k]) out[k] = src[k];
    }
    return Object.keys(out).length ? out : null;
  }
  function withoutTelemetry(m) {
    const o = Object.assign({}, m);
    delete o.telemetry_at_start; delete o.telemetry_at_end; delete o.telemetry;
    return o;
  }

  // a bounded, expandable view of a JSON value: long strings cut, big containers folded
  const MAX_STR = 240, MAX_ITEMS = 40;
  function jsonTree(v) {
    if (v === undefined) return h("span", { class: "muted" }, "—");
    return jsonNode(v, 0);
  }
  function jsonNode(v, depth) {
    if (v === null) return h("span", { class: "lit" }, "null");
    if (typeof v === "boolean") return h("span", { class: "lit" }, String(v));
    if (typeof v === "number") return h("span", { class: "num" }, String(v));
    if (typeof v === "string") {
      if (v.length <= MAX_STR) return h("span", { class: "str" }, JSON.stringify(v));
      const s = h("span", { class: "str" }, JSON.stringify(v.slice(0, MAX_STR)) + "…");
      const more = h("button", { class: "link more", type: "button" }, `show all ${fmtInt(v.length)} characters`);
      more.addEventListener("click", () => { s.textContent = JSON.stringify(v); more.remove(); });
      return h("span", {}, s, more);
    }
    const isArr = Array.isArray(v);
    const entries = isArr ? v.map((x, i) => [i, x]) : Object.entries(v);
    if (!entries.length) return h("span", { class: "lit" }, isArr ? "[]" : "{}");
    const body = h("div");
    let shown = 0;
    const showMore = () => {
      const next = entries.slice(shown, shown + MAX_ITEMS);
      for (const [k, x] of next) body.appendChild(h("div", { class: "row" }, isArr ? null : h("span", { class: "key" }, k), isArr ? null : ": ", jsonNode(x, depth + 1)));
      shown += next.length;
      if (shown < entries.length) {
        const b = h("button", { class: "link more", type: "button" }, `show ${Math.min(MAX_ITEMS, entries.length - shown)} more of ${fmtInt(entries.length - shown)}`);
        b.addEventListener("click", () => { b.remove(); showMore(); });
        body.appendChild(b);
      }
    };
    showMore();
    if (depth === 0) return body;
    const det = h("details", { open: depth < 2 && entries.length <= 8 }, h("summary", {}, isArr ? `[${entries.length} items]` : `{${entries.length} keys}`), body);
    return det;
  }

  // the lineage graph: columns by distance from the task, upstream left, downstream right
  function lineageGraph(g, source) {
    if (g.nodes.length <= 1) return h("div", { class: "empty" }, "No upstream or downstream tasks.");
    const byId = new Map(g.nodes.map((n) => [n.task_id, n]));
    const out = new Map(), inn = new Map();
    for (const e of g.edges) {
      if (!out.has(e.from)) out.set(e.from, []);
      if (!inn.has(e.to)) inn.set(e.to, []);
      out.get(e.from).push(e.to); inn.get(e.to).push(e.from);
    }
    const focus = g.nodes.find((n) => n.side === "self");
    // longest-path layers, so that every edge points right: upstream tasks by their longest
    // path to this task, downstream ones by the longest path from it
    const layer = new Map([[focus.task_id, 0]]);
    function depth(id, adj, side, memo, stack) {
      if (id === focus.task_id) return 0;
      if (memo.has(id)) return memo.get(id);
      if (stack.has(id)) return -Infinity;
      stack.add(id);
      let best = -Infinity;
      for (const x of adj.get(id) || []) {
        const n = byId.get(x);
        if (n && (n.side === side || n.side === "self")) best = Math.max(best, depth(x, adj, side, memo, stack) + 1);
      }
      stack.delete(id);
      memo.set(id, best);
      return best;
    }
    const memoUp = new Map(), memoDown = new Map();
    for (const n of g.nodes) {
      if (n.side === "up") { const d = depth(n.task_id, out, "up", memoUp, new Set()); if (isFinite(d)) layer.set(n.task_id, -d); }
      if (n.side === "down") { const d = depth(n.task_id, inn, "down", memoDown, new Set()); if (isFinite(d)) layer.set(n.task_id, d); }
    }
    let lo = 0, hi = 0;
    for (const v of layer.values()) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    for (const n of g.nodes) if (!layer.has(n.task_id)) layer.set(n.task_id, n.side === "up" ? lo - 1 : hi + 1);
    const cols = new Map();
    for (const n of g.nodes) {
      const l = layer.get(n.task_id);
      if (!cols.has(l)) cols.set(l, []);
      cols.get(l).push(n);
    }
    const keys = [...cols.keys()].sort((a, b) => a - b);
    for (const k of keys) cols.get(k).sort((a, b) => a.started_at - b.started_at);
    const NW = 168, NH = 40, GX = 56, GY = 12;
    const maxRows = Math.max(...keys.map((k) => cols.get(k).length));
    const colOf = new Map(keys.map((k, i) => [k, i]));
    const skips = g.edges.filter((e) => layer.has(e.from) && layer.has(e.to) &&
      Math.abs(colOf.get(layer.get(e.to)) - colOf.get(layer.get(e.from))) > 1);
    const ARC = skips.length ? 26 + 12 * Math.min(6, skips.length) : 0;   // room above for edges that skip columns
    const TOPY = 22 + ARC;
    const width = keys.length * (NW + GX) - GX + 16, height = TOPY + maxRows * (NH + GY) + 4;
    const pos = new Map();
    keys.forEach((k, ci) => {
      const col = cols.get(k);
      const off = ((maxRows - col.length) * (NH + GY)) / 2;
      col.forEach((n, ri) => pos.set(n.task_id, { x: 8 + ci * (NW + GX), y: TOPY + off + ri * (NH + GY), ci }));
    });
    const svg = h("svg:svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "lineage graph" });
    keys.forEach((k, ci) => svg.appendChild(h("svg:text", { x: 8 + ci * (NW + GX) + NW / 2, y: 12, "text-anchor": "middle", class: "col" },
      k === 0 ? "this task" : k < 0 ? `upstream ${-k}` : `downstream ${k}`)));
    let arcNo = 0;
    for (const e of g.edges) {
      const a = pos.get(e.from), b = pos.get(e.to);
      if (!a || !b) continue;
      const fwd = a.x < b.x;
      const x1 = fwd ? a.x + NW : a.x, y1 = a.y + NH / 2, x2 = fwd ? b.x : b.x + NW, y2 = b.y + NH / 2;
      let d;
      if (Math.abs(b.ci - a.ci) > 1) {   // over the columns between, not through their boxes
        const lift = Math.min(a.y, b.y) - (14 + (arcNo++ % 6) * 12) / 0.75;   // a cubic peaks at 3/4 of its control height
        const ax = a.x + NW / 2, bx = b.x + NW / 2;
        d = `M${ax},${a.y} C${ax},${lift} ${bx},${lift} ${bx},${b.y}`;
      } else {
        const dx = Math.max(30, Math.abs(x2 - x1) / 2) * (fwd ? 1 : -1);
        d = `M${x1},${y1} C${x1 + dx},${y1} ${x2 - dx},${y2} ${x2},${y2}`;
      }
      svg.appendChild(h("svg:path", { class: "edge " + e.kind, d, "marker-end": "url(#arrow)" }));
    }
    const defs = h("svg:defs", {}, h("svg:marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
      h("svg:path", { d: "M0,0 L10,5 L0,10 z", fill: "#9aa6b6" })));
    svg.insertBefore(defs, svg.firstChild);
    for (const n of g.nodes) {
      const p = pos.get(n.task_id);
      const name = String(n.activity_id || "");
      const grp = h("svg:g", { class: `node ${n.status === "ERROR" ? "ERROR" : ""} ${n.side === "self" ? "self" : ""}`, "data-task": n.task_id,
        transform: `translate(${p.x},${p.y})`, tabindex: 0, role: "link" },
        h("svg:title", {}, `${name}\n${n.task_id}\n${n.status} · rank ${n.rank}`),
        h("svg:rect", { width: NW, height: NH, rx: 6 }),
        h("svg:text", { x: 10, y: 16 }, name.length > 22 ? name.slice(0, 21) + "…" : name),
        h("svg:text", { x: 10, y: 31, class: "sub" }, `${n.status} · rank ${n.rank}`));
      const open = () => { location.hash = taskHash(source, n.task_id); };
      grp.addEventListener("click", open);
      grp.addEventListener("keydown", (ev) => { if (ev.key === "Enter") open(); });
      svg.appendChild(grp);
    }
    return h("div", {}, svg, h("div", { class: "note" },
      "Solid arrows: data (a value one task generated and a later one used); dashed: parent → child (recorded inside). Click a task to open it."));
  }

  // Ask -------------------------------------------------------------------------------------------

  async function askView(page, params, current) {
    if (!caps.ask.enabled) {
      page.appendChild(h("div", { class: "banner info" }, "No LLM endpoint is configured on this server (flowcept serve --ask-base-url URL --ask-model NAME)."));
      return;
    }
    const q = h("textarea", { id: "ask-question", rows: 3, placeholder: "Which tasks failed, and what did they use?" }, params.get("q") || "");
    const src = h("select", { id: "ask-source" }, sources.map((s) => h("option", { value: s.name }, s.name)));
    const out = h("div", { id: "ask-answer" });
    const btn = h("button", { type: "submit", class: "primary", id: "ask-send" }, "Ask");
    const status = h("span", { class: "status-line" });
    const form = h("form", { on: { submit: async (ev) => {
      ev.preventDefault();
      const question = q.value.trim();
      if (!question) return;
      btn.disabled = true;
      status.textContent = `asking ${caps.ask.model}… (the model may take a while)`;
      clear(out);
      try {
        const r = await post("/api/v1/ask", { question, source: src.value });
        status.textContent = `${r.steps} model call${r.steps === 1 ? "" : "s"}, ${r.calls.length} quer${r.calls.length === 1 ? "y" : "ies"}, ${r.seconds.toFixed(1)} s` +
          (r.stopped !== "answer" ? ` (stopped: ${r.stopped})` : "");
        add(out, [card("Answer", caps.ask.model, h("div", { class: "body answer", id: "ask-text" }, r.answer || "(no answer)")),
          card(`Queries it ran (${r.calls.length})`, null, r.calls.length ? h("div", { class: "table-wrap" }, h("table", { class: "data", id: "ask-calls" },
            h("thead", {}, h("tr", {}, h("th", {}, "Tool"), h("th", {}, "Arguments"), h("th", {}, "What it got back"), h("th", {}, ""))),
            h("tbody", {}, r.calls.map((c) => h("tr", {}, h("td", { class: "mono" }, c.name),
              h("td", { class: "wrap mono" }, JSON.stringify(c.arguments)),
              h("td", { class: "wrap" }, h("details", {}, h("summary", { class: "note" }, fmtInt((c.result || "").length) + " characters"),
                h("pre", { class: "raw" }, c.result || ""))),
              h("td", {}, c.name === "find_tasks" || c.name === "failures" ? link(tasksHash(c.arguments.source || src.value,
                { filter: JSON.stringify(c.arguments.filter || {}), status: c.name === "failures" ? "ERROR" : "" }), "open in Tasks") : null)))))) :
            h("div", { class: "empty" }, "The model answered without running a query."))]);
      } catch (e) {
        status.textContent = "";
        out.appendChild(h("div", { class: "banner error" }, e.message));
      } finally { btn.disabled = false; }
    } } }, q, h("div", { class: "toolbar" }, sources.length > 1 ? h("label", {}, "Source", src) : null, btn, status));
    add(page, [h("div", { class: "page-head" }, h("h1", {}, "Ask"), h("span", { class: "sub" }, caps.ask.model)),
      card("Question", "answered by an LLM agent over the same query API", h("div", { class: "body" }, form)), out]);
  }

  render();
})();

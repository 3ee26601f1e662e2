// adrank dashboard: plain JavaScript, no build step. It reads the REST API
// (/v1/domains, /v1/domains/{d}/experiment) for what is in force now and
// /ui/api/history/{d} for the samples the gateway keeps, and draws them
// with uPlot. window.adrankUI says what is drawn (the browser test reads it).
(function () {
  "use strict";
  const state = {domains: [], reports: {}, selected: new URLSearchParams(location.search).get("domain") || "", charts: {}, errors: [], refreshed: 0};
  window.adrankUI = state;
  const $ = (sel) => document.querySelector(sel);
  const el = (tag, attrs, ...kids) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v; else e.setAttribute(k, v);
    }
    for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(String(k)));
    return e;
  };
  const pct = (x, d = 1) => (100 * x).toFixed(d) + "%";
  const get = async (path) => {
    const r = await fetch(path, {cache: "no-store"});
    if (!r.ok) throw new Error(path + ": HTTP " + r.status);
    return r.json();
  };

  // Wilson score interval of a proportion, 95%.
  function wilson(clicks, n) {
    if (n <= 0) return [null, null, null];
    const z = 1.96, p = clicks / n, z2 = z * z;
    const center = (p + z2 / (2 * n)) / (1 + z2 / n);
    const half = (z * Math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))) / (1 + z2 / n);
    return [p, Math.max(0, center - half), Math.min(1, center + half)];
  }

  function split(d, r) {
    const out = [];
    if (!r || !r.experiment_id) return [el("span", {}, "production " + d.production_version + " 100%")];
    if (r.ab) {
      const total = (r.ab.weights || []).reduce((a, b) => a + b, 0) || 1;
      r.ab.arms.forEach((a, i) => out.push(el("span", {class: "badge"}, "A/B " + a.version + " " + pct((r.ab.weights[i] || 0) / total, 0))));
      if (r.ab.srm_flagged) out.push(el("span", {class: "bad"}, " SRM!"));
    }
    if (r.canary) {
      const c = r.canary, cls = c.state === "rolled_back" ? "bad" : c.state === "running" ? "warn" : "ok";
      out.push(el("span", {class: "badge"}, "canary " + c.version + " " + c.share_percent.toFixed(1) + "%"), el("span", {class: cls}, " " + c.state + " (step " + (c.step + 1) + ")"));
    }
    if (r.bandit) r.bandit.arms.forEach((a) => out.push(el("span", {class: "badge"}, "bandit " + a.version + " " + pct(a.allocation, 0))));
    if (r.interleave) out.push(el("span", {class: "badge"}, "interleaving " + r.interleave.a + "×" + r.interleave.b + " on " + pct(r.interleave.fraction, 0)));
    if (r.shadow && r.shadow.length) out.push(el("span", {class: "badge"}, "shadow " + r.shadow.map((s) => s.version).join(", ")));
    return out;
  }

  function renderDomains() {
    const body = $("#domains tbody");
    body.replaceChildren();
    for (const d of state.domains) {
      const r = state.reports[d.domain];
      const versions = el("td");
      for (const v of d.versions) {
        const cls = "badge" + (v.version === d.production_version ? " prod" : "") + (v.healthy_instances === 0 ? " down" : "");
        versions.append(el("span", {class: cls, title: "model " + v.model_sha256}, v.version + " " + v.healthy_instances + "/" + v.total_instances));
      }
      const errs = [d.config_error, d.auction_config_error && "auction: " + d.auction_config_error, r && r.config_error && "experiment: " + r.config_error].filter(Boolean);
      body.append(el("tr", {},
        el("td", {}, d.domain), el("td", {}, d.production_version || "-"), el("td", {}, d.mode || "-"), versions,
        el("td", {}, ...split(d, r)),
        el("td", {class: errs.length ? "bad" : "ok"}, errs.length ? errs.join("; ") : "none")));
    }
  }

  function renderTabs() {
    const nav = $("#tabs");
    nav.replaceChildren();
    for (const d of state.domains) {
      const b = el("button", {class: d.domain === state.selected ? "on" : ""}, d.domain);
      b.onclick = () => { state.selected = d.domain; history.replaceState(null, "", "?domain=" + d.domain); refresh(); };
      nav.append(b);
    }
  }

  // chart draws one uPlot chart: x in seconds, series [{label, values, stroke, band: [lo, hi]}].
  function chart(name, title, xs, series, opts) {
    const box = el("div", {class: "chart", "data-chart": name}, el("h3", {}, title));
    if (opts && opts.note) box.append(el("div", {class: "note"}, opts.note));
    const data = [xs], cfg = [{}], bands = [];
    const colors = ["#1565c0", "#c62828", "#2e7d32", "#6a1b9a", "#ef6c00", "#00838f"];
    series.forEach((s, i) => {
      const color = s.stroke || colors[i % colors.length];
      data.push(s.values);
      cfg.push({label: s.label, stroke: color, width: 2, spanGaps: true, value: (u, v) => (v == null ? "-" : opts && opts.fmt ? opts.fmt(v) : v.toFixed(4))});
      if (s.band) {
        data.push(s.band[1], s.band[0]);
        const hi = data.length - 2, lo = data.length - 1;
        cfg.push({label: s.label + " 95% high", stroke: "transparent", show: true, points: {show: false}, value: () => ""});
        cfg.push({label: s.label + " 95% low", stroke: "transparent", points: {show: false}, value: () => ""});
        bands.push({series: [hi, lo], fill: color + "33"});
      }
    });
    // A legend of our own: the series' names and latest values, at a glance.
    const legend = el("div", {class: "legend"});
    series.forEach((s, i) => {
      const last = [...s.values].reverse().find((v) => v != null);
      legend.append(el("span", {style: "color:" + (s.stroke || colors[i % colors.length])}, "■ " + s.label + ": " + (last == null ? "-" : opts && opts.fmt ? opts.fmt(last) : last.toFixed(4))));
    });
    box.append(legend);
    const u = new uPlot({width: 560, height: 220, series: cfg, bands, scales: {x: {time: true}, y: opts && opts.y ? {range: opts.y} : {}},
      axes: [{}, {size: 70, values: (u, ticks) => ticks.map((v) => (opts && opts.fmt ? opts.fmt(v) : v))}], legend: {show: false}}, data, box);
    state.charts[name] = {series: series.length, points: xs.length, nonNull: series.reduce((n, s) => n + s.values.filter((v) => v != null).length, 0)};
    $("#charts").append(box);
    return u;
  }

  function renderCharts(h, r) {
    const charts = $("#charts");
    charts.replaceChildren();
    state.charts = {};
    const pts = h.points || [];
    const xs = pts.map((p) => p.t / 1000);
    const summary = $("#summary");
    summary.replaceChildren(el("span", {class: "note"}, pts.length + " samples, one every " + (h.sample_ms / 1000) + " s, kept by the gateway since it started"));
    if (!r || !r.experiment_id) {
      charts.append(el("p", {}, "No experiment in force: production " + (r ? r.production_version : "") + " serves every request."));
    }
    const versionsOf = (key) => [...new Set(pts.flatMap((p) => (p[key] || []).map((a) => a.version)))];
    const arms = versionsOf("arms");
    if (arms.length) {
      const series = arms.map((v) => {
        const w = pts.map((p) => { const a = (p.arms || []).find((x) => x.version === v); return a ? wilson(a.clicks, a.impressions) : [null, null, null]; });
        return {label: v, values: w.map((x) => x[0]), band: [w.map((x) => x[1]), w.map((x) => x[2])]};
      });
      chart("ab-ctr", "A/B: CTR per arm, with its 95% interval", xs, series, {fmt: (v) => pct(v, 2), note: r && r.ab ? "sample ratio p = " + r.ab.srm_p_value.toPrecision(3) + (r.ab.srm_flagged ? " — MISMATCH: do not trust the results" : " (ok)") : ""});
    }
    const bandit = versionsOf("bandit");
    if (bandit.length) {
      chart("bandit-allocation", "Bandit: allocation over time", xs, bandit.map((v) => ({label: v, values: pts.map((p) => { const a = (p.bandit || []).find((x) => x.version === v); return a ? a.allocation : null; })})), {fmt: (v) => pct(v, 0), y: [0, 1]});
    }
    if (pts.some((p) => p.canary)) {
      chart("canary-share", "Canary: share of users (steps)", xs, [{label: "canary share %", values: pts.map((p) => (p.canary ? p.canary.share : null))}], {fmt: (v) => v.toFixed(1) + "%", note: r && r.canary ? "state " + r.canary.state + (r.canary.reason ? ": " + r.canary.reason : "") : ""});
      const ctr = (key) => pts.map((p) => (p.canary && p.canary[key].impressions > 0 ? p.canary[key].clicks / p.canary[key].impressions : null));
      chart("canary-guardrail", "Canary guardrail: CTR, and the p-value of the drop", xs, [
        {label: "canary CTR", values: ctr("canary")}, {label: "control CTR", values: ctr("control")},
        {label: "guardrail p", values: pts.map((p) => (p.canary ? p.canary.ctr_p : null))}], {fmt: (v) => v.toFixed(3)});
    }
    if (pts.some((p) => p.interleave)) {
      chart("interleave", "Interleaving: wins", xs, [
        {label: "wins A", values: pts.map((p) => (p.interleave ? p.interleave.wins_a : null))},
        {label: "wins B", values: pts.map((p) => (p.interleave ? p.interleave.wins_b : null))}], {fmt: (v) => v.toFixed(0)});
    }
    const shadows = versionsOf("shadow");
    if (shadows.length) {
      const s = (v, key) => pts.map((p) => { const x = (p.shadow || []).find((y) => y.version === v); return x ? x[key] : null; });
      chart("shadow-psi", "Shadow: PSI against production (0.1 shifts, 0.25 large)", xs, shadows.map((v) => ({label: v, values: s(v, "psi")})), {fmt: (v) => v.toFixed(3)});
      chart("shadow-topk", "Shadow: top-k overlap with production", xs, shadows.map((v) => ({label: v, values: s(v, "topk_overlap")})), {fmt: (v) => pct(v, 0), y: [0, 1]});
    }
  }

  async function refresh() {
    try {
      const list = await get("/v1/domains");
      state.domains = list.domains || [];
      const reports = await Promise.all(state.domains.map((d) => get("/v1/domains/" + encodeURIComponent(d.domain) + "/experiment").catch(() => null)));
      state.domains.forEach((d, i) => (state.reports[d.domain] = reports[i]));
      if (!state.domains.some((d) => d.domain === state.selected) && state.domains.length) state.selected = state.domains[0].domain;
      renderDomains();
      renderTabs();
      if (state.selected) renderCharts(await get("/ui/api/history/" + encodeURIComponent(state.selected)), state.reports[state.selected]);
      state.refreshed++;
      const s = $("#status");
      s.className = "";
      s.textContent = "updated " + new Date().toLocaleTimeString();
    } catch (e) {
      state.errors.push(String(e));
      const s = $("#status");
      s.className = "bad";
      s.textContent = "cannot reach the API: " + e.message;
    }
  }
  refresh();
  setInterval(refresh, Number(new URLSearchParams(location.search).get("every") || 5000));
})();

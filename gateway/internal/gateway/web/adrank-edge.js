// adrank-edge.js: the adrank edge client. Plain JavaScript, no framework,
// no build step. It ranks on the device with the bundle the gateway serves
// (the project's own scorer compiled to WebAssembly, and the model), works
// offline once started, and sends what it showed and what was clicked when
// it is online again.
//
//   const edge = new AdrankEdge({domain: "feed", userID: "u42", device: "mobile"});
//   await edge.start();                       // manifest, bundle (sha256-checked), scorer
//   await edge.sync(["ad1", "ad2", ...]);     // the user's and the ads' features, kept for offline
//   const r = edge.rank({candidates: [{ad_id: "ad1", advertiser_id: "adv1", bid_micros: 900000}], slots: 2});
//   edge.click(r.results[0].impression_id);   // the device's ID; sent with the router's signed one
//   await edge.flush();                       // impressions, then events (also on "online")
(function (global) {
  "use strict";

  const hex = (buf) => Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, "0")).join("");
  const sha256 = async (bytes) => hex(await crypto.subtle.digest("SHA-256", bytes));
  const utf8 = (s) => new TextEncoder().encode(s);

  class BundleError extends Error {}

  class AdrankEdge {
    constructor(opts) {
      this.base = opts.base || "";
      this.domain = opts.domain;
      this.userID = opts.userID;
      this.device = opts.device || "";
      this.store = opts.storage || global.localStorage;
      this.token = opts.token || ""; // an events token, for a router started with --tokens
      this.key = "adrank-edge:" + this.domain + ":";
      this.manifest = null; // the manifest in force
      this.bundle = null; // {version, model_sha256, bundle_sha256}
      this.assignment = null;
      this.lastError = null; // why the latest bundle was refused, if it was
      this.features = this._load("features:" + this.userID) || {user: {}, ads: {}};
      this.timings = {};
      global.addEventListener && global.addEventListener("online", () => this.flush().catch(() => {}));
    }

    _load(k) {
      try {
        return JSON.parse(this.store.getItem(this.key + k));
      } catch (e) {
        return null;
      }
    }
    _save(k, v) {
      this.store.setItem(this.key + k, JSON.stringify(v));
    }

    // start fetches the manifest and the user's bundle, checks every file's
    // sha256 and the bundle's, and loads the scorer. A bundle that fails a
    // check is refused (lastError says why): the last good one keeps
    // ranking. Offline, the bundle cached by an earlier start is used.
    async start() {
      const t0 = performance.now();
      let manifest;
      try {
        const resp = await fetch(this.base + "/v1/edge/" + this.domain + "/manifest", {cache: "no-cache"});
        if (!resp.ok) throw new Error("manifest: HTTP " + resp.status);
        manifest = await resp.json();
        this._save("manifest", manifest);
      } catch (e) {
        manifest = this._load("manifest");
        if (!manifest) throw e;
      }
      try {
        await this._use(manifest);
      } catch (e) {
        if (!(e instanceof BundleError)) throw e;
        this.lastError = e.message;
        if (!this.bundle) throw e; // nothing good to fall back to
      }
      this.timings.start_ms = performance.now() - t0;
      return this.bundle;
    }

    async _use(manifest) {
      const prod = manifest.bundles[manifest.plan.production];
      if (!prod) throw new BundleError("no bundle for production version " + manifest.plan.production);
      if (!this.bundle || this.bundle.scorer !== prod.files["scorer.wasm"].sha256) {
        await this._loadScorer(prod);
      }
      const a = JSON.parse(global.adrankEdge.assign(JSON.stringify(manifest.plan), this.userID));
      if (a.error) throw new BundleError(a.error);
      const b = manifest.bundles[a.version] || prod;
      if (!manifest.bundles[a.version]) {
        a.version = prod.version;
      }
      if (!this.bundle || this.bundle.bundle_sha256 !== b.bundle_sha256) {
        const [model, spec] = await Promise.all([this._file(b, "model.json"), this._file(b, "features.json")]);
        const err = global.adrankEdge.load(b.version, model, new TextDecoder().decode(spec));
        if (err) throw new BundleError("bundle " + b.version + ": " + err);
      }
      this.manifest = manifest;
      this.assignment = a;
      this.bundle = {version: b.version, model_sha256: b.model_sha256, bundle_sha256: b.bundle_sha256, scorer: b.files["scorer.wasm"].sha256};
    }

    // _file fetches a bundle file (from the cache when offline) and checks
    // its sha256 against the manifest, and the bundle's own digest.
    async _file(bundle, name) {
      const lines = Object.keys(bundle.files).sort().map((n) => n + " " + bundle.files[n].sha256 + "\n").join("");
      if ((await sha256(utf8(lines))) !== bundle.bundle_sha256) {
        throw new BundleError("bundle " + bundle.version + ": bundle_sha256 does not match its files");
      }
      const f = bundle.files[name];
      let bytes;
      const cache = global.caches ? await global.caches.open("adrank-edge") : null;
      try {
        const resp = await fetch(this.base + f.url);
        if (!resp.ok) throw new Error(name + ": HTTP " + resp.status);
        bytes = new Uint8Array(await resp.arrayBuffer());
      } catch (e) {
        const hit = cache && (await cache.match(this.base + f.url));
        if (!hit) throw e;
        bytes = new Uint8Array(await hit.arrayBuffer());
      }
      const got = await sha256(bytes);
      if (got !== f.sha256) {
        throw new BundleError("bundle " + bundle.version + ": " + name + " has sha256 " + got.slice(0, 12) + "..., the manifest says " + f.sha256.slice(0, 12) + "...");
      }
      if (cache) await cache.put(this.base + f.url, new Response(bytes));
      return bytes;
    }

    async _loadScorer(bundle) {
      const [glue, wasm] = await Promise.all([this._file(bundle, "wasm_exec.js"), this._file(bundle, "scorer.wasm")]);
      if (!global.Go) {
        (0, eval)(new TextDecoder().decode(glue)); // defines Go, checked above
      }
      const go = new global.Go();
      const {instance} = await WebAssembly.instantiate(wasm, go.importObject);
      go.run(instance); // runs until the page goes; it sets globalThis.adrankEdge
      if (!global.adrankEdge) throw new BundleError("the scorer did not start");
    }

    // assignFor is the arm the bundle's plan gives any user (as the router).
    assignFor(userID) {
      return JSON.parse(global.adrankEdge.assign(JSON.stringify(this.manifest.plan), userID));
    }

    // sync fetches the user's features and those of the cached ads, and
    // keeps them (localStorage) for offline ranking.
    async sync(adIDs) {
      const q = new URLSearchParams({user_id: this.userID});
      adIDs.forEach((id) => q.append("ad_ids", id));
      const resp = await fetch(this.base + "/v1/edge/" + this.domain + "/features?" + q);
      if (!resp.ok) throw new Error("features: HTTP " + resp.status + " " + (await resp.text()));
      const body = await resp.json();
      this.features.user = body.user || {};
      for (const a of body.ads || []) this.features.ads[a.ad_id] = a.features || {};
      this._save("features:" + this.userID, this.features);
    }

    // rank ranks and prices cached candidates on the device, and queues
    // the impressions. opts: candidates [{ad_id, advertiser_id, bid_micros,
    // quality}], slots, reserve_micros, query, request_id, now (ms).
    rank(opts) {
      if (!this.bundle) throw new Error("not started");
      const cfg = this.manifest.auction || {};
      const req = {
        domain: this.domain,
        request_id: opts.request_id || "edge-" + crypto.randomUUID(),
        user_id: this.userID,
        user: this.features.user,
        context: {timestamp_ms: opts.now || Date.now(), device: this.device, query: opts.query || ""},
        candidates: opts.candidates.map((c) => Object.assign({}, c, {features: this.features.ads[c.ad_id] || {}})),
        slots: opts.slots || 1,
        reserve_micros: opts.reserve_micros || 0,
        auction: {type: cfg.type || "", reserve_micros: cfg.reserve_micros || 0, position_factors: cfg.position_factors || null},
      };
      const out = JSON.parse(global.adrankEdge.rank(JSON.stringify(req)));
      if (out.error) throw new Error(out.error);
      if (out.results.length > 0 && opts.record !== false) {
        const q = this._load("impressions") || [];
        q.push({
          request_id: req.request_id, user_id: this.userID, version: this.bundle.version, model_sha256: this.bundle.model_sha256,
          results: out.results.map((r) => ({ad_id: r.ad_id, slot: r.slot, price_micros: r.price_micros, impression_id: r.impression_id})),
        });
        this._save("impressions", q);
      }
      return out;
    }

    click(impressionID, eventID) {
      this._event({impression_id: impressionID, type: "EVENT_TYPE_CLICK", event_id: eventID || ""});
    }
    conversion(impressionID, value, eventID) {
      this._event({impression_id: impressionID, type: "EVENT_TYPE_CONVERSION", value: value, event_id: eventID || ""});
    }
    _event(e) {
      const q = this._load("events") || [];
      q.push(e);
      this._save("events", q);
    }

    pending() {
      return {impressions: (this._load("impressions") || []).length, events: (this._load("events") || []).length};
    }

    // flush sends the queued impressions, then the queued events, in
    // batches of at most 1,000; what the server took (or refused as
    // malformed, which no retry would change) leaves the queue. Sending a
    // batch again counts once. The router answers impressions with its
    // signed impression IDs; events are sent with those (see signed).
    async flush() {
      const sent = {impressions: null, events: null};
      const post = async (path, body) => {
        const headers = {"Content-Type": "application/json"};
        if (this.token) headers.Authorization = "Bearer " + this.token;
        const resp = await fetch(this.base + path, {method: "POST", headers, body: JSON.stringify(body)});
        const json = await resp.json().catch(() => ({}));
        if (resp.status === 400) return {dropped: true, json};
        if (!resp.ok) throw new Error(path + ": HTTP " + resp.status + " " + JSON.stringify(json));
        return {json};
      };
      let ids = null; // the signed IDs, read once the impressions are sent
      const signed = (id) => (ids = ids || this._load("signed") || {})[id] || id;
      const kinds = [
        ["impressions", "/v1/edge/" + this.domain + "/impressions", "served", (batch) => batch, (batch, json) => this._learn(batch, json)],
        ["events", "/v1/events", "events", (batch) => batch.map((e) => Object.assign({}, e, {impression_id: signed(e.impression_id)})), () => {}],
      ];
      for (const [kind, path, field, prepare, after] of kinds) {
        let q = this._load(kind) || [];
        while (q.length > 0) {
          const batch = q.slice(0, 1000);
          const r = await post(path, {[field]: prepare(batch)});
          after(batch, r.json);
          sent[kind] = Object.assign(sent[kind] || {}, r.json);
          q = (this._load(kind) || []).slice(batch.length);
          this._save(kind, q);
        }
      }
      return sent;
    }

    // signed is the router's signed impression ID for one the device made,
    // once the router has taken its impression; until then, the device's.
    // An event sent with the device's own ID is refused as forged.
    signed(impressionID) {
      return (this._load("signed") || {})[impressionID] || impressionID;
    }

    // _learn keeps the signed IDs the router returned for a batch of served
    // requests: the latest 5,000, enough for the clicks still to come.
    _learn(batch, json) {
      const m = this._load("signed") || {};
      ((json && json.results) || []).forEach((r, i) => {
        (r.impression_ids || []).forEach((id, j) => {
          const mine = batch[i] && batch[i].results[j] && batch[i].results[j].impression_id;
          if (mine) m[mine] = id;
        });
      });
      const keys = Object.keys(m);
      for (const k of keys.slice(0, Math.max(0, keys.length - 5000))) delete m[k];
      this._save("signed", m);
    }
  }

  global.AdrankEdge = AdrankEdge;
})(globalThis);

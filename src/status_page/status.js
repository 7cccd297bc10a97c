// The TradeBaas status page: polls GET /health (read-only) and renders it. Every value from the
// daemon reaches the document as a text node (createTextNode / textContent), never as markup, so
// an alert message cannot inject HTML. The page offers no action: it only reads.
"use strict";

(function () {
  const ACTORS = ["alert", "state-persister", "fail-safe", "heartbeat", "broker-connection", "strategy"];
  const SEVERITIES = ["CRITICAL", "WARNING", "INFO"];
  const DEFAULT_REFRESH_S = 5;

  // ?refresh=N (seconds, 1..300) sets the polling interval.
  function refreshSeconds() {
    const n = Number(new URLSearchParams(window.location.search).get("refresh"));
    return Number.isFinite(n) && n >= 1 && n <= 300 ? n : DEFAULT_REFRESH_S;
  }
  const refresh = refreshSeconds();
  let lastGood = null;
  let updates = 0;

  // el("td", {class: "x", data: {actor: "y"}}, child, "text", …): text children become text nodes.
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    if (attrs && attrs.class) e.className = attrs.class;
    if (attrs && attrs.data) for (const [k, v] of Object.entries(attrs.data)) e.dataset[k] = String(v);
    for (const c of children) {
      if (c === null || c === undefined) continue;
      e.append(c instanceof Node ? c : String(c));
    }
    return e;
  }
  // A class-safe token from a status word.
  function token(v) { return String(v).replace(/[^A-Za-z0-9_]/g, "_"); }
  function badge(v) { return el("span", { class: "badge s-" + token(v) }, v === null || v === undefined ? "unknown" : v); }
  function text(v) { return v === null || v === undefined || v === "" ? "—" : String(v); }

  function duration(seconds) {
    if (typeof seconds !== "number" || !Number.isFinite(seconds)) return "—";
    let s = Math.max(0, Math.floor(seconds));
    const d = Math.floor(s / 86400); s %= 86400;
    const h = Math.floor(s / 3600); s %= 3600;
    const m = Math.floor(s / 60); s %= 60;
    if (d > 0) return d + "d " + h + "h " + m + "m";
    if (h > 0) return h + "h " + m + "m " + s + "s";
    if (m > 0) return m + "m " + s + "s";
    return s + "s";
  }
  function ms(v) { return typeof v === "number" ? duration(v / 1000) : "—"; }
  function time(v) {
    if (!v) return "—";
    const t = new Date(v);
    return Number.isNaN(t.getTime()) ? String(v) : t.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
  }
  // A decision or error as one line: a string as is, an object by its decision/side/reason.
  function describe(v) {
    if (v === null || v === undefined || v === "") return "—";
    if (typeof v !== "object") return String(v);
    const head = [v.decision, v.side].filter((x) => x !== undefined && x !== null).join(" ");
    const why = v.reason || v.message || v.error;
    return head && why ? head + ": " + why : head || (why ? String(why) : JSON.stringify(v));
  }
  function failure(f) { return f && f.reason ? f.reason + " (" + time(f.at) + ")" : "—"; }

  function section(title, ...children) { return el("section", null, el("h2", null, title), ...children); }
  function table(headings, rows) {
    return el("table", null,
      el("thead", null, el("tr", null, ...headings.map((h) => el("th", null, h)))),
      el("tbody", null, ...rows));
  }
  function facts(pairs) {
    const dl = el("dl");
    for (const [k, v] of pairs) dl.append(el("dt", null, k), el("dd", null, v instanceof Node ? v : text(v)));
    return dl;
  }

  function overview(h, fs) {
    const reasons = Array.isArray(h.reasons) ? h.reasons : [];
    return el("section", { class: "overview" },
      el("div", { class: "banner" },
        el("span", { class: "big", data: { field: "status" } }, "Status ", badge(h.status)),
        el("span", { class: "big", data: { field: "mode" } }, "Mode ", badge(h.mode)),
        el("span", { data: { field: "uptime" } }, "Uptime " + duration(h.uptime_seconds)),
        el("span", { class: "muted" }, "version " + text(h.version))),
      facts([
        ["Mode reason", el("span", { data: { field: "mode-reason" } }, text(fs.reason))],
        ["Mode since", time(fs.changed_at)],
        ["Last trigger", text(fs.last_trigger)],
        ["Why not healthy", reasons.length ? el("ul", null, ...reasons.map((r) => el("li", null, r))) : "—"],
      ]));
  }

  function actors(h) {
    const rows = [];
    const names = ACTORS.concat(Object.keys(h.actors || {}).filter((n) => !ACTORS.includes(n)));
    for (const name of names) {
      const a = (h.actors || {})[name];
      rows.push(el("tr", { data: { actor: name } },
        el("td", { class: "mono" }, name),
        el("td", null, badge(a ? a.status : "missing")),
        el("td", null, a && a.restarts !== null && a.restarts !== undefined ? a.restarts : "—"),
        el("td", null, failure(a && a.last_failure))));
    }
    return section("Actors", table(["Actor", "Status", "Restarts", "Last failure"], rows));
  }

  function broker(b) {
    return section("Broker link",
      el("div", { data: { field: "broker" } }, facts([
        ["Link", badge(b.state)],
        ["Circuit breaker", badge(b.circuit_breaker)],
        ["Connected since", time(b.connected_since)],
        ["Disconnected for", ms(b.disconnected_for_ms)],
        ["Consecutive failures", b.consecutive_failures],
        ["Reconnect attempts", b.reconnect_attempts],
        ["Next attempt in", ms(b.next_attempt_in_ms)],
        ["Market data age", ms(b.market_data_age_ms)],
        ["Missing subscriptions", Array.isArray(b.missing_subscriptions) && b.missing_subscriptions.length ? b.missing_subscriptions.join(", ") : "—"],
        ["Last error", b.last_error],
        ["Exchange", b.url],
      ])));
  }

  function position(p) {
    if (!p) return "none";
    let s = text(p.direction) + " size " + text(p.size) + " " + text(p.instrument) + " @ " + text(p.entry_price);
    if (p.stop_price !== null && p.stop_price !== undefined) s += ", SL " + p.stop_price;
    if (p.take_profit_price !== null && p.take_profit_price !== undefined) s += ", TP " + p.take_profit_price;
    return s;
  }

  function strategies(s) {
    const list = Array.isArray(s.strategies) ? s.strategies : [];
    const rows = list.map((i) => el("tr", { data: { strategy: i.id } },
      el("td", { class: "mono" }, text(i.id)),
      el("td", null, text(i.instrument)),
      el("td", { class: "mono" }, text(i.lifecycle)),
      el("td", null, position(i.position)),
      el("td", null, describe(i.last_decision) + (i.last_decision_at ? " (" + time(i.last_decision_at) + ")" : "")),
      el("td", null, describe(i.last_error || i.last_refusal))));
    return section("Strategies",
      el("p", { class: "muted" }, "Execution " + (s.execution_enabled ? "enabled" : "disabled") + " · " + text(s.active) + " active"),
      rows.length ? table(["Strategy", "Instrument", "Lifecycle", "Position", "Last decision", "Last error / refusal"], rows)
        : el("p", null, "No strategies."));
  }

  function alerts(a) {
    const open = Array.isArray(a.open_alerts) ? a.open_alerts : [];
    const bySeverity = (sev) => open.filter((r) => r.severity === sev)
      .sort((x, y) => String(y.timestamp).localeCompare(String(x.timestamp)));
    const summary = el("p", { data: { field: "alert-counts" } });
    const items = [];
    for (const sev of SEVERITIES) {
      const these = bySeverity(sev);
      summary.append(badge(sev), " " + these.length + " open   ");
      for (const r of these) {
        items.push(el("div", { class: "alert " + sev, data: { severity: sev, key: r.key } },
          el("div", null, badge(sev), " ", el("strong", null, text(r.title)), el("span", { class: "muted mono" }, "  " + text(r.key))),
          el("div", null, text(r.message)),
          facts([
            ["Root cause", r.root_cause],
            ["Recommended action", r.recommended_action],
            ["Raised", time(r.timestamp) + (r.count > 1 ? " · " + r.count + " times, last " + time(r.last_raised_at) : "")],
            ["Acknowledged", r.acknowledged ? "yes (" + time(r.acknowledged_at) + ")" : "no"],
          ])));
      }
    }
    const others = open.filter((r) => !SEVERITIES.includes(r.severity));
    for (const r of others) items.push(el("div", { class: "alert" }, text(r.severity) + ": " + text(r.title) + " — " + text(r.message)));
    return section("Open alerts", summary, ...(items.length ? items : [el("p", { class: "muted" }, "No open alerts.")]));
  }

  function recovery(p) {
    const r = p && p.recovery;
    if (!r) return section("Last recovery", el("p", null, "No start-up recovery reported yet."));
    const list = (v) => (Array.isArray(v) && v.length ? el("ul", null, ...v.map((x) => el("li", null, typeof x === "string" ? x : JSON.stringify(x)))) : "none");
    return section("Last recovery", facts([
      ["Result", badge(r.success ? "success" : "failed")],
      ["Finished", time(r.finished_at)],
      ["Took", typeof r.recovery_time_ms === "number" ? r.recovery_time_ms + " ms" : "—"],
      ["State restored", r.state_restored ? "yes" : "no"],
      ["Broker reconciled", r.broker_reconciled ? "yes" : "no"],
      ["Strategy resumed", r.strategy_resumed ? "yes" : "no"],
      ["Differences", list(r.differences)],
      ["Warnings", list(r.warnings)],
      ["Errors", list(r.errors)],
    ]));
  }

  function render(h) {
    const a = h.actors || {};
    document.getElementById("app").replaceChildren(
      overview(h, a["fail-safe"] || {}),
      alerts(a.alert || {}),
      actors(h),
      strategies(a.strategy || {}),
      el("div", { class: "cols" }, broker(a["broker-connection"] || {}), recovery(a["state-persister"])));
    document.title = "TradeBaas: " + text(h.status) + ", " + text(h.mode);
  }

  function connection(message, stale) {
    const p = document.getElementById("connection");
    p.className = stale ? "stale" : "muted";
    p.textContent = message;
  }

  async function poll() {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), 10000);
    try {
      // /health answers 503 with the same JSON body when unhealthy.
      const res = await fetch("/health", { cache: "no-store", headers: { Accept: "application/json" }, signal: controller.signal });
      const h = await res.json();
      if (!h || typeof h !== "object" || !h.actors) throw new Error("unexpected answer (HTTP " + res.status + ")");
      lastGood = h;
      updates += 1;
      document.body.dataset.updates = String(updates);
      render(h);
      connection("Updated " + time(h.timestamp) + " · refreshing every " + refresh + " s", false);
    } catch (e) {
      const since = lastGood ? " — showing data from " + time(lastGood.timestamp) : "";
      connection("Cannot read /health: " + (e && e.message ? e.message : String(e)) + since, true);
    } finally {
      clearTimeout(timer);
      setTimeout(poll, refresh * 1000);
    }
  }

  poll();
})();

// Spillway operator page: polls /ui/data and draws it. Plain DOM and SVG,
// no library; every value from lb goes in as text, never as markup.
"use strict";
(function () {
  var SVG = "http://www.w3.org/2000/svg";
  var body = document.body;
  var interval = parseInt(body.dataset.interval, 10) || 1000;
  var last = null;

  function $(id) { return document.getElementById(id); }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function svgEl(tag, attrs, text) {
    var e = document.createElementNS(SVG, tag);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function clear(e) { while (e.firstChild) e.removeChild(e.firstChild); }
  function int(n) { return Number(n || 0).toLocaleString("en-US"); }
  function pct(part, whole) { return whole > 0 ? Math.round(100 * part / whole) + "%" : "–"; }
  function ms(v) {
    if (v === null || v === undefined) return "–";
    if (v >= 1000) return (v / 1000).toFixed(2) + " s";
    if (v >= 100) return Math.round(v) + " ms";
    if (v >= 10) return v.toFixed(1) + " ms";
    return v.toFixed(2) + " ms";
  }
  function rate(v) { return v >= 100 ? Math.round(v).toString() : (v >= 10 ? v.toFixed(1) : v.toFixed(2).replace(/\.?0+$/, "")); }
  function tick(v) { return Number.isInteger(v) ? String(v) : String(+v.toFixed(3)); }
  function clock(iso) {
    var d = new Date(iso);
    function p(n) { return (n < 10 ? "0" : "") + n; }
    return p(d.getHours()) + ":" + p(d.getMinutes()) + ":" + p(d.getSeconds());
  }
  // niceMax rounds up to 1, 2 or 5 times a power of ten.
  function niceMax(v) {
    if (!(v > 0)) return 1;
    var p = Math.pow(10, Math.floor(Math.log10(v)));
    var f = v / p;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * p;
  }

  function notice(kind, text) {
    var n = el("p", "notice " + kind, text);
    $("notices").appendChild(n);
  }

  function renderState(d) {
    var s = $("state");
    s.className = "badge " + (d.state === "ready" ? "ok" : d.state === "starting" ? "warn" : "bad");
    s.textContent = d.state === "ready" ? "ready" : d.state === "starting" ? "starting" : "not ready";
    $("updated").textContent = clock(d.now);
    $("updated").setAttribute("datetime", d.now);
    var meta = [];
    if (d.lb.id) {
      meta.push("replica " + d.lb.id + (d.lb.controller ? " (controller)" :
        " (follower; controller " + (d.lb.controller_id || "unknown") + ")"));
      if (d.lb.replicas.length > 1) meta.push(d.lb.replicas.length + " replicas");
    }
    if (d.state !== "starting") {
      meta.push("offload " + d.lb.offload_policy, "scheduler " + d.lb.scheduler);
      meta.push("up " + Math.floor(d.lb.uptime_s / 60) + " min");
    }
    $("lb-meta").textContent = meta.join(" · ");
  }

  function renderNotices(d) {
    clear($("notices"));
    if (d.state === "starting") { notice("warn", d.message + ". This page fills in by itself."); return; }
    if (d.state !== "ready") notice("bad", d.message || "lb is not ready");
    if (d.cloud.mode === "off") {
      notice("info", "Cloud is off (CLOUD=off): calls that do not fit in the local pool wait for a worker; nothing is offloaded.");
    } else if (!d.cloud.ready) {
      notice("warn", "Cloud (" + d.cloud.mode + ") is not taking calls: " +
        (d.cloud.breaker === "open" ? "its circuit breaker is open after failed calls" : "the function is not deployed there yet") +
        ". Calls stay local.");
    }
    d.functions.forEach(function (f) {
      if (f.workers.ready === 0) {
        notice("bad", "Function " + f.name + " has no ready workers" +
          (f.workers.starting ? " (" + f.workers.starting + " starting)" : "") +
          (d.cloud.ready ? ": calls go to the cloud or wait." : ": calls wait for a worker."));
      }
    });
  }

  function renderSplit(d) {
    var c = d.calls;
    $("split-local").textContent = int(c.local) + " (" + pct(c.local, c.local + c.cloud) + ")";
    $("split-cloud").textContent = int(c.cloud) + " (" + pct(c.cloud, c.local + c.cloud) + ")";
    $("split-local").dataset.count = c.local;
    $("split-cloud").dataset.count = c.cloud;
    $("calls-total").textContent = int(c.total);
    $("calls-errors").textContent = int(c.errors);
    $("calls-inflight").textContent = int(c.in_flight) + " (" + int(c.local_in_flight) + " local, " + int(c.cloud_in_flight) + " cloud)";
    $("calls-queued").textContent = int(c.queued);
  }

  // renderRates draws calls/s per route over the last series_window_s seconds.
  function renderRates(d) {
    var svg = $("rate-chart");
    var W = Math.max(280, $("rate-box").clientWidth), H = W < 500 ? 200 : 260;
    var m = { l: 52, r: 12, t: 12, b: 44 };
    var w = W - m.l - m.r, h = H - m.t - m.b;
    clear(svg);
    svg.setAttribute("width", W); svg.setAttribute("height", H);
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    svg.dataset.points = d.series.length;
    svg.dataset.busy = d.series.filter(function (p) { return p.local + p.cloud > 0; }).length;
    var span = d.series_window_s * 1000;
    $("overview-window").textContent = "last " + (span >= 120000 ? Math.round(span / 60000) + " minutes" : Math.round(span / 1000) + " s");
    var end = Date.parse(d.now), start = end - span;
    var top = 0;
    d.series.forEach(function (p) { top = Math.max(top, p.local, p.cloud); });
    top = niceMax(top);
    function x(t) { return m.l + w * (t - start) / span; }
    function y(v) { return m.t + h - h * v / top; }
    // y grid and labels
    for (var i = 0; i <= 4; i++) {
      var v = top * i / 4, yy = y(v);
      svg.appendChild(svgEl("line", { x1: m.l, x2: m.l + w, y1: yy, y2: yy, "class": "gridline" }));
      svg.appendChild(svgEl("text", { x: m.l - 6, y: yy + 4, "text-anchor": "end" }, tick(v)));
    }
    // x ticks: one a minute
    var step = 60000;
    for (var t = end; t >= start - 1; t -= step) {
      var xx = x(t), mins = Math.round((end - t) / 60000);
      svg.appendChild(svgEl("line", { x1: xx, x2: xx, y1: m.t + h, y2: m.t + h + 5, "class": "axis" }));
      svg.appendChild(svgEl("text", { x: xx, y: m.t + h + 18, "text-anchor": mins === 0 ? "end" : "middle" },
        mins === 0 ? "now" : "−" + mins + " min"));
    }
    svg.appendChild(svgEl("line", { x1: m.l, x2: m.l + w, y1: m.t + h, y2: m.t + h, "class": "axis" }));
    svg.appendChild(svgEl("line", { x1: m.l, x2: m.l, y1: m.t, y2: m.t + h, "class": "axis" }));
    svg.appendChild(svgEl("text", { x: m.l + w / 2, y: H - 4, "text-anchor": "middle", "class": "title" }, "time (minutes before now)"));
    svg.appendChild(svgEl("text", { x: 12, y: m.t + h / 2, "text-anchor": "middle", "class": "title",
      transform: "rotate(-90 12 " + (m.t + h / 2) + ")" }, "calls/s"));
    if (d.series.length === 0) {
      svg.appendChild(svgEl("text", { x: m.l + w / 2, y: m.t + h / 2, "text-anchor": "middle", "class": "empty" },
        d.state === "starting" ? "waiting for lb to start" : "collecting: the first point comes after a second"));
      return;
    }
    ["local", "cloud"].forEach(function (route) {
      var pts = d.series.filter(function (p) { return p.t >= start; }).map(function (p) {
        return x(p.t).toFixed(1) + "," + y(p[route]).toFixed(1);
      });
      if (pts.length === 0) return;
      var first = pts[0].split(",")[0], lastX = pts[pts.length - 1].split(",")[0];
      svg.appendChild(svgEl("polygon", { points: first + "," + (m.t + h) + " " + pts.join(" ") + " " + lastX + "," + (m.t + h), "class": "area-" + route }));
      svg.appendChild(svgEl("polyline", { points: pts.join(" "), "class": "line-" + route, "data-route": route }));
    });
  }

  function renderLatency(d) {
    var rows = $("latency-rows");
    clear(rows);
    if (d.latency.length === 0) {
      var tr = el("tr"); var td = el("td", "muted", d.state === "starting" ? "lb is starting" : "no data yet");
      td.colSpan = 4; tr.appendChild(td); rows.appendChild(tr); return;
    }
    var win = d.latency[0].window_s;
    $("latency-window").textContent = win >= 59 ? "last minute" : "since lb started (" + Math.max(1, Math.round(win)) + " s)";
    d.latency.forEach(function (r) {
      var tr = el("tr");
      tr.dataset.route = r.route;
      var name = el("td"); var k = el("span", "key " + r.route); name.appendChild(k); name.appendChild(document.createTextNode(r.route));
      tr.appendChild(name);
      if (r.calls === 0) {
        var td = el("td", "muted num", d.cloud.mode === "off" && r.route === "cloud" ? "cloud off" : "no calls");
        td.colSpan = 2; tr.appendChild(td);
      } else {
        tr.appendChild(el("td", "num p50", ms(r.p50_ms)));
        tr.appendChild(el("td", "num p99", ms(r.p99_ms)));
      }
      tr.appendChild(el("td", "num", int(r.calls)));
      rows.appendChild(tr);
    });
  }

  function renderReasons(d) {
    var svg = $("reasons-chart");
    var W = Math.max(260, $("reasons-box").clientWidth);
    var m = { l: 76, r: 56, t: 6, b: 36 }, row = 26;
    var H = m.t + m.b + row * d.reasons.length;
    var w = W - m.l - m.r;
    clear(svg);
    svg.setAttribute("width", W); svg.setAttribute("height", H);
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    var top = 0;
    d.reasons.forEach(function (r) { top = Math.max(top, r.count); });
    top = niceMax(top);
    for (var i = 0; i <= 4; i++) {
      var xx = m.l + w * i / 4;
      svg.appendChild(svgEl("line", { x1: xx, x2: xx, y1: m.t, y2: H - m.b, "class": "gridline" }));
      svg.appendChild(svgEl("text", { x: xx, y: H - m.b + 15, "text-anchor": "middle" }, tick(top * i / 4)));
    }
    svg.appendChild(svgEl("text", { x: m.l + w / 2, y: H - 4, "text-anchor": "middle", "class": "title" }, "calls offloaded"));
    d.reasons.forEach(function (r, i) {
      var yy = m.t + i * row;
      svg.appendChild(svgEl("text", { x: m.l - 8, y: yy + row / 2 + 4, "text-anchor": "end" }, r.name));
      var bw = r.count > 0 ? Math.max(2, w * r.count / top) : 2;
      svg.appendChild(svgEl("rect", { x: m.l, y: yy + 5, width: bw, height: row - 10, "class": r.count > 0 ? "bar" : "bar zero" }));
      svg.appendChild(svgEl("text", { x: m.l + bw + 6, y: yy + row / 2 + 4, "data-reason": r.name }, int(r.count)));
    });
    svg.appendChild(svgEl("line", { x1: m.l, x2: m.l, y1: m.t, y2: H - m.b, "class": "axis" }));
  }

  function pill(label, value) {
    var p = el("span", "pill");
    p.appendChild(document.createTextNode(label + " "));
    p.appendChild(el("strong", "", String(value)));
    return p;
  }

  function renderFunctions(d) {
    var list = $("function-list");
    clear(list);
    if (d.functions.length === 0) {
      list.appendChild(el("p", "muted", d.state === "starting" ? "No function yet: lb waits for " + body.dataset.function + " to be published." : "No function."));
      return;
    }
    if (d.share) {
      var cap = el("p", "muted", "MAX_TOTAL_WORKERS " + d.share.max_total_workers + ": " + d.share.held + " held (mins included)");
      cap.id = "share-held";
      list.appendChild(cap);
    }
    d.functions.forEach(function (f) {
      var box = el("div", "fn");
      box.dataset.function = f.name;
      var h = el("h3", "fn-name", f.name);
      box.appendChild(h);
      var text = "version " + f.version + " · " + f.style + " style · sha256 " + (f.sha256 || "").slice(0, 12) +
        " · pool " + f.min + "–" + f.max + ", desired " + f.desired;
      if (f.share) {
        text += " · share: allotted " + f.share.allotted + ", limit " + f.share.limit + ", wants " + f.share.want +
          (f.share.idle_s < 0 ? ", no call yet" : ", idle " + f.share.idle_s + " s");
      }
      var info = el("p", "muted fn-info", text);
      box.appendChild(info);
      var pills = el("div", "pills");
      pills.appendChild(pill("ready", f.workers.ready));
      pills.appendChild(pill("starting", f.workers.starting));
      pills.appendChild(pill("draining", f.workers.draining));
      if (f.workers.failed) pills.appendChild(pill("failed", f.workers.failed));
      pills.appendChild(pill("in flight", f.in_flight));
      pills.appendChild(pill("queued", f.queued));
      pills.appendChild(pill("cold starts", f.cold_starts));
      if (f.spare) pills.appendChild(pill("frozen spare", "ready"));
      box.appendChild(pills);
      if (f.members.length === 0) {
        box.appendChild(el("p", "muted", "No workers."));
      } else {
        var wrap = el("div", "members"), t = el("table"), head = el("tr");
        ["Worker", "State", "Version", "In flight", "Done", "Cold starts"].forEach(function (c, i) {
          var th = el("th", i > 1 ? "num" : "", c); th.scope = "col"; head.appendChild(th);
        });
        var thead = el("thead"); thead.appendChild(head); t.appendChild(thead);
        var tb = el("tbody");
        f.members.forEach(function (mb) {
          var tr = el("tr");
          tr.appendChild(el("td", "", mb.name || "(starting)"));
          tr.appendChild(el("td", "", mb.state));
          tr.appendChild(el("td", "num", "v" + mb.version));
          tr.appendChild(el("td", "num", mb.in_flight + "/" + mb.capacity));
          tr.appendChild(el("td", "num", int(mb.completed)));
          tr.appendChild(el("td", "num", int(mb.cold_starts)));
          tb.appendChild(tr);
        });
        t.appendChild(tb); wrap.appendChild(t); box.appendChild(wrap);
      }
      list.appendChild(box);
    });
  }

  function kv(dl, k, v, id) {
    dl.appendChild(el("dt", "", k));
    var dd = el("dd", "", v);
    if (id) dd.id = id;
    dl.appendChild(dd);
  }

  function renderCloud(d) {
    var dl = $("cloud-kv"), c = d.cloud;
    clear(dl);
    if (d.state === "starting") { kv(dl, "State", "lb is starting"); return; }
    kv(dl, "Mode", c.mode === "off" ? "off (CLOUD=off)" : c.mode, "cloud-mode");
    if (c.mode === "off") return;
    kv(dl, "Taking calls", c.ready ? "yes" : "no", "cloud-ready");
    kv(dl, "Circuit breaker", c.breaker || "–", "cloud-breaker");
    kv(dl, "Calls", int(c.calls) + " (" + int(c.failed) + " failed, " + int(c.throttled) + " throttled, " + int(c.rejected) + " refused)");
    kv(dl, "Cold starts", int(c.cold_starts));
    kv(dl, "Warm environments", c.warm_environments === null ? "not reported" : int(c.warm_environments));
    var b = c.budget;
    if (!b) {
      kv(dl, "Budget", "no cap (CLOUD_MAX_RPS and CLOUD_MAX_COST_PER_HOUR unset)", "cloud-budget");
    } else {
      var caps = [];
      if (b.max_rps > 0) caps.push(tick(b.max_rps) + " calls/s");
      if (b.max_cost_per_hour > 0) caps.push("$" + tick(b.max_cost_per_hour) + "/hour");
      kv(dl, "Budget", Math.round(100 * b.used) + "% of the burst spent now (cap " + caps.join(", ") + "); " +
        int(b.calls) + " calls, $" + b.spent_usd.toFixed(4) + " estimated since start", "cloud-budget");
    }
  }

  function renderEvents(d) {
    var ol = $("event-list");
    clear(ol);
    if (d.events.length === 0) { ol.appendChild(el("li", "muted", "No events yet.")); return; }
    d.events.forEach(function (e) {
      var li = el("li");
      var t = el("time", "", clock(e.time)); t.setAttribute("datetime", e.time); t.title = e.time;
      li.appendChild(t);
      li.appendChild(el("span", "kind", e.kind));
      li.appendChild(el("span", "cause", e.cause));
      ol.appendChild(li);
    });
  }

  function render(d) {
    last = d;
    renderState(d);
    renderNotices(d);
    renderSplit(d);
    renderRates(d);
    renderLatency(d);
    renderReasons(d);
    renderFunctions(d);
    renderCloud(d);
    renderEvents(d);
    body.dataset.state = d.state;
  }

  function poll() {
    fetch("/ui/data", { cache: "no-store", credentials: "same-origin" })
      .then(function (r) {
        if (!r.ok) throw new Error("HTTP " + r.status + (r.status === 401 ? " (LB_AUTH_TOKEN needed)" : ""));
        return r.json();
      })
      .then(function (d) { render(d); })
      .catch(function (err) {
        clear($("notices"));
        notice("bad", "Cannot read lb's state: " + err.message + ". Retrying every " + interval / 1000 + " s; the numbers below are from " +
          (last ? clock(last.now) : "never") + ".");
        var s = $("state"); s.className = "badge bad"; s.textContent = "unreachable";
        body.dataset.state = "unreachable";
      })
      .then(function () { setTimeout(poll, interval); });
  }

  window.addEventListener("resize", function () { if (last) { renderRates(last); renderReasons(last); } });
  poll();
})();

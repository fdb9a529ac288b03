// Green Kitchen Gateway dashboard: live values and alarms from /api/live (server-sent events),
// the connection-lost banner, and the charts (uPlot, loaded only on pages that have charts).
// The pages work without this script; it only keeps them current. No framework, no build step.
(function () {
  "use strict";
  var body = document.body;
  var lostBanner = document.getElementById("conn");
  var lost = false;

  function ago(ms) {
    var s = Math.max(0, Math.round((Date.now() - ms) / 1000));
    var sw = body.dataset.lang === "sw";
    if (s < 90) return sw ? "sekunde " + s + " zilizopita" : s + " s ago";
    var m = Math.round(s / 60);
    if (m < 90) return sw ? "dakika " + m + " zilizopita" : m + " min ago";
    var h = Math.round(s / 3600);
    return sw ? "saa " + h + " zilizopita" : h + " h ago";
  }

  function tiles(q, i) {
    return document.querySelectorAll('.tile[data-q="' + q + '"][data-i="' + i + '"], .tile[data-q="' + q + '"][data-i=""]');
  }

  function onReading(r) {
    var ms = Date.parse(r.ts);
    r.values.forEach(function (v) {
      tiles(v.quantity, r.device).forEach(function (t) {
        t.dataset.i = r.device;
        t.querySelector(".value").textContent = v.text;
        var age = t.querySelector(".age");
        age.dataset.ts = ms;
        age.textContent = ago(ms);
        if (t.classList.contains("stale") || t.classList.contains("ok")) {
          t.classList.remove("stale");
          t.classList.add("ok");
        }
      });
      var row = document.querySelector('tr[data-meter="' + r.device + '"] td[data-q="' + v.quantity + '"]');
      if (row && v.value !== undefined) row.firstChild.textContent = v.text;
      (charts[v.quantity + "|" + r.device] || []).forEach(function (c) { c.add(ms, v.value); });
    });
  }

  function onAlarms(a) {
    var banner = document.getElementById("alarm-banner");
    if (!banner) return;
    banner.hidden = a.count === 0;
    banner.className = "banner " + (a.worst || "none");
    var count = document.getElementById("alarm-count");
    if (count) count.textContent = a.text;
    var first = document.getElementById("alarm-first");
    if (first) first.textContent = a.first || "";
    else if (a.first && count) {
      var s = document.createElement("span");
      s.id = "alarm-first";
      s.textContent = a.first;
      count.parentNode.appendChild(document.createTextNode(": "));
      count.parentNode.appendChild(s);
    }
  }

  function setLost(on) {
    if (on === lost) return;
    lost = on;
    if (lostBanner) {
      lostBanner.hidden = false;
      lostBanner.textContent = on ? body.dataset.lost : body.dataset.back;
      lostBanner.className = on ? "banner lost" : "banner info";
      if (!on) setTimeout(function () { if (!lost) lostBanner.hidden = true; }, 3000);
    }
  }

  var retry = 1000, ended = false;
  function connect() {
    if (!window.EventSource) return;
    var es = new EventSource("/api/live?alarms=1");
    es.addEventListener("open", function () { retry = 1000; setLost(false); });
    es.addEventListener("reading", function (e) { onReading(JSON.parse(e.data)); });
    es.addEventListener("alarms", function (e) { onAlarms(JSON.parse(e.data)); });
    // The session expired or was ended: stop, and offer to sign in (in a link, so what is
    // typed on this page stays until the user chooses to leave).
    es.addEventListener("session", function () {
      es.close();
      ended = true;
      if (lostBanner) {
        lostBanner.hidden = false;
        lostBanner.className = "banner lost";
        lostBanner.textContent = body.dataset.ended + " ";
        var a = document.createElement("a");
        a.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
        a.textContent = body.dataset.signin;
        lostBanner.appendChild(a);
      }
    });
    es.addEventListener("error", function () {
      es.close();
      if (ended) return;
      setLost(true);
      // Catch up when back: reconnect with backoff; the alarm state comes first on connect.
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 10000);
    });
  }

  setInterval(function () {
    document.querySelectorAll(".age[data-ts]").forEach(function (a) {
      var ts = +a.dataset.ts;
      if (ts > 0) a.textContent = ago(ts);
    });
  }, 10000);

  // Charts: uPlot (vendored) is loaded only when a page has a chart.
  var charts = {};
  var siteOffset = +document.body.dataset.utcOffset || 0;
  // A Date whose local fields are the site's wall clock at `ts` (seconds), whatever the
  // phone's zone: the charts' axes use it (the site's offset is fixed; the server sends it).
  function siteDate(ts) {
    var d = new Date((ts + siteOffset) * 1000);
    return new Date(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate(), d.getUTCHours(), d.getUTCMinutes(), d.getUTCSeconds());
  }
  window.gkgwSiteDate = siteDate;
  function chart(fig) {
    var q = fig.dataset.q, i = fig.dataset.i, hours = +fig.dataset.hours || 24;
    var from = Date.now() - hours * 3600 * 1000;
    var url = "/api/history?quantity=" + encodeURIComponent(q) + "&instance=" + encodeURIComponent(i) +
      "&from=" + from + "&points=300";
    fetch(url, { credentials: "same-origin" }).then(function (r) { return r.json(); }).then(function (h) {
      var xs = [], ys = [];
      (h.points || []).forEach(function (p) {
        var y = p.mean !== undefined ? p.mean : (p.last !== undefined ? p.last : null);
        xs.push(p.ms / 1000); ys.push(y);
      });
      var el = fig.querySelector(".plot");
      var w = Math.max(260, el.clientWidth || fig.clientWidth - 10);
      var plot = new uPlot({
        width: w, height: 180, legend: { show: false },
        // The span asked for, whatever the data: one early point must not stretch the axis.
        scales: { x: { time: true, range: function () { return [from / 1000, Date.now() / 1000]; } } },
        // The axis in the site's time, whatever the phone's zone.
        tzDate: siteDate,
        series: [{}, { stroke: "#15803d", width: 2, label: q, points: { show: xs.length < 60 } }],
        axes: [{}, { size: 50 }]
      }, [xs, ys], el);
      fig.dataset.points = xs.length;
      var key = q + "|" + i;
      (charts[key] = charts[key] || []).push({
        add: function (ms, v) {
          if (typeof v !== "number") return;
          xs.push(ms / 1000); ys.push(v);
          plot.setData([xs, ys]);
        }
      });
    }).catch(function () { fig.dataset.error = "1"; });
  }
  var figs = document.querySelectorAll("figure.chart");
  if (figs.length) {
    var css = document.createElement("link");
    css.rel = "stylesheet"; css.href = "/assets/uPlot.min.css";
    document.head.appendChild(css);
    var s = document.createElement("script");
    s.src = "/assets/uPlot.iife.min.js";
    s.onload = function () { figs.forEach(chart); };
    document.head.appendChild(s);
  }
  connect();
})();

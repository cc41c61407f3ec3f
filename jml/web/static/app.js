// jml pages: tick SLA countdowns, refresh the status page, poll a leaver's progress. No framework.
"use strict";
(function () {
  var skew = 0; // server clock minus browser clock, in ms

  function syncClock(iso) {
    var t = Date.parse(iso || "");
    if (!isNaN(t)) skew = t - Date.now();
  }

  function fmt(secs) {
    secs = Math.max(0, Math.floor(secs));
    var d = Math.floor(secs / 86400), h = Math.floor(secs % 86400 / 3600),
        m = Math.floor(secs % 3600 / 60), s = secs % 60;
    function two(n) { return (n < 10 ? "0" : "") + n; }
    if (d) return d + "d " + h + "h";
    if (h) return h + "h " + two(m) + "m";
    if (m) return m + "m " + two(s) + "s";
    return s + "s";
  }

  function tick() {
    var now = Date.now() + skew;
    document.querySelectorAll(".countdown[data-deadline]").forEach(function (el) {
      var state = el.getAttribute("data-state");
      var deadline = Date.parse(el.getAttribute("data-deadline"));
      var text, cls;
      if (state === "verified") { text = "verified"; cls = "ok"; }
      else if (isNaN(deadline)) { text = "no deadline"; cls = "muted"; }
      else if (state === "breached" || now > deadline) { text = "BREACHED"; cls = "breach"; }
      else { text = fmt((deadline - now) / 1000) + " left"; cls = "running"; }
      if (el.textContent !== text) el.textContent = text;
      el.className = "countdown " + cls;
    });
  }

  function countdown(c) {
    var span = document.createElement("span");
    span.className = "countdown";
    span.setAttribute("data-deadline", c.deadline || "");
    span.setAttribute("data-state", c.state);
    return span;
  }

  function cell(tr, value) {
    var td = document.createElement("td");
    if (value instanceof Node) td.appendChild(value); else td.textContent = value;
    tr.appendChild(td);
    return td;
  }

  function when(iso) {
    if (!iso) return "—";
    var t = new Date(iso);
    if (isNaN(t)) return iso;
    var tz = document.body.getAttribute("data-tz") || "UTC";
    try {  // the one display zone the server names (server.timezone, default HR's)
      var parts = new Intl.DateTimeFormat("en-GB", {timeZone: tz, year: "numeric", month: "2-digit", day: "2-digit",
        hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23", timeZoneName: "short"})
        .formatToParts(t).reduce(function (m, p) { m[p.type] = p.value; return m; }, {});
      return parts.year + "-" + parts.month + "-" + parts.day + " " + parts.hour + ":" + parts.minute + ":" +
        parts.second + " " + parts.timeZoneName;
    } catch (e) {
      return t.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC").replace(/Z$/, " UTC");
    }
  }

  // Re-read one section of the current page (e.g. #access once deprovisioning moved on).
  function refreshSection(id) {
    fetch(location.href, {credentials: "same-origin", headers: {"Accept": "text/html"}}).then(function (r) {
      return r.ok ? r.text() : null;
    }).then(function (text) {
      if (!text) return;
      var fresh = new DOMParser().parseFromString(text, "text/html").getElementById(id);
      var here = document.getElementById(id);
      if (fresh && here) here.innerHTML = fresh.innerHTML;
    }).catch(function () { /* next change */ });
  }

  var lastProgress = {};

  function pollProgress(table) {
    var url = table.getAttribute("data-progress");
    fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}}).then(function (r) {
      if (r.status === 401) { location.assign("/login?next=" + encodeURIComponent(location.pathname)); return null; }
      return r.ok ? r.json() : null;
    }).then(function (doc) {
      if (!doc) return;
      syncClock(doc.now);
      var sig = JSON.stringify(doc.connectors.map(function (c) { return [c.connector, c.pending, c.done, c.state]; }));
      if (lastProgress[url] !== sig) { refreshSection("access"); refreshSection("history"); }
      lastProgress[url] = sig;
      var body = document.createElement("tbody");
      doc.connectors.forEach(function (c) {
        var tr = document.createElement("tr");
        tr.setAttribute("data-connector", c.connector);
        cell(tr, c.connector); cell(tr, c.account || "—"); cell(tr, String(c.pending)); cell(tr, String(c.done));
        var failed = cell(tr, String(c.dead)); if (c.dead) failed.className = "error";
        cell(tr, when(c.deadline)); cell(tr, countdown(c));
        body.appendChild(tr);
      });
      table.replaceChild(body, table.tBodies[0]);
      var h2 = table.parentNode.querySelector("h2");
      if (h2 && doc.all_verified && !h2.querySelector(".badge")) {
        var b = document.createElement("span");
        b.className = "badge ok"; b.textContent = "access removed everywhere";
        h2.appendChild(b);
      }
      tick();
    }).catch(function () { /* next poll */ });
  }

  function refreshPage(main) {
    fetch(location.href, {credentials: "same-origin", headers: {"Accept": "text/html"}}).then(function (r) {
      if (r.redirected && new URL(r.url).pathname === "/login") { location.assign(r.url); return null; }
      return r.ok ? r.text() : null;
    }).then(function (text) {
      if (!text) return;
      var doc = new DOMParser().parseFromString(text, "text/html");
      var fresh = doc.getElementById("live");
      if (!fresh) return;
      // Keep open <details> open across refreshes.
      var open = {};
      main.querySelectorAll("details[open]").forEach(function (d) {
        var k = d.closest("[data-plan]"); if (k) open[k.getAttribute("data-plan")] = true;
      });
      main.innerHTML = fresh.innerHTML;
      main.querySelectorAll("[data-plan]").forEach(function (a) {
        if (open[a.getAttribute("data-plan")]) { var d = a.querySelector("details"); if (d) d.open = true; }
      });
      syncClock(doc.body.getAttribute("data-now"));
      var upd = document.getElementById("updated"), updFresh = doc.getElementById("updated");
      if (upd && updFresh) upd.textContent = updFresh.textContent;
      tick();
    }).catch(function () { /* next refresh */ });
  }

  document.addEventListener("DOMContentLoaded", function () {
    syncClock(document.body.getAttribute("data-now"));
    tick();
    setInterval(tick, 1000);
    var main = document.getElementById("live");
    var every = main ? parseInt(main.getAttribute("data-refresh") || "0", 10) : 0;
    if (every > 0) setInterval(function () { refreshPage(main); }, every * 1000);
    document.querySelectorAll("table[data-progress]").forEach(function (t) {
      setInterval(function () { pollProgress(t); }, 2000);
    });
  });
})();

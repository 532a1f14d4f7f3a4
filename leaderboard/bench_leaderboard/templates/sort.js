(function () {
  "use strict";
  // Sort a table by one column: numbers by value, text by locale; empty cells stay last.
  function sortBy(table, th) {
    var col = Array.prototype.indexOf.call(th.parentNode.children, th);
    var asc = th.getAttribute("aria-sort") !== "ascending";
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", asc ? "ascending" : "descending");
    var numeric = th.getAttribute("data-type") === "num";
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[col].getAttribute("data-sort") || "", y = b.cells[col].getAttribute("data-sort") || "";
      if (x === "" || y === "") { return (x === "") - (y === "") || a.getAttribute("data-order") - b.getAttribute("data-order"); }
      var c = numeric ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
      return (asc ? c : -c) || a.getAttribute("data-order") - b.getAttribute("data-order");
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    Array.prototype.forEach.call(table.querySelectorAll("thead th[data-type]"), function (th) {
      th.tabIndex = 0;
      th.addEventListener("click", function () { sortBy(table, th); });
      th.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(table, th); }
      });
    });
  });
  // Open a provenance block (and the section folding it) when a row's link targets it.
  function openTarget() {
    var el = location.hash ? document.getElementById(decodeURIComponent(location.hash.slice(1))) : null;
    if (!el) { return; }
    for (var node = el; node; node = node.parentElement) {
      if (node.tagName === "DETAILS") { node.open = true; }
    }
    el.scrollIntoView();
  }
  window.addEventListener("hashchange", openTarget);
  openTarget();

  // Compare view and family filter; their state lives in the address: ?compare=a,b&family=x,y
  var T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
    2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042];
  function tQuantile(df) {  // two-sided 95%: a table to 30, then the Cornish-Fisher expansion
    if (df <= T975.length) { return T975[df - 1]; }
    var z = 1.959964;
    return z + (z * z * z + z) / (4 * df) + (5 * Math.pow(z, 5) + 16 * z * z * z + 3 * z) / (96 * df * df);
  }
  function seedsOf(cell) {
    var out = {};
    (cell.getAttribute("data-seeds") || "").split(";").forEach(function (pair) {
      var i = pair.indexOf(":");
      if (i > 0) { out[pair.slice(0, i)] = parseFloat(pair.slice(i + 1)); }
    });
    return out;
  }
  function meanInterval(values) {
    var n = values.length, mean = values.reduce(function (a, b) { return a + b; }, 0) / n;
    if (n < 2) { return { mean: mean, low: mean, high: mean, n: n }; }
    var sd = Math.sqrt(values.reduce(function (a, v) { return a + (v - mean) * (v - mean); }, 0) / (n - 1));
    var half = tQuantile(n - 1) * sd / Math.sqrt(n);
    return { mean: mean, low: mean - half, high: mean + half, n: n };
  }
  function signed(x) {  // 4 decimals for metrics near 1, 4 significant digits for larger ones (perplexity)
    var text = Math.abs(x) < 10 ? x.toFixed(4) : x.toPrecision(4);
    return (text.charAt(0) === "-" ? "" : "+") + text;
  }
  var compareForm = document.getElementById("compare-form");
  var familyForm = document.getElementById("family-filter");
  var chosen = [];
  function boxes(form) { return form ? Array.prototype.slice.call(form.querySelectorAll("input[type=checkbox]")) : []; }
  function renderCompare() {
    var table = document.getElementById("table-compare");
    if (!table) { return; }
    boxes(compareForm).forEach(function (b) { b.disabled = !b.checked && chosen.length >= 4; });
    var active = chosen.length >= 2;
    document.getElementById("compare-hint").hidden = active;
    table.hidden = !active;
    Array.prototype.forEach.call(table.querySelectorAll("th[data-variant]"), function (th) {
      th.hidden = chosen.indexOf(th.getAttribute("data-variant")) < 0;
    });
    Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
      var cells = {};
      Array.prototype.forEach.call(row.querySelectorAll("td[data-variant]"), function (td) {
        cells[td.getAttribute("data-variant")] = td;
        td.hidden = chosen.indexOf(td.getAttribute("data-variant")) < 0;
        td.textContent = "";
      });
      var ref = cells[chosen[0]] ? seedsOf(cells[chosen[0]]) : {};
      chosen.forEach(function (variant) {
        var td = cells[variant];
        if (!td) { return; }
        row.appendChild(td);  // columns in the order ticked
        var own = seedsOf(td), keys = Object.keys(own);
        if (!keys.length) { td.textContent = "–"; return; }
        td.textContent = meanInterval(keys.map(function (k) { return own[k]; })).mean.toPrecision(4);
        if (variant === chosen[0]) { return; }
        var shared = keys.filter(function (k) { return k in ref; });
        var note = document.createElement("small");
        if (shared.length < 2) {
          note.textContent = "fewer than 2 shared seeds";
        } else {
          var d = meanInterval(shared.map(function (k) { return own[k] - ref[k]; }));
          note.textContent = signed(d.mean) + " [" + signed(d.low) + ", " + signed(d.high) + "] n=" + d.n;
          note.setAttribute("data-diff", String(d.mean));
          if (d.low > 0 || d.high < 0) { note.className = "excludes-zero"; }
        }
        td.appendChild(note);
      });
    });
    var head = table.tHead.rows[0];
    chosen.forEach(function (variant) {
      var th = head.querySelector("th[data-variant='" + variant + "']");
      if (th) { head.appendChild(th); }
    });
  }
  function applyFamilies() {
    var shown = boxes(familyForm).filter(function (b) { return b.checked; }).map(function (b) { return b.value; });
    if (!familyForm) { return; }
    Array.prototype.forEach.call(document.querySelectorAll("[data-family]"), function (el) {
      var family = el.getAttribute("data-family");
      el.hidden = family !== "" && shown.indexOf(family) < 0;
    });
  }
  function save() {
    var params = new URLSearchParams(location.search);
    if (chosen.length) { params.set("compare", chosen.join(",")); } else { params.delete("compare"); }
    var all = boxes(familyForm), on = all.filter(function (b) { return b.checked; });
    if (on.length < all.length) {
      params.set("family", on.map(function (b) { return b.value; }).join(","));
    } else {
      params.delete("family");
    }
    var query = params.toString();
    try {
      history.replaceState(null, "", (query ? "?" + query : location.pathname) + location.hash);
    } catch (e) { /* an address the browser will not rewrite: the view still works */ }
  }
  function load() {
    var params = new URLSearchParams(location.search);
    var wanted = (params.get("compare") || "").split(",").filter(Boolean);
    var known = boxes(compareForm).map(function (b) { return b.value; });
    chosen = wanted.filter(function (v, i) { return known.indexOf(v) >= 0 && wanted.indexOf(v) === i; }).slice(0, 4);
    boxes(compareForm).forEach(function (b) { b.checked = chosen.indexOf(b.value) >= 0; });
    if (params.has("family")) {
      var families = params.get("family").split(",");
      boxes(familyForm).forEach(function (b) { b.checked = families.indexOf(b.value) >= 0; });
    }
  }
  boxes(compareForm).forEach(function (b) {
    b.addEventListener("change", function () {
      var at = chosen.indexOf(b.value);
      if (b.checked && at < 0) { chosen.push(b.value); }
      if (!b.checked && at >= 0) { chosen.splice(at, 1); }
      renderCompare();
      save();
    });
  });
  boxes(familyForm).forEach(function (b) {
    b.addEventListener("change", function () { applyFamilies(); save(); });
  });
  load();
  applyFamilies();
  renderCompare();
})();

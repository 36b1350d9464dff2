// New bans appear without a reload (server-sent events). Every value is
// put in with textContent: attacker text stays text.
(function () {
  var table = document.getElementById("bans");
  if (!table || !window.EventSource || table.dataset.lastId === undefined) return;
  var es = new EventSource("/events?after=" + encodeURIComponent(table.dataset.lastId));
  es.addEventListener("ban", function (m) {
    var b = JSON.parse(m.data);
    var tr = document.createElement("tr");
    tr.className = "new";
    var a = document.createElement("a");
    a.href = "/ban?addr=" + encodeURIComponent(b.addr);
    a.textContent = b.addr;
    var cells = [a, b.prefix, b.jail, b.reason, b.at, b.until, "", ""];
    cells.forEach(function (v) {
      var td = document.createElement("td");
      if (typeof v === "string") td.textContent = v; else td.appendChild(v);
      tr.appendChild(td);
    });
    table.tBodies[0].insertBefore(tr, table.tBodies[0].firstChild);
    var c = document.getElementById("active-count");
    if (c) c.textContent = String(Number(c.textContent) + 1);
  });
})();

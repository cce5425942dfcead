// The job page's log: records pushed by the server as Server-Sent Events, coloured by level,
// each pipeline action ("start: 1.2 name" ... "end: 1.2 name") folded into a <details> block.
(function () {
  "use strict";
  var log = document.getElementById("log");
  if (!log) { return; }
  var status = document.getElementById("log-status");
  var stack = [{ level: "", node: log }];   // open action blocks, innermost last
  var START = /^start: ([0-9.]+) (\S+)/;
  var END = /^end: ([0-9.]+) (\S+)/;
  var count = 0;

  function text(msg) { return typeof msg === "string" ? msg : JSON.stringify(msg); }

  function lineOf(record) {
    var line = document.createElement("span");
    var level = String(record.lvl || "info");
    line.className = "line lvl-" + level.replace(/[^a-z]/g, "");
    var dt = document.createElement("span");
    dt.className = "dt";
    dt.textContent = String(record.dt || "").slice(11, 23);
    var lvl = document.createElement("span");
    lvl.className = "lvl";
    lvl.textContent = level;
    line.appendChild(dt);
    line.appendChild(lvl);
    line.appendChild(document.createTextNode((record.role ? "[" + record.role + "] " : "") + text(record.msg) + "\n"));
    return line;
  }

  function add(record) {
    var msg = text(record.msg);
    var line = lineOf(record);
    var open = record.lvl === "info" && START.exec(msg);
    var close = record.lvl === "info" && END.exec(msg);
    if (open) {
      var block = document.createElement("details");
      block.open = true;
      block.dataset.level = open[1];
      var summary = document.createElement("summary");
      summary.appendChild(line);
      block.appendChild(summary);
      stack[stack.length - 1].node.appendChild(block);
      stack.push({ level: open[1], node: block, summary: summary });
    } else if (close) {
      var depth = stack.length - 1;
      while (depth > 0 && stack[depth].level !== close[1]) { depth -= 1; }
      if (depth > 0) {
        stack[depth].node.appendChild(line);
        if (/\[failed\]/.test(msg)) { stack[depth].summary.classList.add("failed"); }
        stack.length = depth;
      } else {
        stack[stack.length - 1].node.appendChild(line);
      }
    } else {
      stack[stack.length - 1].node.appendChild(line);
    }
    count += 1;
  }

  function follow(batch) {
    var atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    batch.forEach(add);
    if (atBottom) { log.scrollTop = log.scrollHeight; }
    if (status) { status.textContent = count + " lines" + (source ? ", streaming live…" : ""); }
  }

  var source = new EventSource(log.dataset.src);
  source.addEventListener("lines", function (event) { follow(JSON.parse(event.data)); });
  source.addEventListener("end", function (event) {
    source.close();
    source = null;
    var info = JSON.parse(event.data);
    var end = document.createElement("span");
    end.className = "line end";
    end.textContent = "— end of log" + (info.state ? " (job " + info.state + ")" : "") + " —\n";
    log.appendChild(end);
    if (status) { status.textContent = count + " lines, complete"; }
  });
  source.onerror = function () {
    if (status && source) { status.textContent = count + " lines, reconnecting…"; }
  };

  var debug = document.getElementById("show-debug");
  function applyDebug() { log.classList.toggle("hide-debug", !debug.checked); }
  if (debug) { debug.addEventListener("change", applyDebug); applyDebug(); }
  function setAll(open) {
    Array.prototype.forEach.call(log.querySelectorAll("details"), function (d) { d.open = open; });
  }
  var fold = document.getElementById("fold-all");
  var unfold = document.getElementById("unfold-all");
  if (fold) { fold.addEventListener("click", function () { setAll(false); }); }
  if (unfold) { unfold.addEventListener("click", function () { setAll(true); }); }
}());

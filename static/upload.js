// postgate upload page: choose files (previews, refused files explained before any byte is
// sent), remove, upload with a progress bar each, cancel, pause/resume large files, retry.
// Without JavaScript the page is a plain form that posts one file and follows
// success_action_redirect; this script takes over that form when it runs.
(function () {
  "use strict";
  var form = document.getElementById("upload-form");
  if (!form || !window.XMLHttpRequest || !window.FormData) return;
  var list = document.getElementById("files");
  var input = document.getElementById("file");
  var camera = document.getElementById("camera");
  var zone = document.getElementById("drop-zone");
  var submit = document.getElementById("submit");
  var summary = document.getElementById("summary");
  var maxSize = Number(form.dataset.maxSize);
  var multipartAbove = Number(form.dataset.multipartThreshold);
  var types = (form.dataset.types || "").split(",")
    .map(function (t) { return t.trim().toLowerCase(); }).filter(Boolean);
  var publicRead = form.dataset.public === "true";
  var lang = document.documentElement.lang || "en";
  // The page's words (templates/i18n/<lang>.json, English under them), sent by the server.
  var words = {};
  try { words = JSON.parse(form.dataset.i18n || "{}"); } catch (e) { words = {}; }
  var plurals = window.Intl && Intl.PluralRules ? new Intl.PluralRules(lang) : null;
  var linkBase = form.dataset.policyUrl.replace(/\/policy$/, "");
  var touch = window.matchMedia && window.matchMedia("(pointer: coarse)").matches;
  // A part is tried up to PART_TRIES times, pausing 0.5, 1, 2, 4, 8 s between tries.
  var PARALLEL_PARTS = 4, PART_TRIES = 6;
  var entries = [];

  // T("key", {name: value}): the text of key with its {name}s filled in.
  function T(key, args) {
    var text = typeof words[key] === "string" ? words[key] : key;
    return text.replace(/\{(\w+)\}/g, function (m, name) {
      return args && name in args ? String(args[name]) : m;
    });
  }

  // N("key", n, args): the plural form of key for n, by the language's rule.
  function N(key, n, args) {
    var forms = words[key] || {};
    var form = plurals ? plurals.select(n) : (n === 1 ? "one" : "other");
    var text = forms[form] || forms.other || key;
    var all = { n: n };
    Object.keys(args || {}).forEach(function (k) { all[k] = args[k]; });
    return text.replace(/\{(\w+)\}/g, function (m, name) { return name in all ? String(all[name]) : m; });
  }

  // The expiry in the visitor's words and time zone ("expires in 2 days"), the exact local date
  // in the <time>'s title; the server wrote it in UTC for a page without script.
  function showExpiry() {
    var time = document.querySelector("#expiry time");
    var at = time && Date.parse(time.getAttribute("datetime"));
    if (!at || !window.Intl || !Intl.RelativeTimeFormat || !Intl.DateTimeFormat) return;
    // The largest unit that still reads as a whole number: "in 1 hour", not "in 60 minutes";
    // always a number ("in 1 day"): a rounded day is not always the calendar's "tomorrow".
    var secs = (at - Date.now()) / 1000, value = Math.round(secs / 60), unit = "minute";
    if (Math.abs(value) >= 60) { value = Math.round(secs / 3600); unit = "hour"; }
    if (Math.abs(value) >= 24) { value = Math.round(secs / 86400); unit = "day"; }
    var rel = new Intl.RelativeTimeFormat(lang, { numeric: "always" });
    time.textContent = rel.format(value, unit);
    time.title = new Intl.DateTimeFormat(lang, { dateStyle: "full", timeStyle: "short" })
      .format(new Date(at));
  }
  showExpiry();

  input.multiple = true;
  input.required = false;
  // The drop zone is the one control; the native picker stays for the no-script form only.
  input.parentNode.classList.add("visually-hidden");
  input.tabIndex = -1;
  input.setAttribute("aria-hidden", "true");
  zone.hidden = false;
  document.getElementById("drop-help").textContent = T(touch ? "drop.touch" : "drop.keyboard");
  if (camera && touch) document.getElementById("camera-row").hidden = false;

  // A size in the page's language ("1.5 MiB", "1,5 MiB").
  function human(n) {
    var units = [T("unit.bytes"), "KiB", "MiB", "GiB"], i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    var digits = { maximumFractionDigits: i ? 1 : 0, minimumFractionDigits: i ? 1 : 0 };
    return (window.Intl ? new Intl.NumberFormat(lang, digits).format(n) : n.toFixed(i ? 1 : 0)) +
      " " + units[i];
  }

  // Text of an S3 XML error element, if present.
  function xmlText(xml, name) {
    var m = new RegExp("<" + name + ">([\\s\\S]*?)</" + name + ">").exec(xml || "");
    if (!m) return "";
    var t = document.createElement("textarea");
    t.innerHTML = m[1];
    return t.value;
  }

  // The file's own type; the server decides the key and checks the type again.
  function fileType(file) { return file.type || "binary/octet-stream"; }

  // The link's rule (links::link accepts_type): `image/` or `image/*` is a family, anything
  // else an exact type; no list takes anything.
  function accepts(type) {
    if (!types.length) return true;
    type = (type || "").split(";")[0].trim().toLowerCase();
    if (!type) return false;
    return types.some(function (e) {
      if (/\/\*$/.test(e)) e = e.slice(0, -1);
      return /\/$/.test(e) ? type.indexOf(e) === 0 : type === e;
    });
  }

  // "images", "PDF files", "images or PDF files": the link's types in words (the server's).
  var typeWords = form.dataset.typeWords || "";

  // Why the page will not send this file, in a sentence, or "" if it may go.
  function refusal(file) {
    if (file.size > maxSize) {
      return T("refused.size", { name: file.name, size: human(file.size), max: human(maxSize) });
    }
    if (!accepts(file.type)) {
      return T("refused.type", { name: file.name, types: typeWords });
    }
    return "";
  }

  function button(text, onClick) {
    var b = document.createElement("button");
    b.type = "button";
    b.className = "small";
    b.textContent = text;
    b.addEventListener("click", onClick);
    return b;
  }

  // A row: a thumbnail (images, drawn from the chosen file, never uploaded first) or an icon
  // with the file's extension, the name and size, a progress bar, a status and one action.
  function addRow(file) {
    var li = document.createElement("li");
    li.className = "file";
    if (/^image\//.test(file.type) && window.URL && URL.createObjectURL) {
      var img = document.createElement("img");
      img.className = "thumb";
      img.alt = "";
      img.src = URL.createObjectURL(file);
      img.addEventListener("load", function () { URL.revokeObjectURL(img.src); });
      li.appendChild(img);
    } else {
      var icon = document.createElement("span");
      icon.className = "icon";
      icon.setAttribute("aria-hidden", "true");
      var ext = /\.([A-Za-z0-9]{1,4})$/.exec(file.name);
      icon.textContent = ext ? ext[1].toUpperCase() : "FILE";
      li.appendChild(icon);
    }
    var name = document.createElement("span");
    name.className = "name";
    name.textContent = file.name + " (" + human(file.size) + ")";
    var bar = document.createElement("progress");
    bar.max = 100;
    bar.value = 0;
    bar.setAttribute("aria-label", T("progress_of", { name: file.name }));
    var status = document.createElement("span");
    status.className = "status";
    status.setAttribute("aria-live", "polite");
    var actions = document.createElement("span");
    actions.className = "actions";
    li.appendChild(name);
    li.appendChild(bar);
    li.appendChild(status);
    li.appendChild(actions);
    list.appendChild(li);
    return { li: li, bar: bar, status: status, actions: actions };
  }

  function setAction(row, buttons) {
    row.actions.textContent = "";
    (buttons || []).forEach(function (b) { row.actions.appendChild(b); });
  }

  function setState(entry, state) {
    ["ready", "sending", "paused", "done", "failed", "cancelled"].forEach(function (c) {
      entry.row.li.classList.toggle(c, c === state);
    });
    entry.state = state;
    refresh();
  }

  // The Upload button counts the files ready to go; the summary says what arrived and what next.
  function refresh() {
    var count = function (s) { return entries.filter(function (e) { return e.state === s; }).length; };
    var ready = count("ready"), busy = count("sending") + count("paused"), done = count("done");
    submit.textContent = ready ? N("upload_n", ready) : T("upload");
    submit.disabled = !ready;
    if (!ready && !busy && done) {
      summary.textContent = N("summary.done", done) + " " + T("summary.next");
      summary.classList.add("ok");
    } else {
      summary.textContent = "";
      summary.classList.remove("ok");
    }
  }

  function fail(entry, message, again) {
    var row = entry.row;
    row.status.textContent = message + " ";
    var retry = button(T("retry"), function () {
      row.status.textContent = "";
      (again || send)(entry);
    });
    row.status.appendChild(retry);
    setAction(row, [removeButton(entry)]);
    setState(entry, "failed");
  }

  function removeButton(entry) {
    return button(T("remove"), function () {
      entries.splice(entries.indexOf(entry), 1);
      entry.row.li.remove();
      refresh();
      zone.focus();
    });
  }

  function cancelled(entry) {
    entry.row.status.textContent = T("status.cancelled");
    entry.row.bar.value = 0;
    setAction(entry.row, [removeButton(entry)]);
    setState(entry, "cancelled");
  }

  function fetchJSON(url, init) {
    return fetch(url, init || {}).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (body) {
        if (!r.ok) throw new Error((body.error && body.error.message) || T("error.request", { status: r.status }));
        return body;
      });
    });
  }

  // A fresh policy for each file, so a page left open never posts an expired one. It is signed
  // for this file: the server checks its type and picks its key (the file's name, or
  // "name (2).ext" when a file of that name is already there: a link never replaces a file).
  function freshPolicy(file) {
    return fetchJSON(form.dataset.policyUrl + "?filename=" + encodeURIComponent(file.name) +
      "&type=" + encodeURIComponent(fileType(file)), { credentials: "same-origin" });
  }

  // Arrived: a link only when the uploader may open it (a public-read bucket), else the name
  // and size the server keeps.
  function done(entry, key, location) {
    var row = entry.row;
    row.bar.value = 100;
    row.li.dataset.key = key;
    var received = T("status.received").split("{key}");
    row.status.textContent = received[0];
    if (publicRead && location) {
      var a = document.createElement("a");
      a.href = location;
      a.textContent = key;
      row.status.appendChild(a);
    } else {
      var b = document.createElement("strong");
      b.textContent = key;
      row.status.appendChild(b);
      row.status.appendChild(document.createTextNode(" (" + human(entry.file.size) + ")"));
    }
    if (received[1]) row.status.appendChild(document.createTextNode(received[1]));
    setAction(row, []);
    setState(entry, "done");
    // The link counts its files: keep "N more files accepted" true after each upload.
    var left = document.getElementById("files-left");
    if (left) {
      var n = Math.max(0, Number(left.dataset.left) - 1);
      left.dataset.left = n;
      left.textContent = n === 0 ? T("files_left_none") : N("files_left", n);
    }
  }

  // Waits `ms` before a retry; offline (a phone in a tunnel), first waits to be back online, so
  // the tries are not spent while nothing can go through.
  function backoff(ms) {
    return new Promise(function (resolve) {
      function later() {
        window.removeEventListener("online", later);
        setTimeout(resolve, ms);
      }
      if (navigator.onLine === false) window.addEventListener("online", later);
      else later();
    });
  }

  // call() again after a network failure (fetch's TypeError: nothing was answered) or an error
  // marked `transient` (a 5xx or 429 answer), with the parts' pauses; any other answer from the
  // server (an Error with its message) is final.
  function withRetries(call, tries) {
    if (tries === undefined) tries = PART_TRIES;
    return call().catch(function (e) {
      if (!(e instanceof TypeError || e.transient) || tries <= 1) throw e;
      return backoff(500 * Math.pow(2, PART_TRIES - tries))
        .then(function () { return withRetries(call, tries - 1); });
    });
  }

  // Large files go up in parts (S3 multipart upload through presigned part URLs): a failed part
  // is retried on its own with a growing pause, Pause stops the parts in flight and Resume (or a
  // reloaded page: the upload id is kept in localStorage under the file's name, size and date)
  // asks the server which parts it has and sends the rest; Cancel aborts the upload on the server.
  function sendMultipart(entry) {
    var file = entry.file, row = entry.row;
    var stateKey = "postgate:" + linkBase + ":" + file.name + ":" + file.size + ":" + file.lastModified;
    var saved = null, st = null, xhrs = [], stop = "";
    try { saved = JSON.parse(localStorage.getItem(stateKey)); } catch (e) { saved = null; }
    function halt(why) {
      stop = why;
      xhrs.forEach(function (x) { x.abort(); });
    }
    function pauseButton() {
      return button(T("pause"), function () {
        halt("pause");
        row.status.textContent = T("status.paused");
        setAction(row, [button(T("resume"), function () { sendMultipart(entry); }), cancelButton()]);
        setState(entry, "paused");
      });
    }
    function cancelButton() {
      return button(T("cancel"), function () {
        halt("cancel");
        var id = (st || saved || {}).upload_id;
        try { localStorage.removeItem(stateKey); } catch (e) { /* private mode */ }
        if (id) fetch(linkBase + "/uploads/" + id, { method: "DELETE" }).catch(function () {});
        cancelled(entry);
      });
    }
    setAction(row, [pauseButton(), cancelButton()]);
    setState(entry, "sending");
    function begin() {
      return fetchJSON(linkBase + "/uploads", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ filename: file.name, size: file.size, content_type: fileType(file) })
      }).then(function (s) {
        try { localStorage.setItem(stateKey, JSON.stringify(s)); } catch (e) { /* private mode */ }
        return { st: s, parts: [] };
      });
    }
    // A saved upload the server no longer has (completed, aborted, expired) starts afresh; a
    // network failure while asking is tried again rather than losing the parts already sent.
    var started = saved
      ? withRetries(function () { return fetchJSON(linkBase + "/uploads/" + saved.upload_id); })
          .then(function (r) { return { st: saved, parts: r.parts }; })
          .catch(function (e) {
            if (e instanceof TypeError) throw e;
            localStorage.removeItem(stateKey);
            return begin();
          })
      : begin();
    row.status.textContent = T(saved ? "status.resuming" : "status.starting");
    started.then(function (x) {
      st = x.st;
      if (stop) throw new Error(stop);
      var size = st.part_size, count = st.part_count;
      var loaded = new Array(count + 1).fill(0), todo = [];
      var have = {};
      x.parts.forEach(function (p) { have[p.part_number] = p.size; });
      for (var n = 1; n <= count; n++) {
        var expected = Math.min(size, file.size - (n - 1) * size);
        if (have[n] === expected) loaded[n] = expected; else todo.push(n);
      }
      function progress() {
        var sum = loaded.reduce(function (a, b) { return a + b; }, 0);
        row.bar.value = Math.min(99, Math.round((sum / Math.max(file.size, 1)) * 100));
      }
      progress();
      row.status.textContent = N("status.parts", count);
      function putPart(n, tries) {
        var blob = file.slice((n - 1) * size, Math.min(n * size, file.size));
        return fetchJSON(linkBase + "/uploads/" + st.upload_id + "/parts/" + n).then(function (u) {
          return new Promise(function (resolve, reject) {
            if (stop) { reject(new Error(stop)); return; }
            var xhr = new XMLHttpRequest();
            xhrs.push(xhr);
            xhr.open("PUT", u.url);
            xhr.upload.onprogress = function (e) { loaded[n] = e.loaded; progress(); };
            xhr.onload = function () {
              if (xhr.status === 200) { loaded[n] = blob.size; progress(); resolve(); }
              else reject(new Error(xmlText(xhr.responseText, "Message") || T("error.part", { n: n, status: xhr.status })));
            };
            xhr.onerror = function () { reject(new Error(T("error.network_part", { n: n }))); };
            xhr.onabort = function () { reject(new Error(stop || "abort")); };
            xhr.send(blob);
          });
        }).catch(function (e) {
          loaded[n] = 0;
          if (stop || tries <= 1) throw e;
          return backoff(500 * Math.pow(2, PART_TRIES - tries))
            .then(function () { return putPart(n, tries - 1); });
        });
      }
      function worker() {
        var n = todo.shift();
        if (n === undefined || stop) return Promise.resolve();
        return putPart(n, PART_TRIES).then(worker);
      }
      var workers = [];
      for (var w = 0; w < PARALLEL_PARTS; w++) workers.push(worker());
      return Promise.all(workers).then(function () {
        if (stop) throw new Error(stop);
        row.status.textContent = T("status.finishing");
        setAction(row, []);
        return withRetries(function () {
          return fetchJSON(linkBase + "/uploads/" + st.upload_id + "/complete", { method: "POST" });
        });
      }).then(function (res) {
        localStorage.removeItem(stateKey);
        done(entry, res.key, res.location);
      });
    }).catch(function (e) {
      if (!stop) fail(entry, e.message, sendMultipart);
    });
  }

  // Tries left when a file of the same name arrives between the policy and the upload (412).
  var NAME_TRIES = 3;

  // A file below the multipart threshold goes up in one form POST with the link's policy. A lost
  // request or a 5xx/429 answer is tried again like a part (same pauses, waiting to be back
  // online, Cancel still stops it); a refusal (4xx) is final. Retry is offered once the tries
  // are spent.
  function send(entry, tries) {
    var file = entry.file, row = entry.row;
    if (tries === undefined) tries = NAME_TRIES;
    if (multipartAbove && file.size > multipartAbove) {
      sendMultipart(entry);
      return;
    }
    var xhr = null, stopped = false;
    setAction(row, [button(T("cancel"), function () {
      stopped = true;
      if (xhr) xhr.abort();
      cancelled(entry);
    })]);
    setState(entry, "sending");
    // One try: a fresh policy (the one of a try before may have expired during the pauses), then
    // the POST. A lost request or a 5xx/429 answer rejects as retryable; any other answer
    // resolves with the finished request, for the caller to judge.
    function attempt() {
      if (stopped) return Promise.reject(new Error("cancel"));
      row.bar.value = 0;
      row.status.textContent = T("status.preparing");
      return freshPolicy(file).then(function (policy) {
        return new Promise(function (resolve, reject) {
          if (stopped) { reject(new Error("cancel")); return; }
          var data = new FormData();
          Object.keys(policy.fields).forEach(function (k) { data.append(k, policy.fields[k]); });
          if (!("Content-Type" in policy.fields)) data.append("Content-Type", fileType(file));
          data.append("file", file, file.name);
          xhr = new XMLHttpRequest();
          xhr.open("POST", policy.url);
          xhr.upload.onprogress = function (e) {
            if (e.lengthComputable) row.bar.value = Math.round((e.loaded / e.total) * 100);
          };
          var x = xhr;
          x.onload = function () {
            if (x.status >= 500 || x.status === 429) {
              var e = new Error(xmlText(x.responseText, "Message") || T("error.upload", { status: x.status }));
              e.transient = true;
              row.bar.value = 0;
              reject(e);
            } else resolve(x);
          };
          x.onerror = function () { row.bar.value = 0; reject(new TypeError(T("error.network"))); };
          x.onabort = function () { reject(new Error("cancel")); };
          row.status.textContent = T("status.uploading");
          x.send(data);
        });
      });
    }
    withRetries(attempt).then(function (x) {
      if (stopped) return;
      if (x.status >= 200 && x.status < 300) {
        done(entry, xmlText(x.responseText, "Key") || file.name,
          xmlText(x.responseText, "Location") || x.getResponseHeader("Location"));
      } else if (x.status === 412 && tries > 1) {
        // Someone took the name first: ask for a policy with the next free name.
        send(entry, tries - 1);
      } else {
        fail(entry, xmlText(x.responseText, "Message") || T("error.upload", { status: x.status }));
      }
    }).catch(function (e) {
      if (stopped) return;
      row.bar.value = 0;
      fail(entry, e.message);
    });
  }

  // Chosen files are listed first (a preview each, Remove); those the link cannot take are
  // refused here, before any byte is sent, with the reason.
  function choose(files) {
    Array.prototype.forEach.call(files, function (file) {
      var entry = { file: file, row: addRow(file), state: "" };
      entries.push(entry);
      var why = refusal(file);
      if (why) {
        entry.row.status.textContent = why;
        entry.row.li.classList.add("refused");
        setAction(entry.row, [removeButton(entry)]);
        setState(entry, "failed");
      } else {
        entry.row.status.textContent = T("status.ready");
        setAction(entry.row, [removeButton(entry)]);
        setState(entry, "ready");
      }
    });
  }

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    entries.filter(function (x) { return x.state === "ready"; }).forEach(function (x) { send(x); });
  });
  [input, camera].forEach(function (el) {
    if (!el) return;
    el.addEventListener("change", function () {
      if (el.files.length) { choose(el.files); el.value = ""; }
    });
  });
  zone.addEventListener("click", function () { input.click(); });
  zone.addEventListener("keydown", function (e) {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); }
  });
  zone.addEventListener("dragover", function (e) { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", function () { zone.classList.remove("over"); });
  zone.addEventListener("drop", function (e) {
    e.preventDefault();
    zone.classList.remove("over");
    choose(e.dataTransfer.files);
  });
  refresh();
})();

// postgate upload page: several files at once, a progress bar each, retry on failure.
// Without JavaScript the page is a plain form that posts one file and follows
// success_action_redirect; this script takes over that form when it runs.
(function () {
  "use strict";
  var form = document.getElementById("upload-form");
  if (!form || !window.XMLHttpRequest || !window.FormData) return;
  var list = document.getElementById("files");
  var input = document.getElementById("file");
  var zone = document.getElementById("drop-zone");
  var typeInput = document.getElementById("content-type");
  var maxSize = Number(form.dataset.maxSize);
  var multipartAbove = Number(form.dataset.multipartThreshold);
  var linkBase = form.dataset.policyUrl.replace(/\/policy$/, "");
  var PARALLEL_PARTS = 4, PART_TRIES = 4;

  input.multiple = true;
  input.required = false;
  zone.hidden = false;

  function human(n) {
    var units = ["B", "KiB", "MiB", "GiB"], i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : n) + " " + units[i];
  }

  // Text of an S3 XML error element, if present.
  function xmlText(xml, name) {
    var m = new RegExp("<" + name + ">([\\s\\S]*?)</" + name + ">").exec(xml || "");
    if (!m) return "";
    var t = document.createElement("textarea");
    t.innerHTML = m[1];
    return t.value;
  }

  function fileType(file) { return file.type || typeInput.value; }

  // A fresh policy for each file, so a page left open never posts an expired one. It is signed
  // for this file: the server checks its type and picks its key (the file's name, or
  // "name (2).ext" when a file of that name is already there: a link never replaces a file).
  function freshPolicy(file) {
    var url = form.dataset.policyUrl + "?filename=" + encodeURIComponent(file.name) +
      "&type=" + encodeURIComponent(fileType(file));
    return fetch(url, { credentials: "same-origin" }).then(function (r) {
      return r.json().then(function (body) {
        if (!r.ok) throw new Error((body.error && body.error.message) || "This link can no longer be used.");
        return body;
      });
    });
  }

  function addRow(file) {
    var li = document.createElement("li");
    li.className = "file";
    var name = document.createElement("span");
    name.className = "name";
    name.textContent = file.name + " (" + human(file.size) + ")";
    var bar = document.createElement("progress");
    bar.max = 100;
    bar.value = 0;
    bar.setAttribute("aria-label", "Upload progress of " + file.name);
    var status = document.createElement("span");
    status.className = "status";
    li.appendChild(name);
    li.appendChild(bar);
    li.appendChild(status);
    list.appendChild(li);
    return { li: li, bar: bar, status: status };
  }

  function fail(row, file, message, again) {
    row.li.classList.add("failed");
    row.status.textContent = message + " ";
    var retry = document.createElement("button");
    retry.type = "button";
    retry.textContent = "Retry";
    retry.addEventListener("click", function () {
      row.li.classList.remove("failed");
      row.status.textContent = "";
      (again || send)(file, row);
    });
    row.status.appendChild(retry);
  }

  function fetchJSON(url, init) {
    return fetch(url, init || {}).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (body) {
        if (!r.ok) throw new Error((body.error && body.error.message) || "Request failed (" + r.status + ").");
        return body;
      });
    });
  }

  function done(row, key, location) {
    row.bar.value = 100;
    row.li.classList.add("done");
    row.status.textContent = "Uploaded as ";
    var a = document.createElement("a");
    a.href = location;
    a.textContent = key;
    row.status.appendChild(a);
    // The link counts its files: keep "N more files accepted" true after each upload.
    var left = document.getElementById("files-left");
    if (left) {
      var n = Math.max(0, Number(left.dataset.left) - 1);
      left.dataset.left = n;
      left.textContent = n === 0 ? "no more files accepted"
        : n + " more file" + (n === 1 ? "" : "s") + " accepted";
    }
  }

  // Large files go up in parts (S3 multipart upload through presigned part URLs): a failed part
  // is retried on its own, and a reloaded page picks up where it stopped (the upload id is kept
  // in localStorage under the file's name, size and date).
  function sendMultipart(file, row) {
    var stateKey = "postgate:" + linkBase + ":" + file.name + ":" + file.size + ":" + file.lastModified;
    var saved = null;
    try { saved = JSON.parse(localStorage.getItem(stateKey)); } catch (e) { saved = null; }
    function begin() {
      return fetchJSON(linkBase + "/uploads", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ filename: file.name, size: file.size, content_type: fileType(file) })
      }).then(function (st) {
        try { localStorage.setItem(stateKey, JSON.stringify(st)); } catch (e) { /* private mode */ }
        return { st: st, parts: [] };
      });
    }
    var started = saved
      ? fetchJSON(linkBase + "/uploads/" + saved.upload_id)
          .then(function (r) { return { st: saved, parts: r.parts }; })
          .catch(function () { localStorage.removeItem(stateKey); return begin(); })
      : begin();
    row.status.textContent = saved ? "Resuming…" : "Starting…";
    started.then(function (x) {
      var st = x.st, size = st.part_size, count = st.part_count;
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
      row.status.textContent = "Uploading in " + count + " parts…";
      function putPart(n, tries) {
        var blob = file.slice((n - 1) * size, Math.min(n * size, file.size));
        return fetchJSON(linkBase + "/uploads/" + st.upload_id + "/parts/" + n).then(function (u) {
          return new Promise(function (resolve, reject) {
            var xhr = new XMLHttpRequest();
            xhr.open("PUT", u.url);
            xhr.upload.onprogress = function (e) { loaded[n] = e.loaded; progress(); };
            xhr.onload = function () {
              if (xhr.status === 200) { loaded[n] = blob.size; progress(); resolve(); }
              else reject(new Error(xmlText(xhr.responseText, "Message") || "Part " + n + " failed (" + xhr.status + ")."));
            };
            xhr.onerror = function () { reject(new Error("Network error on part " + n + ".")); };
            xhr.send(blob);
          });
        }).catch(function (e) {
          loaded[n] = 0;
          if (tries <= 1) throw e;
          return new Promise(function (r) { setTimeout(r, 500 * (PART_TRIES - tries + 1)); })
            .then(function () { return putPart(n, tries - 1); });
        });
      }
      function worker() {
        var n = todo.shift();
        if (n === undefined) return Promise.resolve();
        return putPart(n, PART_TRIES).then(worker);
      }
      var workers = [];
      for (var w = 0; w < PARALLEL_PARTS; w++) workers.push(worker());
      return Promise.all(workers).then(function () {
        row.status.textContent = "Finishing…";
        return fetchJSON(linkBase + "/uploads/" + st.upload_id + "/complete", { method: "POST" });
      }).then(function (res) {
        localStorage.removeItem(stateKey);
        done(row, res.key, res.location);
      });
    }).catch(function (e) { fail(row, file, e.message, sendMultipart); });
  }

  // Tries left when a file of the same name arrives between the policy and the upload (412).
  var NAME_TRIES = 3;

  function send(file, row, tries) {
    if (tries === undefined) tries = NAME_TRIES;
    if (file.size > maxSize) {
      fail(row, file, "Too large: the limit is " + human(maxSize) + ".");
      return;
    }
    if (multipartAbove && file.size > multipartAbove) {
      sendMultipart(file, row);
      return;
    }
    row.status.textContent = "Preparing…";
    freshPolicy(file).then(function (policy) {
      var data = new FormData();
      Object.keys(policy.fields).forEach(function (k) { data.append(k, policy.fields[k]); });
      if (!("Content-Type" in policy.fields)) data.append("Content-Type", fileType(file));
      data.append("file", file, file.name);
      var xhr = new XMLHttpRequest();
      xhr.open("POST", policy.url);
      xhr.upload.onprogress = function (e) {
        if (e.lengthComputable) row.bar.value = Math.round((e.loaded / e.total) * 100);
      };
      xhr.onload = function () {
        if (xhr.status >= 200 && xhr.status < 300) {
          done(row, xmlText(xhr.responseText, "Key") || file.name,
            xmlText(xhr.responseText, "Location") || xhr.getResponseHeader("Location"));
        } else if (xhr.status === 412 && tries > 1) {
          // Someone took the name first: ask for a policy with the next free name.
          send(file, row, tries - 1);
        } else {
          fail(row, file, xmlText(xhr.responseText, "Message") || "Upload failed (" + xhr.status + ").");
        }
      };
      xhr.onerror = function () { fail(row, file, "Network error."); };
      row.status.textContent = "Uploading…";
      xhr.send(data);
    }).catch(function (e) { fail(row, file, e.message); });
  }

  function start(files) {
    Array.prototype.forEach.call(files, function (f) { send(f, addRow(f)); });
  }

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    start(input.files);
    input.value = "";
  });
  input.addEventListener("change", function () {
    if (input.files.length) { start(input.files); input.value = ""; }
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
    start(e.dataTransfer.files);
  });
})();

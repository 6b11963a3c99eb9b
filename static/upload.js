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

  // A fresh policy for each file, so a page left open never posts an expired one.
  function freshPolicy() {
    return fetch(form.dataset.policyUrl, { credentials: "same-origin" }).then(function (r) {
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

  function fail(row, file, message) {
    row.li.classList.add("failed");
    row.status.textContent = message + " ";
    var retry = document.createElement("button");
    retry.type = "button";
    retry.textContent = "Retry";
    retry.addEventListener("click", function () {
      row.li.classList.remove("failed");
      row.status.textContent = "";
      send(file, row);
    });
    row.status.appendChild(retry);
  }

  function send(file, row) {
    if (file.size > maxSize) {
      fail(row, file, "Too large: the limit is " + human(maxSize) + ".");
      return;
    }
    row.status.textContent = "Preparing…";
    freshPolicy().then(function (policy) {
      var data = new FormData();
      Object.keys(policy.fields).forEach(function (k) { data.append(k, policy.fields[k]); });
      data.append("Content-Type", file.type || typeInput.value);
      data.append("file", file, file.name);
      var xhr = new XMLHttpRequest();
      xhr.open("POST", policy.url);
      xhr.upload.onprogress = function (e) {
        if (e.lengthComputable) row.bar.value = Math.round((e.loaded / e.total) * 100);
      };
      xhr.onload = function () {
        if (xhr.status >= 200 && xhr.status < 300) {
          row.bar.value = 100;
          row.li.classList.add("done");
          var location = xmlText(xhr.responseText, "Location") || xhr.getResponseHeader("Location");
          var key = xmlText(xhr.responseText, "Key") || file.name;
          row.status.textContent = "Uploaded as ";
          var a = document.createElement("a");
          a.href = location;
          a.textContent = key;
          row.status.appendChild(a);
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

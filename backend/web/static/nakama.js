// Nakama's few lines of browser code: copy buttons, the create form's name check, the delete
// confirmation and the pipeline log stream (server-sent events).
"use strict";

function copyText(text, button) {
  const done = () => {
    const label = button.textContent;
    button.textContent = "Copied";
    setTimeout(() => { button.textContent = label; }, 1500);
  };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(done);
    return;
  }
  const area = document.createElement("textarea");
  area.value = text;
  document.body.appendChild(area);
  area.select();
  document.execCommand("copy");
  area.remove();
  done();
}

function streamLog(pre) {
  const state = document.getElementById("log-state");
  const source = new EventSource(pre.dataset.logStream);
  const atBottom = () => pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 8;
  const show = (append, text) => {
    const follow = atBottom();
    pre.textContent = append ? pre.textContent + text : text;
    if (follow) { pre.scrollTop = pre.scrollHeight; }
  };
  source.addEventListener("log", (e) => show(true, JSON.parse(e.data).text));
  source.addEventListener("reset", (e) => show(false, JSON.parse(e.data).text));
  source.addEventListener("end", (e) => {
    const end = JSON.parse(e.data);
    source.close();
    if (state) { state.textContent = "finished"; }
    const status = document.getElementById("pipeline-status");
    if (status) {
      status.innerHTML = "";
      const badge = document.createElement("span");
      badge.className = "badge s-" + end.status;
      badge.textContent = end.status;
      status.appendChild(badge);
    }
    const duration = document.getElementById("pipeline-duration");
    if (duration) { duration.textContent = end.duration; }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("button[data-copy]").forEach((button) => {
    button.addEventListener("click", () => {
      const source = document.querySelector(button.dataset.copy);
      if (source) { copyText(source.textContent, button); }
    });
  });

  document.querySelectorAll("pre[data-log-stream]").forEach(streamLog);

  const confirm = document.getElementById("confirm-name");
  const deleteButton = document.getElementById("delete-button");
  if (confirm && deleteButton) {
    const check = () => { deleteButton.disabled = confirm.value.trim() !== confirm.dataset.expected; };
    confirm.addEventListener("input", check);
    check();
  }
});

// The name check answers with a span marked data-invalid when the name would be refused.
document.addEventListener("htmx:afterSwap", (e) => {
  if (e.target.id !== "name-help") { return; }
  const button = document.getElementById("create-button");
  if (button) { button.disabled = e.target.querySelector("[data-invalid]") !== null; }
});

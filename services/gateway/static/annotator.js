// The web annotator: question -> interactive segmentation (left click positive, right or
// Shift+click negative) -> mask overlay after every click -> submit or skip -> next question.
// User text (project names, labels, prompts, reasons) only ever reaches the page as text (textContent,
// fillSelect): never as HTML.
"use strict";
const $ = (id) => document.getElementById(id);
const state = { whoami: null, config: null, project: null, question: null, session: null, image: null,
  bitmap: null, overlay: null, clicks: [], mask: null, busy: false, recorder: null };

function showError(err) { $("error").textContent = err ? String(err.message || err) : ""; }

function showLogin(message) {
  $("login").hidden = false; $("work").hidden = true; $("logout").hidden = true;
  $("login-error").textContent = message || "";
}

async function boot() {
  $("logout").onclick = async (e) => {
    e.preventDefault();
    try { await Api.logout(); } catch (err) { showError(err); return; }
    location.reload();
  };
  $("login-form").onsubmit = async (e) => {
    e.preventDefault();
    const input = $("key-input");
    try { await Api.login(input.value.trim()); } catch (err) { input.value = ""; showLogin(err.message); return; }
    input.value = "";  // the key leaves the page: only the HttpOnly cookie remains
    location.reload();
  };
  state.whoami = await Api.whoami();
  if (!state.whoami) { showLogin(""); return; }
  $("login").hidden = true; $("work").hidden = false; $("logout").hidden = false;
  $("whoami").textContent = `${state.whoami.name} (${state.whoami.role})`;
  state.config = await Api.get("/v1/config");
  state.recorder = new Recorder(state.config.byproducts_ingest);
  state.recorder.report();
  const projects = await Api.get("/v1/projects");
  fillSelect($("project"), projects.map((p) => ({ value: p.project_id, text: p.name })));
  const wanted = new URLSearchParams(location.search).get("project") || localStorage.getItem("annot.project");
  if (wanted && projects.some((p) => p.project_id === wanted)) $("project").value = wanted;
  $("project").onchange = () => { localStorage.setItem("annot.project", $("project").value); loadProject(projects); };
  bindInput();
  await loadProject(projects);
}

async function loadProject(projects) {
  state.project = projects.find((p) => p.project_id === $("project").value) || null;
  if (!state.project) { $("prompt").textContent = "No project is visible to this key."; return; }
  fillSelect($("label"), state.project.labels.map((l, i) => ({ value: l, text: `${i + 1}. ${l}` })));
  await nextQuestion();
}

async function nextQuestion() {
  showError(null);
  state.session = null; state.clicks = []; state.mask = null; state.overlay = null; updateInfo();
  const base = `/v1/projects/${encodeURIComponent(state.project.project_id)}`;
  const next = await Api.post(`${base}/questions/next`);
  const held = next.held_by_others || 0;
  $("held").dataset.held = held;
  $("held").textContent = held ? `${held} image${held > 1 ? "s" : ""} held by others` : "";
  if (next.exhausted) {
    state.question = null; state.bitmap = null; draw();
    $("prompt").textContent = held
      ? `Nothing free to annotate right now: ${held} image${held > 1 ? "s are" : " is"} held by other annotators.`
      : "Nothing left to annotate in this project.";
    $("reason").textContent = held && next.lease_expires_at
      ? `The first lease ends at ${new Date(next.lease_expires_at).toLocaleTimeString()}; ask again then.` : "";
    return;
  }
  state.question = next.task; state.image = next.image;
  $("prompt").textContent = next.task.prompt;
  $("reason").textContent = `${next.task.policy}: ${next.task.reason}`;
  state.bitmap = await Api.imageBitmap(next.image.url);
  const canvas = $("canvas");
  canvas.width = next.image.width; canvas.height = next.image.height;
  state.session = await Api.post(`${base}/sessions`, { task_id: next.task.task_id, label: $("label").value });
  state.recorder.start(state.project.project_id, state.session.session_id, next.task.task_id, next.image, state.whoami.id);
  canvas.dataset.sessionId = state.session.session_id;
  draw(); canvas.focus();
}

function draw() {
  const canvas = $("canvas"), ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (!state.bitmap) return;
  ctx.drawImage(state.bitmap, 0, 0);
  if (state.overlay) ctx.drawImage(state.overlay, 0, 0);
  const r = Math.max(4, Math.round(Math.max(canvas.width, canvas.height) / 120));
  for (const c of state.clicks) {
    ctx.beginPath(); ctx.arc(c.x, c.y, r, 0, 2 * Math.PI);
    ctx.fillStyle = c.positive ? "#2ecc40" : "#ff4136"; ctx.fill();
    ctx.lineWidth = Math.max(1, r / 3); ctx.strokeStyle = "white"; ctx.stroke();
  }
}

function toImage(event) {  // CSS pixels of the canvas -> image pixels
  const rect = $("canvas").getBoundingClientRect();
  return { x: (event.clientX - rect.left) * ($("canvas").width / rect.width),
           y: (event.clientY - rect.top) * ($("canvas").height / rect.height) };
}

function applyUpdate(reply) {
  state.mask = reply.mask;
  const { canvas, area } = Rle.overlay(reply.mask);
  state.overlay = canvas;
  const info = $("mask-info");
  info.dataset.area = area; info.dataset.clicks = reply.click_count;
  $("latency").textContent = `model ${reply.model_latency_ms.toFixed(0)} ms · service ${reply.service_latency_ms.toFixed(0)} ms`;
  updateInfo(area, reply.click_count); draw();
}

function updateInfo(area = 0, clicks = 0) {
  const info = $("mask-info");
  info.dataset.area = area; info.dataset.clicks = clicks;
  info.textContent = clicks ? `mask: ${area} px after ${clicks} click${clicks > 1 ? "s" : ""}` : "no mask yet";
}

async function act(work) {  // one request at a time; the UI ignores input while busy
  if (state.busy || !state.session) return;
  state.busy = true; document.body.classList.add("busy"); showError(null);
  try { await work(); } catch (err) { showError(err); } finally { state.busy = false; document.body.classList.remove("busy"); }
}

function sessionPath(suffix) {
  return `/v1/projects/${encodeURIComponent(state.project.project_id)}/sessions/${state.session.session_id}/${suffix}`;
}

function click(event, positive) {
  const p = toImage(event);
  act(async () => {
    const t0 = performance.now();
    const reply = await Api.post(sessionPath("clicks"), { x: p.x, y: p.y, positive, t_ms: state.recorder.tMs() });
    state.clicks.push({ x: p.x, y: p.y, positive });
    state.recorder.click(p.x, p.y, positive, reply.click.index, 1 - reply.iou_with_previous, performance.now() - t0);
    applyUpdate(reply);
  });
}

const undo = () => act(async () => {
  if (!state.clicks.length) return;
  const reply = await Api.post(sessionPath("undo"));
  state.redo = state.redo || []; state.redo.push(state.clicks.pop());
  state.recorder.undo(reply.click.index); applyUpdate(reply);
});
const redo = () => act(async () => {
  const reply = await Api.post(sessionPath("redo"));
  state.clicks.push({ x: reply.click.x, y: reply.click.y, positive: reply.click.positive });
  state.recorder.redo(reply.click.index); applyUpdate(reply);
});
const finish = (outcome) => act(async () => {
  const label = $("label").value;
  const reply = await Api.post(sessionPath("finish"), { outcome, label });
  await state.recorder.end(outcome, reply.session.mask, label, reply.session.clicks.length);
  $("reason").textContent = `${outcome}: session ${reply.session.session_id} (${reply.session.clicks.length} clicks, ${reply.seconds.toFixed(1)} s)`;
  document.body.dataset.lastSession = reply.session.session_id;
  state.session = null;
  setTimeout(() => nextQuestion().catch(showError), 0);
});

function bindInput() {
  const canvas = $("canvas");
  canvas.addEventListener("mousedown", (e) => {
    if (e.button === 0) click(e, !e.shiftKey);
    else if (e.button === 2) click(e, false);
  });
  canvas.addEventListener("contextmenu", (e) => e.preventDefault());
  canvas.addEventListener("mousemove", (e) => { if (state.session) { const p = toImage(e); state.recorder.mouse(p.x, p.y); } });
  $("undo").onclick = undo; $("redo").onclick = redo;
  $("submit").onclick = () => finish("submitted"); $("skip").onclick = () => finish("skipped");
  $("label").onchange = () => state.recorder.category($("label").selectedIndex, $("label").value, false);
  document.addEventListener("keydown", (e) => {
    if (e.target.tagName === "INPUT" || !state.session) return;
    const key = e.key.toLowerCase();
    let action = "";
    if (key === "z") { action = "undo"; undo(); }
    else if (key === "y") { action = "redo"; redo(); }
    else if (e.key === "Enter") { action = "submit"; finish("submitted"); }
    else if (key === "s" && !e.ctrlKey) { action = "skip"; finish("skipped"); }
    else if (/^[1-9]$/.test(e.key) && Number(e.key) <= $("label").options.length) {
      action = "label"; $("label").selectedIndex = Number(e.key) - 1;
      state.recorder.category($("label").selectedIndex, $("label").value, true);
    }
    if (action) { e.preventDefault(); }
    state.recorder.key(e, action);
  });
  window.addEventListener("beforeunload", () => state.recorder && state.recorder.flush());
}

boot().catch(showError);

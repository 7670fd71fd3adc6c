// The web annotator: the dialog's next question, rendered for what it is, answered from the keyboard:
//   VERIFY        the proposal (mask or box) over the image; Y yes, N no (then clicks correct it, starting
//                 from the proposal as the session's initial mask);
//   LABEL_REGION  the region highlighted; boxes dragged inside it, each with a label; clicks outside refused;
//   SEGMENT       clicks (left positive, right or Shift negative) -> mask after every click; a box (B then drag,
//                 or Alt+drag) as an object's first input, then clicks correct it; N keeps the object and starts
//                 another on the same image; Enter when the image is done;
//   SKIP          nothing to do: Enter goes on.
// Answers without a segmentation session go to POST .../tasks/{id}/answer (the dialog's RecordAnswer) with the
// seconds since the question was shown. ?correct=<session_id> opens a stored mask for a reviewer's correction.
// User text (project names, labels, prompts, reasons) only ever reaches the page as text (textContent,
// fillSelect): never as HTML.
"use strict";
const PALETTE = [[30, 144, 255], [255, 133, 27], [46, 204, 64], [177, 13, 201], [255, 220, 0], [57, 204, 204]];
const state = { whoami: null, config: null, project: null, question: null, mode: "idle", session: null, image: null,
  bitmap: null, overlay: null, clicks: [], mask: null, busy: false, recorder: null, shownAt: 0,
  objects: [], proposal: null, region: null, boxes: [], drag: null, correcting: null, boxTool: false };

const base = () => `/v1/projects/${encodeURIComponent(state.project.project_id)}`;

async function boot() {
  state.whoami = await signIn();
  if (!state.whoami) return;
  state.config = await Api.get("/v1/config");
  state.recorder = new Recorder(state.config.byproducts_ingest);
  state.recorder.report();
  const projects = await Api.get("/v1/projects");
  fillSelect($("project"), projects.map((p) => ({ value: p.project_id, text: p.name })));
  const params = new URLSearchParams(location.search);
  const wanted = params.get("project") || localStorage.getItem("annot.project");
  if (wanted && projects.some((p) => p.project_id === wanted)) $("project").value = wanted;
  $("project").onchange = () => { localStorage.setItem("annot.project", $("project").value); loadProject(projects); };
  bindInput();
  await loadProject(projects, params.get("correct"));
}

async function loadProject(projects, correct) {
  state.project = projects.find((p) => p.project_id === $("project").value) || null;
  if (!state.project) { $("prompt").textContent = "No project is visible to this key."; return; }
  fillSelect($("label"), state.project.labels.map((l, i) => ({ value: l, text: `${i + 1}. ${l}` })));
  if (correct) await openCorrection(correct); else await nextQuestion();
}

async function showProgress() {
  try {
    const p = await Api.get(`${base()}/progress`);
    const el = $("progress");
    el.dataset.done = p.done; el.dataset.todo = p.to_do; el.dataset.model = p.model ? p.model.version : "";
    const model = p.model ? `model ${p.model.name} version ${p.model.version}` : `model unknown (${p.model_error})`;
    // the project's own models the loop promoted, with their held-out figures
    const own = Object.entries(p.project_models || {}).map(([kind, m]) => {
      const f = m.figures || {};
      const figure = f.noc90 !== undefined ? `, NoC@90 ${f.noc90.toFixed(2)}` : f.miou !== undefined ? `, mIoU ${f.miou.toFixed(3)}` : "";
      return `${kind} v${m.version}${figure}`;
    });
    el.dataset.projectModels = own.join("; ");
    const trained = own.length ? ` · project models: ${own.join("; ")}` : " · project models: base";
    el.dataset.framesDone = p.frames_done || 0;
    const frames = p.frames_done ? ` · ${p.frames_done} video frame${p.frames_done > 1 ? "s" : ""} done` : "";
    el.textContent = `${p.done} of ${p.images} images done · ${p.to_do} to do${frames} · ${model}${trained}`;
  } catch (err) { $("progress").textContent = `progress unavailable: ${err.message}`; }
}

function setMode(mode, typeText) {
  state.mode = mode;
  document.body.dataset.mode = mode;
  $("question-type").textContent = typeText || "";
  $("verify-tools").hidden = mode !== "verify";
  $("segment-tools").hidden = mode !== "segment";
  $("region-tools").hidden = mode !== "label_region";
  $("label-tools").hidden = mode === "verify" || mode === "skip" || mode === "idle";
}

function resetImage() {
  state.session = null; state.clicks = []; state.mask = null; state.overlay = null; state.objects = [];
  state.proposal = null; state.region = null; state.boxes = []; state.drag = null; state.redo = [];
  setBoxTool(false); delete $("canvas").dataset.sessionId; updateInfo();
}

async function nextQuestion() {
  showError(null);
  resetImage();
  setMode("idle", "");
  showProgress();
  const next = await Api.post(`${base()}/questions/next`);
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
  await showTask(next.task, next.image);
}

async function showTask(task, image) {
  state.question = task; state.image = image;
  $("prompt").textContent = task.prompt;
  $("reason").textContent = `${task.policy}: ${task.reason}` + (task.proposal_source ? ` · proposal: ${task.proposal_source}` : "");
  document.body.dataset.taskId = task.task_id; document.body.dataset.questionType = task.question_type;
  // a question about a video frame shows which one (the frame is drawn and answered as an image is)
  document.body.dataset.frame = image.video_id ? `${image.video_id}/${image.frame_index}` : "";
  $("picture").textContent = image.video_id ? `frame ${image.frame_index + 1} of ${image.frames} · ${image.filename}`
    : image.filename || "";
  state.bitmap = await Api.imageBitmap(image.url);
  const canvas = $("canvas");
  canvas.width = image.width; canvas.height = image.height;
  const region = task.region || { kind: "whole_image" };
  state.region = region.box ? region : null;
  if (region.mask) {  // a superpixel: its own pixels, not only its bounding box, bound what is drawn
    state.region.overlay = Rle.overlay(region.mask, [255, 255, 255, 0]).canvas;
    state.region.bits = Rle.bits(region.mask); state.region.stride = region.mask.size[1];
  }
  if (task.proposed_label && state.project.labels.includes(task.proposed_label)) $("label").value = task.proposed_label;
  state.proposal = task.proposal || null;
  if (state.proposal && state.proposal.mask) state.proposal.overlay = Rle.overlay(state.proposal.mask, [255, 220, 0, 130]).canvas;
  const type = task.question_type;
  state.shownAt = performance.now();
  if (type === "VERIFY") setMode("verify", "VERIFY");
  else if (type === "LABEL_REGION") setMode("label_region", "LABEL REGION");
  else if (type === "SKIP") setMode("skip", "SKIP");
  else { setMode("segment", "SEGMENT"); await startSession(task.task_id); }
  draw(); canvas.focus();
}

async function startSession(taskId, extra = {}) {
  const body = { label: $("label").value, ...extra };
  if (taskId) body.task_id = taskId; else body.image_id = state.image.image_id;
  state.session = await Api.post(`${base()}/sessions`, body);
  state.clicks = []; state.mask = null; state.overlay = null; state.redo = []; updateInfo();
  state.recorder.start(state.project.project_id, state.session.session_id, state.session.task_id, state.image, state.whoami.id);
  $("canvas").dataset.sessionId = state.session.session_id;
}

function draw() {
  const canvas = $("canvas"), ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (!state.bitmap) return;
  ctx.drawImage(state.bitmap, 0, 0);
  const lw = Math.max(2, Math.round(Math.max(canvas.width, canvas.height) / 300));
  if (state.region) {  // dim everything outside the region, outline it
    const [x, y, w, h] = state.region.box;
    ctx.save(); ctx.fillStyle = "rgba(0, 0, 0, 0.45)";
    ctx.beginPath(); ctx.rect(0, 0, canvas.width, canvas.height); ctx.rect(x, y, w, h); ctx.fill("evenodd");
    ctx.restore();
    ctx.lineWidth = lw; ctx.strokeStyle = "#ffdc00"; ctx.setLineDash([]); ctx.strokeRect(x, y, w, h);
  }
  for (const o of state.objects) ctx.drawImage(o.overlay, 0, 0);
  if (state.proposal && !state.clicks.length) {  // the proposal, or the initial mask before the first click
    if (state.proposal.overlay) ctx.drawImage(state.proposal.overlay, 0, 0);
    if (state.proposal.box) {
      const [x, y, w, h] = state.proposal.box;
      ctx.lineWidth = lw; ctx.strokeStyle = "#ffdc00"; ctx.setLineDash([3 * lw, 2 * lw]); ctx.strokeRect(x, y, w, h);
      ctx.setLineDash([]);
    }
  }
  if (state.overlay) ctx.drawImage(state.overlay, 0, 0);
  const r = Math.max(4, Math.round(Math.max(canvas.width, canvas.height) / 120));
  for (const c of state.clicks) {
    if (c.box) {  // the object's box (its first input): dashed, in the positive colour
      ctx.lineWidth = lw; ctx.strokeStyle = "#2ecc40"; ctx.setLineDash([2 * lw, lw]); ctx.strokeRect(...c.box);
      ctx.setLineDash([]); continue;
    }
    ctx.beginPath(); ctx.arc(c.x, c.y, r, 0, 2 * Math.PI);
    ctx.fillStyle = c.positive ? "#2ecc40" : "#ff4136"; ctx.fill();
    ctx.lineWidth = Math.max(1, r / 3); ctx.strokeStyle = "white"; ctx.stroke();
  }
  const boxes = state.drag ? [...state.boxes, state.drag] : state.boxes;
  boxes.forEach((b, i) => {
    const [red, green, blue] = PALETTE[i % PALETTE.length];
    ctx.lineWidth = lw; ctx.strokeStyle = `rgb(${red}, ${green}, ${blue})`; ctx.strokeRect(...b.box);
    if (b.label) {
      ctx.font = `${Math.max(12, 4 * lw)}px system-ui, sans-serif`; ctx.fillStyle = ctx.strokeStyle;
      ctx.fillText(b.label, b.box[0] + lw, b.box[1] + Math.max(12, 4 * lw));
    }
  });
}

function toImage(event) {  // CSS pixels of the canvas -> image pixels
  const rect = $("canvas").getBoundingClientRect();
  return { x: (event.clientX - rect.left) * ($("canvas").width / rect.width),
           y: (event.clientY - rect.top) * ($("canvas").height / rect.height) };
}

function inRegion(p) {
  if (!state.region) return true;
  const [x, y, w, h] = state.region.box;
  if (!(p.x >= x && p.x < x + w && p.y >= y && p.y < y + h)) return false;
  return !state.region.bits || state.region.bits[Math.floor(p.y) * state.region.stride + Math.floor(p.x)] === 1;
}

function overlapsRegion(box) {  // a box with at least one pixel of the region (a superpixel is no rectangle)
  if (!state.region || !state.region.bits) return true;
  const { bits, stride } = state.region;
  const x0 = Math.floor(box[0]), y0 = Math.floor(box[1]);
  const x1 = Math.ceil(box[0] + box[2]), y1 = Math.ceil(box[1] + box[3]);
  for (let y = y0; y < y1; y++) for (let x = x0; x < x1; x++) if (bits[y * stride + x]) return true;
  return false;
}

function applyUpdate(reply) {
  state.mask = reply.mask;
  const color = PALETTE[state.objects.length % PALETTE.length];
  const { canvas, area } = Rle.overlay(reply.mask, [...color, 120]);
  state.overlay = canvas;
  $("latency").textContent = `model ${reply.model_latency_ms.toFixed(0)} ms · service ${reply.service_latency_ms.toFixed(0)} ms`;
  updateInfo(area, reply.click_count); draw();
}

function updateInfo(area = 0, clicks = 0) {
  const info = $("mask-info");
  info.dataset.area = area; info.dataset.clicks = clicks;
  info.textContent = clicks ? `mask: ${area} px after ${clicks} click${clicks > 1 ? "s" : ""}` : "no mask yet";
  const n = state.objects.length + state.boxes.length;
  $("objects-info").dataset.objects = n;
  $("objects-info").textContent = n ? `${n} object${n > 1 ? "s" : ""} kept` : "";
}

async function act(work) {  // one request at a time; the UI ignores input while busy
  if (state.busy || !state.question) return;
  state.busy = true; document.body.classList.add("busy"); showError(null);
  try { await work(); } catch (err) { showError(err); } finally { state.busy = false; document.body.classList.remove("busy"); }
}

function sessionPath(suffix) {
  return `${base()}/sessions/${state.session.session_id}/${suffix}`;
}

const seconds = () => Math.max(0.001, (performance.now() - state.shownAt) / 1000);

function after(message) {
  $("reason").textContent = message;
  setTimeout(() => nextQuestion().catch(showError), 0);
}

// Answers without a segmentation session: verify, labels, skip -> the dialog's RecordAnswer.
async function answer(body) {
  const reply = await Api.post(`${base()}/tasks/${encodeURIComponent(state.question.task_id)}/answer`,
    { ...body, seconds: seconds() });
  document.body.dataset.lastAnswer = JSON.stringify({ task_id: reply.task.task_id, state: reply.task.state,
    dialog: reply.dialog, ...body });
  return reply;
}

const heard = (reply) => (reply.dialog === "recorded" ? "the dialog recorded the answer" : "recorded here (no dialog question)");

const verify = (accepted) => act(async () => {
  if (state.mode !== "verify") return;
  const reply = await answer({ verify: { accepted } });
  if (accepted) { after(`yes: ${heard(reply)}`); return; }
  // rejected: the plan's next step, a session that starts from the proposal
  const proposal = state.proposal;
  resetImage();
  await showTask(reply.follow_up.task, reply.follow_up.image);
  if (!state.proposal) state.proposal = proposal;
  $("reason").textContent = `no: ${heard(reply)}; ${reply.follow_up.task.reason}`;
  draw();
});

function click(event, positive) {
  const p = toImage(event);
  if (state.mode !== "segment" || !state.session) {
    if (state.mode === "verify") refuse("answer the proposal with Y (yes) or N (no) first");
    return;
  }
  act(async () => {
    const t0 = performance.now();
    const reply = await Api.post(sessionPath("clicks"), { x: p.x, y: p.y, positive, t_ms: state.recorder.tMs() });
    state.clicks.push({ x: p.x, y: p.y, positive }); state.redo = [];
    state.recorder.click(p.x, p.y, positive, reply.click.index, 1 - reply.iou_with_previous, performance.now() - t0);
    applyUpdate(reply);
  });
}

// A box around the object as its first input (B arms the tool, or Alt+drag): drawn while dragging, sent on release.
function setBoxTool(on) {
  state.boxTool = on;
  document.body.dataset.tool = on ? "box" : "";
  $("box-tool").setAttribute("aria-pressed", on ? "true" : "false");
}
function toggleBoxTool() {
  if (state.mode !== "segment" || !state.session) return;
  if (!state.boxTool && state.clicks.length) {
    refuse("a box is the first input of an object: undo the clicks, or press N for another object"); return;
  }
  setBoxTool(!state.boxTool);
  $("reason").textContent = state.boxTool ? "drag a box around the object" : $("reason").textContent;
}
function boxEnd(event) {
  if (!state.drag) return;
  dragMove(event);
  const d = state.drag; state.drag = null; setBoxTool(false);
  const canvas = $("canvas");
  // whole pixels, inside the image: [x0, x1) x [y0, y1)
  const x0 = Math.max(0, Math.floor(d.box[0])), y0 = Math.max(0, Math.floor(d.box[1]));
  const x1 = Math.min(canvas.width, Math.ceil(d.box[0] + d.box[2])), y1 = Math.min(canvas.height, Math.ceil(d.box[1] + d.box[3]));
  if (x1 - x0 < 3 || y1 - y0 < 3) { refuse("drag a box around the object"); draw(); return; }
  const box = [x0, y0, x1 - x0, y1 - y0];
  act(async () => {
    if (state.clicks.length) { refuse("a box is the first input of an object: undo the clicks first"); draw(); return; }
    const t0 = performance.now();
    const reply = await Api.post(sessionPath("box"), { x: box[0], y: box[1], width: box[2], height: box[3],
      t_ms: state.recorder.tMs() });
    state.clicks.push({ x: reply.click.x, y: reply.click.y, positive: true, box }); state.redo = [];
    // byproducts: the step as the click it is in the session (its centre), and the box itself
    state.recorder.click(reply.click.x, reply.click.y, true, reply.click.index, 1 - reply.iou_with_previous,
      performance.now() - t0);
    state.recorder.box(box[0], box[1], box[2], box[3], reply.click.index);
    document.body.dataset.lastBox = JSON.stringify(reply.box);
    applyUpdate(reply);
  });
}

const undo = () => act(async () => {
  if (state.mode === "label_region") {
    if (state.boxes.length) { state.boxes.pop(); updateInfo(); draw(); } else refuse("no object to remove");
    return;
  }
  if (state.mode !== "segment") return;
  if (!state.clicks.length) { refuse("nothing to undo"); return; }
  const reply = await Api.post(sessionPath("undo"));
  state.redo.push(state.clicks.pop());
  state.recorder.undo(reply.click.index);
  if (!state.clicks.length) { state.overlay = null; updateInfo(); draw(); } else applyUpdate(reply);
});
const redo = () => act(async () => {
  if (state.mode !== "segment") return;
  if (!state.redo.length) { refuse("nothing to redo"); return; }
  const reply = await Api.post(sessionPath("redo"));
  state.redo.pop();
  const box = reply.box ? [reply.box.x, reply.box.y, reply.box.width, reply.box.height] : undefined;
  state.clicks.push({ x: reply.click.x, y: reply.click.y, positive: reply.click.positive, box });
  state.recorder.redo(reply.click.index); applyUpdate(reply);
});

async function finishSession(outcome) {
  const label = $("label").value;
  const reply = await Api.post(sessionPath("finish"), { outcome, label });
  await state.recorder.end(outcome, reply.session.mask, label, reply.session.clicks.length);
  document.body.dataset.lastSession = reply.session.session_id;
  state.session = null;
  return reply;
}

// N: keep this object (submitted with its label) and start another on the same image.
const nextObject = () => act(async () => {
  if (state.mode !== "segment") return;
  if (!state.clicks.length) { refuse("click on an object before keeping it"); return; }
  const reply = await finishSession("submitted");
  state.objects.push({ overlay: state.overlay, label: reply.session.label, session_id: reply.session.session_id });
  state.proposal = null;
  await startSession(null);
  $("reason").textContent = `object ${state.objects.length} kept (${reply.session.label}); click on the next one`;
  draw();
});

// Enter: this question is done.
const done = () => act(async () => {
  if (state.mode === "verify") { refuse("answer the proposal with Y (yes) or N (no)"); return; }
  if (state.mode === "skip") {
    const reply = await answer({ skip: { reason: "nothing to ask" } });
    after(`skip: ${heard(reply)}`); return;
  }
  if (state.mode === "label_region") {
    const reply = await answer({ labels: state.boxes.map((b) => ({ label: b.label, box: b.box })) });
    after(`${state.boxes.length} object${state.boxes.length === 1 ? "" : "s"} labelled: ${heard(reply)}`); return;
  }
  if (state.mode !== "segment" || !state.session) return;
  if (!state.clicks.length && !state.objects.length) { refuse("click on the object first (or press S to skip)"); return; }
  const outcome = state.clicks.length ? "submitted" : "abandoned";  // an empty extra object is no answer
  const reply = await finishSession(outcome);
  if (state.correcting) { await recordCorrection(reply.session.session_id); return; }
  const kept = state.objects.length + (outcome === "submitted" ? 1 : 0);
  after(`submitted: ${kept} object${kept > 1 ? "s" : ""}, last session ${reply.session.session_id} ` +
    `(${reply.session.clicks.length} clicks, ${reply.seconds.toFixed(1)} s)`);
});

const skip = () => act(async () => {
  if (state.mode === "segment" && state.session) {
    const reply = await finishSession(state.objects.length ? "abandoned" : "skipped");
    after(`skipped: session ${reply.session.session_id}`);
  } else if (["verify", "label_region", "skip"].includes(state.mode)) {
    const reply = await answer({ skip: { reason: "skipped by the annotator" } });
    after(`skipped: ${heard(reply)}`);
  }
});

// Label the objects in a region: drag a box inside the region; each box takes the current label.
function dragStart(event) {
  const p = toImage(event);
  if (!inRegion(p)) { refuse("draw inside the highlighted region"); return; }
  state.drag = { start: p, box: [p.x, p.y, 0, 0], label: $("label").value };
}
function dragMove(event) {
  if (!state.drag) return;
  const p = toImage(event), s = state.drag.start, [rx, ry, rw, rh] = state.region ? state.region.box
    : [0, 0, $("canvas").width, $("canvas").height];
  const x = Math.max(rx, Math.min(rx + rw, p.x)), y = Math.max(ry, Math.min(ry + rh, p.y));
  state.drag.box = [Math.min(s.x, x), Math.min(s.y, y), Math.abs(x - s.x), Math.abs(y - s.y)];
  draw();
}
function dragEnd(event) {
  if (!state.drag) return;
  dragMove(event);
  const d = state.drag; state.drag = null;
  if (d.box[2] < 3 || d.box[3] < 3) { refuse("drag a box around the object"); draw(); return; }
  if (!overlapsRegion(d.box)) { refuse("the box must cover part of the highlighted region"); draw(); return; }
  state.boxes.push({ label: d.label, box: d.box.map((v) => Math.round(v * 10) / 10) });
  updateInfo(); draw();
}

// A reviewer's correction: the stored mask is the session's initial mask; Enter records the verdict.
async function openCorrection(sessionId) {
  setMode("idle", "");
  resetImage();
  const stored = await Api.get(`${base()}/annotations/${encodeURIComponent(sessionId)}`);
  if (!stored.image) throw new Error(`the image or video of session ${sessionId} was deleted`);
  const image = stored.image;  // an image or a video frame
  state.correcting = sessionId;
  await showTask({ task_id: "", question_type: "CORRECT", prompt: "Correct the stored mask with clicks; Enter records the correction.",
    policy: "review", reason: `correcting session ${sessionId} (${stored.label})`, proposal: { mask: stored.mask },
    region: { kind: "whole_image" }, proposed_label: stored.label }, image);
  setMode("segment", "CORRECT");
  await startSession(null, { initial_mask: stored.mask });
  draw();
}

async function recordCorrection(correctedSession) {
  const project = encodeURIComponent(state.project.project_id);
  const reply = await Api.post(`${base()}/review/${encodeURIComponent(state.correcting)}`,
    { verdict: "corrected", corrected_session_id: correctedSession });
  document.body.dataset.lastVerdict = reply.verdict;
  $("reason").textContent = `correction recorded (true IoU ${reply.true_iou === null ? "?" : reply.true_iou.toFixed(3)})`;
  state.correcting = null; setMode("idle", "");
  setTimeout(() => { location.href = `/review?project=${project}`; }, 800);
}

function toggleHelp(show) {
  $("help").hidden = show === undefined ? !$("help").hidden : !show;
}

function bindInput() {
  const canvas = $("canvas");
  canvas.addEventListener("mousedown", (e) => {
    if (state.busy) return;
    if (state.mode === "label_region") { if (e.button === 0) dragStart(e); return; }
    if (state.mode === "segment" && e.button === 0 && (state.boxTool || e.altKey)) {
      if (state.clicks.length) { refuse("a box is the first input of an object: undo the clicks, or press N for another object"); return; }
      dragStart(e); if (state.drag) state.drag.label = ""; return;
    }
    if (e.button === 0) click(e, !e.shiftKey);
    else if (e.button === 2) click(e, false);
  });
  canvas.addEventListener("mouseup", (e) => {
    if (state.mode === "label_region") dragEnd(e);
    else if (state.mode === "segment" && state.drag) boxEnd(e);
  });
  canvas.addEventListener("contextmenu", (e) => e.preventDefault());
  canvas.addEventListener("mousemove", (e) => {
    if (state.mode === "label_region") { dragMove(e); return; }
    if (state.drag) dragMove(e);
    if (state.session) { const p = toImage(e); state.recorder.mouse(p.x, p.y); }
  });
  $("undo").onclick = undo; $("redo").onclick = redo; $("box-tool").onclick = toggleBoxTool; $("remove-box").onclick = undo;
  $("next-object").onclick = nextObject; $("yes").onclick = () => verify(true); $("no").onclick = () => verify(false);
  $("submit").onclick = done; $("skip").onclick = skip; $("help-button").onclick = () => toggleHelp();
  $("label").onchange = () => state.recorder.category($("label").selectedIndex, $("label").value, false);
  document.addEventListener("keydown", (e) => {
    if (e.target.tagName === "INPUT" || e.target.tagName === "SELECT" || $("work").hidden) return;
    const key = e.key.toLowerCase();
    let action = "";
    if (e.key === "?") { action = "help"; toggleHelp(); }
    else if (e.key === "Escape") { action = "help"; toggleHelp(false); if (state.boxTool) { setBoxTool(false); state.drag = null; draw(); } }
    else if (!state.question) return;
    else if (state.mode === "verify" && key === "y" && !e.ctrlKey) { action = "yes"; verify(true); }
    else if (state.mode === "verify" && key === "n") { action = "no"; verify(false); }
    else if ((key === "z" && e.shiftKey) || key === "y") { action = "redo"; redo(); }
    else if (key === "z" || e.key === "Backspace") { action = "undo"; undo(); }
    else if (key === "b" && state.mode === "segment") { action = "box_tool"; toggleBoxTool(); }
    else if (key === "n") { action = "next_object"; nextObject(); }
    else if (e.key === "Enter") { action = "submit"; done(); }
    else if (key === "s" && !e.ctrlKey) { action = "skip"; skip(); }
    else if (/^[1-9]$/.test(e.key) && Number(e.key) <= $("label").options.length) {
      action = "label"; $("label").selectedIndex = Number(e.key) - 1;
      state.recorder.category($("label").selectedIndex, $("label").value, true);
    }
    if (action) { e.preventDefault(); }
    if (state.session) state.recorder.key(e, action);
  });
  window.addEventListener("beforeunload", () => state.recorder && state.recorder.flush());
}

boot().catch(showError);

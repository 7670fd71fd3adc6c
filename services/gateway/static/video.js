// The video page: open a project's video, annotate frames with the image annotator's click session (left click
// positive, right or Shift negative, Z undo, Y redo, Enter stores the frame's mask as a human sample), propagate
// the stored frames to every frame (P; the operation's progress shows), scrub the propagated masks with the
// slider (arrows), correct a frame (clicks start from its propagated mask) and propagate again. The frames the
// video service's propagation suggests for the next round are marked ★ on the timeline; the frames the selection
// service would have annotated next (its active-learning pick, GET .../selection) are marked ◆; J / K jump to
// either. Selection's pick is asked again when a video opens and after a frame is stored (R asks at will).
// User text (names, labels, messages) reaches the page as text only (textContent, fillSelect).
"use strict";
const COLORS = { session: [30, 144, 255, 120], human: [46, 204, 64, 130], propagated: [255, 133, 27, 120] };
const POLL_MS = 500, SUGGEST = 3, PICK = 5, PICK_AGAIN_MS = 3000;  // PICK: frames asked of selection
const state = { whoami: null, projects: [], project: null, video: null, frame: 0, bitmaps: new Map(),
  human: new Map(), propagated: new Map(), suggested: [], picked: [], operation: null, session: null, clicks: [],
  redo: [], overlay: null, initial: null, busy: false, polling: 0, picks: 0 };

function say(message) { $("reason").textContent = message; }

const base = () => `/v1/projects/${encodeURIComponent(state.project.project_id)}`;
const videoBase = () => `${base()}/videos/${encodeURIComponent(state.video.video_id)}`;

async function boot() {
  state.whoami = await signIn();
  if (!state.whoami) return;
  state.projects = await Api.get("/v1/projects");
  fillSelect($("project"), state.projects.map((p) => ({ value: p.project_id, text: p.name })));
  const params = new URLSearchParams(location.search);
  const wanted = params.get("project") || localStorage.getItem("annot.project");
  if (wanted && state.projects.some((p) => p.project_id === wanted)) $("project").value = wanted;
  $("project").onchange = () => guarded(() => loadProject(""));
  $("video").onchange = () => guarded(() => openVideo($("video").value));
  bindInput();
  await loadProject(params.get("video"));
}

// Switching project or video drops the frame's clicks: refused while a session is open.
async function guarded(work) {
  if (state.session) {
    refuse("store the frame (Enter) or discard its clicks (S) first");
    $("project").value = state.project.project_id; if (state.video) $("video").value = state.video.video_id;
    return;
  }
  try { await work(); } catch (err) { showError(err); }
}

async function loadProject(videoId) {
  state.project = state.projects.find((p) => p.project_id === $("project").value) || null;
  if (!state.project) { $("prompt").textContent = "No project is visible to this key."; return; }
  localStorage.setItem("annot.project", state.project.project_id);
  fillSelect($("label"), state.project.labels.map((l, i) => ({ value: l, text: `${i + 1}. ${l}` })));
  const { videos } = await Api.get(`${base()}/videos`);
  fillSelect($("video"), videos.map((v) => ({ value: v.video_id, text: videoText(v) })));
  if (!videos.length) {
    state.video = null; draw(); renderTimeline();
    $("prompt").textContent = "This project has no video yet (an admin uploads one: POST /v1/projects/{id}/videos).";
    return;
  }
  if (videoId && videos.some((v) => v.video_id === videoId)) $("video").value = videoId;
  await openVideo($("video").value);
}

const videoText = (v) => `${v.name} (${v.frames} frames, ${v.masked_frames.length} annotated)`;

async function openVideo(videoId) {
  showError(null);
  clearInterval(state.polling);
  state.video = await Api.get(`${base()}/videos/${encodeURIComponent(videoId)}`);
  state.bitmaps = new Map(); state.human = new Map(); state.propagated = new Map(); state.suggested = [];
  state.picked = []; state.operation = null; state.frame = 0;
  document.body.dataset.videoId = state.video.video_id;
  $("prompt").textContent = `${state.video.name}: click on the object in a few frames (Enter stores each), ` +
    "then propagate (P)";
  const canvas = $("canvas");
  canvas.width = state.video.width; canvas.height = state.video.height;
  $("slider").max = String(state.video.frames - 1); $("slider").value = "0";
  const { masks } = await Api.get(`${videoBase()}/masks`);
  for (const m of masks) setHuman(m.frame_index, m);
  showPropagation(null);
  const last = state.video.propagations[state.video.propagations.length - 1];
  if (last) follow(last);  // the latest propagation: its progress, then its masks
  $("selection-info").textContent = "asking selection for its pick…";
  askSelection();
  await showFrame(0);
}

// Selection's pick among this video's frames (◆). Its failure (selection unreachable, or not letting this key
// ask) is said beside the legend and leaves the rest of the page as it is; a later answer replaces an earlier one.
async function askSelection() {
  if (!state.video) return;
  const videoId = state.video.video_id, asked = ++state.picks, info = $("selection-info");
  info.dataset.state = "asking";
  let pick;
  try {
    pick = await Api.get(`${videoBase()}/selection?count=${PICK}`);
  } catch (err) {
    if (asked !== state.picks || !state.video || state.video.video_id !== videoId) return;
    state.picked = [];
    info.dataset.state = "error"; info.dataset.picked = "";
    info.textContent = `selection's pick unavailable: ${err.message}`;
    renderTimeline(); updateInfo();
    return;
  }
  if (asked !== state.picks || !state.video || state.video.video_id !== videoId) return;
  state.picked = pick.frames.map((f) => f.frame_index);
  info.dataset.state = "ok"; info.dataset.picked = state.picked.join(",");
  info.dataset.strategy = pick.strategy; info.dataset.scored = String(pick.scored);
  const how = pick.scored ? `${pick.strategy} scores of ${pick.model_versions.join(", ") || "an unnamed model"}`
    : "uniform draw: no task model has scored the pool yet";
  info.textContent = state.picked.length
    ? `selection's pick: ${state.picked.map((t) => `◆ ${t + 1}`).join(", ")} (${how})`
    : "selection's pick: none (no frame of this video is left unlabelled, or none has a task model's score)";
  renderTimeline(); updateInfo();
}

function setHuman(index, mask) {
  state.human.set(index, { mask, overlay: Rle.overlay(mask, COLORS.human).canvas });
}

async function frameBitmap(index) {
  if (!state.bitmaps.has(index)) {
    state.bitmaps.set(index, Api.imageBitmap(state.video.frame_url.replace("{index}", String(index))));
  }
  try { return await state.bitmaps.get(index); } catch (err) { state.bitmaps.delete(index); throw err; }
}

async function showFrame(index) {
  if (!state.video) return;
  index = Math.max(0, Math.min(state.video.frames - 1, index));
  if (state.session && index !== state.frame) {
    refuse("store this frame (Enter) or discard its clicks (S) before moving to another frame");
    $("slider").value = String(state.frame);
    return;
  }
  state.frame = index; $("slider").value = String(index);
  const bitmap = await frameBitmap(index);
  if (state.frame !== index) return;  // scrubbed on meanwhile
  state.bitmap = bitmap;
  draw(); renderTimeline(); updateInfo();
  frameBitmap(Math.min(state.video.frames - 1, index + 1)).catch(() => {});  // the next one, ahead of the slider
}

// The overlay a person sees: the open session's mask, else the frame's human mask, else its propagated one.
function shownOverlay() {
  if (state.session) {
    if (state.overlay) return ["session", state.overlay];
    if (state.initial) return ["initial", state.initial];
    return ["none", null];
  }
  if (state.human.has(state.frame)) return ["human", state.human.get(state.frame).overlay];
  if (state.propagated.has(state.frame)) return ["propagated", state.propagated.get(state.frame).overlay];
  return ["none", null];
}

function draw() {
  const canvas = $("canvas"), ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (!state.video || !state.bitmap) return;
  ctx.drawImage(state.bitmap, 0, 0);
  const [kind, overlay] = shownOverlay();
  if (overlay) ctx.drawImage(overlay, 0, 0);
  canvas.dataset.frame = state.frame; canvas.dataset.overlay = kind;
  const r = Math.max(4, Math.round(Math.max(canvas.width, canvas.height) / 120));
  for (const c of state.clicks) {
    ctx.beginPath(); ctx.arc(c.x, c.y, r, 0, 2 * Math.PI);
    ctx.fillStyle = c.positive ? "#2ecc40" : "#ff4136"; ctx.fill();
    ctx.lineWidth = Math.max(1, r / 3); ctx.strokeStyle = "white"; ctx.stroke();
  }
}

function renderTimeline() {
  const timeline = $("timeline");
  if (!state.video) { timeline.replaceChildren(); return; }
  const cells = [];
  for (let t = 0; t < state.video.frames; t++) {
    const cell = document.createElement("button");
    cell.className = "cell"; cell.dataset.frame = t; cell.tabIndex = -1;
    const kinds = [];
    if (state.human.has(t)) kinds.push("human");
    else if (state.propagated.has(t)) kinds.push("propagated");
    const marks = [];
    if (state.suggested.includes(t)) { kinds.push("suggested"); marks.push("★"); }
    if (state.picked.includes(t)) { kinds.push("picked"); marks.push("◆"); }
    cell.textContent = marks.join("");
    if (t === state.frame) kinds.push("current");
    cell.classList.add(...kinds);
    cell.title = `frame ${t}` + (kinds.length ? `: ${kinds.join(", ")}` : "");
    cell.onclick = () => showFrame(t).catch(showError);
    cells.push(cell);
  }
  timeline.replaceChildren(...cells);
}

function updateInfo(area, clicks = 0) {
  const t = state.frame, [kind] = shownOverlay();
  const what = { session: "your clicks", initial: "correcting the propagated mask", human: "human mask",
    propagated: "propagated mask", none: "no mask" }[kind];
  const conf = kind === "propagated" ? ` (confidence ${state.propagated.get(t).confidence.toFixed(3)})` : "";
  const star = (state.suggested.includes(t) ? " · ★ suggested by the propagation" : "") +
    (state.picked.includes(t) ? ` · ◆ selection's pick #${state.picked.indexOf(t) + 1}` : "");
  $("frame-info").textContent = state.video ? `frame ${t + 1} of ${state.video.frames} · ${what}${conf}${star}` : "";
  $("frame-type").textContent = state.session ? "ANNOTATING" : kind.toUpperCase();
  const info = $("mask-info");
  info.dataset.clicks = clicks; info.dataset.area = area || 0;
  info.textContent = clicks ? `mask: ${area} px after ${clicks} click${clicks > 1 ? "s" : ""}` : state.session
    ? "click on the object" : `${state.human.size} frame${state.human.size === 1 ? "" : "s"} annotated`;
}

async function act(work) {  // one request at a time; input is ignored while busy
  if (state.busy || !state.video) return;
  state.busy = true; document.body.classList.add("busy"); showError(null);
  try { await work(); } catch (err) { showError(err); } finally { state.busy = false; document.body.classList.remove("busy"); }
}

function toImage(event) {  // CSS pixels of the canvas -> frame pixels
  const rect = $("canvas").getBoundingClientRect();
  return { x: (event.clientX - rect.left) * ($("canvas").width / rect.width),
           y: (event.clientY - rect.top) * ($("canvas").height / rect.height) };
}

// The first click on a frame opens its click session: on a frame with only a propagated mask, the session
// starts from that mask (a correction); on a frame with a human mask, the gateway starts from the stored one.
async function openSession() {
  const body = { label: $("label").value };
  const propagated = state.propagated.get(state.frame);
  if (propagated && !state.human.has(state.frame)) body.initial_mask = propagated.mask;
  state.session = await Api.post(`${videoBase()}/frames/${state.frame}/sessions`, body);
  const start = state.human.get(state.frame) || propagated;
  state.initial = start ? Rle.overlay(start.mask, COLORS.session).canvas : null;
  state.clicks = []; state.redo = []; state.overlay = null; state.shownAt = performance.now();
  $("canvas").dataset.sessionId = state.session.session_id;
}

const sessionPath = (suffix) => `${base()}/sessions/${encodeURIComponent(state.session.session_id)}/${suffix}`;

function applyUpdate(reply) {
  const { canvas, area } = Rle.overlay(reply.mask, COLORS.session);
  state.overlay = canvas;
  $("latency").textContent = `model ${reply.model_latency_ms.toFixed(0)} ms · service ${reply.service_latency_ms.toFixed(0)} ms`;
  draw(); updateInfo(area, reply.click_count);
}

function click(event, positive) {
  const p = toImage(event);
  act(async () => {
    if (!state.session) await openSession();
    const reply = await Api.post(sessionPath("clicks"),
      { x: p.x, y: p.y, positive, t_ms: Math.round(performance.now() - state.shownAt) });
    state.clicks.push({ x: p.x, y: p.y, positive }); state.redo = [];
    applyUpdate(reply);
  });
}

const undo = () => act(async () => {
  if (!state.session || !state.clicks.length) { refuse("nothing to undo"); return; }
  const reply = await Api.post(sessionPath("undo"));
  state.redo.push(state.clicks.pop());
  if (!state.clicks.length) { state.overlay = null; draw(); updateInfo(); } else applyUpdate(reply);
});

const redo = () => act(async () => {
  if (!state.session || !state.redo.length) { refuse("nothing to redo"); return; }
  const reply = await Api.post(sessionPath("redo"));
  state.clicks.push(state.redo.pop());
  applyUpdate(reply);
});

async function finishSession(outcome) {
  const reply = await Api.post(`${videoBase()}/sessions/${encodeURIComponent(state.session.session_id)}/finish`,
    { outcome, label: $("label").value });
  state.session = null; state.clicks = []; state.redo = []; state.overlay = null; state.initial = null;
  delete $("canvas").dataset.sessionId;
  document.body.dataset.lastSession = reply.session.session_id;
  return reply;
}

const store = () => act(async () => {
  if (!state.session) { refuse("click on the object in this frame first"); return; }
  if (!state.clicks.length && !state.initial) { refuse("click on the object in this frame first (S discards)"); return; }
  const reply = await finishSession("submitted");
  setHuman(reply.frame_index, reply.session.mask);
  state.video.masked_frames = reply.masked_frames;
  const option = [...$("video").options].find((o) => o.value === state.video.video_id);
  if (option) option.textContent = videoText(state.video);
  say(`frame ${reply.frame_index + 1} stored as a human sample (${reply.session.clicks.length} clicks, ` +
    `${reply.stored.area_px} px); ${reply.masked_frames.length} frame${reply.masked_frames.length > 1 ? "s" : ""} ` +
    "annotated: P propagates them");
  draw(); renderTimeline(); updateInfo();
  // selection hears of the stored frame through the loop's event: asked now, and again once it has
  askSelection();
  const videoId = state.video.video_id;
  setTimeout(() => { if (state.video && state.video.video_id === videoId) askSelection(); }, PICK_AGAIN_MS);
});

const discard = () => act(async () => {
  if (!state.session) { refuse("no clicks on this frame to discard"); return; }
  await finishSession("skipped");
  say(`frame ${state.frame + 1}: clicks discarded`);
  draw(); updateInfo();
});

const propagate = () => act(async () => {
  if (state.session) { refuse("store this frame (Enter) or discard its clicks (S) before propagating"); return; }
  if (state.operation && ["pending", "running"].includes(state.operation.state)) {
    refuse("a propagation is running; wait for it to finish"); return;
  }
  const op = await Api.post(`${videoBase()}/propagation`,
    { method: $("method").value, label: $("label").value, suggest_count: SUGGEST });
  state.video.propagations.push(op.operation_id);
  say(`propagating ${state.human.size} human frame${state.human.size > 1 ? "s" : ""} to every frame…`);
  follow(op.operation_id);
});

function showPropagation(p) {
  const info = $("propagation-info"), bar = $("propagation-progress");
  info.dataset.state = p ? p.state : ""; info.dataset.operation = p ? p.operation_id : "";
  info.dataset.framesDone = p ? p.frames_done : 0;
  info.dataset.suggested = state.suggested.join(",");
  if (!p) { bar.hidden = true; $("propagation-text").textContent = "not propagated yet"; return; }
  bar.hidden = false; bar.max = p.frames_total || 1; bar.value = p.frames_done;
  const miou = p.estimated_miou >= 0 ? ` · estimated mIoU ${p.estimated_miou.toFixed(3)}` : "";
  const error = p.error ? `: ${p.error}` : "";
  $("propagation-text").textContent = `propagation ${p.state}: ${p.frames_done} of ${p.frames_total} frames` +
    `${miou}${error}`;
}

// Polls the operation until it ends; then its masks go under the slider and its suggestions on the timeline.
function follow(operationId) {
  clearInterval(state.polling);
  const videoId = state.video.video_id;
  let inFlight = false;
  const poll = async () => {
    if (inFlight) return;
    inFlight = true;
    try {
      const p = await Api.get(`${videoBase()}/propagation/${encodeURIComponent(operationId)}`);
      if (!state.video || state.video.video_id !== videoId) return;
      state.operation = p;
      if (p.state === "succeeded") {
        clearInterval(state.polling);
        await loadPropagated(operationId, p);
      } else if (p.state === "failed" || p.state === "cancelled") {
        clearInterval(state.polling);
        $("error").textContent = `The propagation ${p.state}: ${p.error || p.message || "no reason given"}`;
      }
      showPropagation(p);
    } catch (err) {
      clearInterval(state.polling);
      if (err.status === 404) {  // operations expire in the video service; the stored frames stay
        $("propagation-text").textContent = "the latest propagation is no longer kept: propagate again (P)";
      } else showError(err);
    } finally { inFlight = false; }
  };
  state.polling = setInterval(poll, POLL_MS);
  poll();
}

async function loadPropagated(operationId, p) {
  const { frames } = await Api.get(`${videoBase()}/propagation/${encodeURIComponent(operationId)}/masks`);
  state.propagated = new Map(frames.map((f) => [f.frame_index,
    { mask: { size: f.size, counts: f.counts }, confidence: f.confidence, human: f.human_annotated,
      overlay: Rle.overlay({ size: f.size, counts: f.counts }, COLORS.propagated).canvas }]));
  state.suggested = [...new Set(p.suggested_samples.map((s) => s.frame_index).filter((t) => t >= 0))];
  const marks = state.suggested.length ? `; suggested next: ${state.suggested.map((t) => `★ ${t + 1}`).join(", ")} (J)`
    : "";
  say(`propagated to ${frames.length} frames: scrub with the slider (← →), click a frame to correct it${marks}`);
  draw(); renderTimeline(); updateInfo();
}

function jumpSuggested(step) {  // through both marks: the propagation's ★ and selection's ◆
  const marked = new Set([...state.suggested, ...state.picked]);
  if (!marked.size) { refuse("no suggested frame: propagate (P), or ask selection again (R)"); return; }
  const sorted = [...marked].sort((a, b) => a - b);
  const next = step > 0 ? sorted.find((t) => t > state.frame) ?? sorted[0]
    : [...sorted].reverse().find((t) => t < state.frame) ?? sorted[sorted.length - 1];
  showFrame(next).catch(showError);
}

function toggleHelp(show) {
  $("help").hidden = show === undefined ? !$("help").hidden : !show;
}

function bindInput() {
  const canvas = $("canvas");
  canvas.addEventListener("mousedown", (e) => {
    if (state.busy || !state.video) return;
    if (e.button === 0) click(e, !e.shiftKey);
    else if (e.button === 2) click(e, false);
  });
  canvas.addEventListener("contextmenu", (e) => e.preventDefault());
  $("slider").addEventListener("input", () => showFrame(Number($("slider").value)).catch(showError));
  $("prev").onclick = () => showFrame(state.frame - 1).catch(showError);
  $("next").onclick = () => showFrame(state.frame + 1).catch(showError);
  $("undo").onclick = undo; $("redo").onclick = redo; $("submit").onclick = store; $("skip").onclick = discard;
  $("propagate").onclick = propagate; $("help-button").onclick = () => toggleHelp();
  document.addEventListener("keydown", (e) => {
    if (e.target.tagName === "INPUT" && e.target.type !== "range") return;
    if (e.target.tagName === "SELECT" || $("work").hidden) return;
    const key = e.key.toLowerCase();
    let handled = true;
    if (e.key === "?") toggleHelp();
    else if (e.key === "Escape") toggleHelp(false);
    else if (!state.video) handled = false;
    else if (e.key === "ArrowLeft" || e.key === ",") showFrame(state.frame - 1).catch(showError);
    else if (e.key === "ArrowRight" || e.key === ".") showFrame(state.frame + 1).catch(showError);
    else if (e.key === "Home") showFrame(0).catch(showError);
    else if (e.key === "End") showFrame(state.video.frames - 1).catch(showError);
    else if (key === "j") jumpSuggested(1);
    else if (key === "k") jumpSuggested(-1);
    else if (key === "r" && !e.ctrlKey && !e.metaKey) askSelection();
    else if ((key === "z" && e.shiftKey) || key === "y") redo();
    else if (key === "z" || e.key === "Backspace") undo();
    else if (e.key === "Enter") store();
    else if (key === "s" && !e.ctrlKey) discard();
    else if (key === "p" && !e.ctrlKey) propagate();
    else if (/^[1-9]$/.test(e.key) && Number(e.key) <= $("label").options.length) {
      $("label").selectedIndex = Number(e.key) - 1;
    } else handled = false;
    if (handled) e.preventDefault();
  });
}

boot().catch(showError);

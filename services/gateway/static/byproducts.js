// Byproduct recorder: every trace of a session (start, sampled mouse trajectory, clicks with their
// response times and mask change, box prompts, undo/redo, key presses, label changes, submit/skip, end) as
// annotation.v1.Event objects in proto JSON, with a client-made event_id and a per-session seq
// (session_start is seq 1). Coordinates are normalised to the image ([0, 1]).
// Batches go to the gateway's byproducts ingest route (POST /v1/byproducts/events, found through
// GET /v1/config); a gateway without one keeps them in this tab and the status line says so.
"use strict";
class Recorder {
  constructor(ingestPath, sampleMs = 50, flushMs = 2000) {
    this.ingestPath = ingestPath;  // e.g. "/v1/projects/{project_id}/byproducts/events", or null
    this.sampleMs = sampleMs; this.flushMs = flushMs;
    this.pending = []; this.kept = []; this.sent = 0; this.failed = 0;
    this.session = null; this.trajectory = []; this.lastSample = 0;
    this.timer = setInterval(() => this.flush(), flushMs);
  }

  start(projectId, sessionId, taskId, image, annotatorId) {
    this.session = { projectId, sessionId, seq: 0, t0: performance.now(), width: image.width, height: image.height };
    this.trajectory = [];
    this.emit("session_start", { session: {
      session_id: sessionId, annotator_id: annotatorId, task_id: taskId, project_id: projectId,
      image: { image_id: image.image_id, width: image.width, height: image.height },
      question_type: "QUESTION_TYPE_SEGMENT",
      client: { user_agent: navigator.userAgent, app_version: "web-annotator/1", screen_width: screen.width,
        screen_height: screen.height, device_pixel_ratio: devicePixelRatio, pointer_type: "mouse",
        locale: navigator.language, time_zone: Intl.DateTimeFormat().resolvedOptions().timeZone },
      start_time: new Date().toISOString() } });
  }

  tMs() { return this.session ? Math.max(0, Math.round(performance.now() - this.session.t0)) : 0; }
  norm(x, y) { return { x: Math.min(1, Math.max(0, x / this.session.width)), y: Math.min(1, Math.max(0, y / this.session.height)) }; }

  emit(kind, payload, tMs = this.tMs()) {
    if (!this.session) return;
    const s = this.session;
    s.seq += 1;
    this.pending.push({ project_id: s.projectId, session_id: s.sessionId, event_id: `${s.sessionId}-${s.seq}`,
      seq: s.seq, t_ms: tMs, time: new Date(performance.timeOrigin + s.t0 + tMs).toISOString(), [kind]: payload });
  }

  mouse(x, y) {  // image pixels; sampled at most every sampleMs, sent as trajectory chunks
    if (!this.session) return;
    const t = this.tMs();
    if (t - this.lastSample < this.sampleMs) return;
    this.lastSample = t;
    this.trajectory.push({ ...this.norm(x, y), t_ms: t });
    if (this.trajectory.length >= 40) this.flushTrajectory();
  }

  flushTrajectory() {
    if (!this.trajectory.length) return;
    const points = this.trajectory; this.trajectory = [];
    this.emit("mouse", { points, sample_interval_ms: this.sampleMs }, points[points.length - 1].t_ms);
  }

  click(x, y, positive, index, iouChange, responseMs) {
    this.flushTrajectory();
    this.emit("click", { ...this.norm(x, y), positive, click_index: index, iou_change: iouChange,
      response_ms: Math.round(responseMs) });
  }
  box(x, y, width, height, index) {  // image pixels, as Segmentation.AddBox; index = the click it became
    this.flushTrajectory();
    const a = this.norm(x, y), b = this.norm(x + width, y + height);
    this.emit("box", { x0: a.x, y0: a.y, x1: b.x, y1: b.y, click_index: index });
  }
  undo(index) { this.flushTrajectory(); this.emit("undo", { click_index: index }); }
  redo(index) { this.flushTrajectory(); this.emit("redo", { click_index: index }); }
  key(event, action) {
    this.emit("key_press", { key: event.key, code: event.code, shift: event.shiftKey, ctrl: event.ctrlKey,
      alt: event.altKey, meta: event.metaKey, action });
  }
  category(index, name, usingKeyboard) {
    this.emit("category_change", { index, name, t_ms: this.tMs(), using_keyboard: usingKeyboard });
  }

  async end(outcome, mask, label, clickCount) {
    this.flushTrajectory();
    if (outcome === "submitted") this.emit("submit", { mask, labels: label ? [label] : [], click_count: clickCount });
    else this.emit("skip", { reason: "skipped by the annotator" });
    this.emit("session_end", { outcome: outcome === "submitted" ? "SESSION_OUTCOME_SUBMITTED" : "SESSION_OUTCOME_SKIPPED" });
    this.session = null;
    await this.flush();
  }

  async flush() {
    if (!this.pending.length) return;
    const batch = this.pending; this.pending = [];
    if (!this.ingestPath) { this.kept.push(...batch); this.report(); return; }
    const projectId = batch[0].project_id;
    const path = this.ingestPath.replace("{project_id}", encodeURIComponent(projectId));
    try {
      await Api.post(path, { project_id: projectId, events: batch });
      this.sent += batch.length;
    } catch (err) {
      if (err.status >= 500 || err.status === 429 || !err.status) this.pending.unshift(...batch);  // retried: ids dedupe
      else { this.failed += batch.length; console.warn("byproducts refused", err); }
    }
    this.report();
  }

  report() {
    const el = document.getElementById("byproducts-info");
    if (!el) return;
    el.dataset.sent = this.sent; el.dataset.kept = this.kept.length;
    el.textContent = this.ingestPath
      ? `byproducts: ${this.sent} events sent${this.failed ? `, ${this.failed} refused` : ""}`
      : `byproducts: ${this.kept.length} events kept in this tab (the gateway has no byproducts ingest route yet)`;
  }
}

// Reviewer view: the quality service's review queue (worst first) with each mask over its image.
// User text reaches the page only as text nodes (fillSelect, td.append(string)), never as HTML.
"use strict";
const $ = (id) => document.getElementById(id);
let nextToken = "";

async function boot() {
  const who = await Api.whoami();
  if (!who) { location.href = "/"; return; }  // the annotator page logs in
  $("whoami").textContent = `${who.name} (${who.role})`;
  const projects = await Api.get("/v1/projects");
  fillSelect($("project"), projects.map((p) => ({ value: p.project_id, text: p.name })));
  const wanted = new URLSearchParams(location.search).get("project") || localStorage.getItem("annot.project");
  if (wanted && projects.some((p) => p.project_id === wanted)) $("project").value = wanted;
  $("project").onchange = () => load(true);
  $("more").onclick = () => load(false);
  await load(true);
}

async function load(reset) {
  $("error").textContent = "";
  if (reset) { $("items").replaceChildren(); nextToken = ""; }
  const project = encodeURIComponent($("project").value);
  try {
    const page = await Api.get(`/v1/projects/${project}/review?page_size=20&page_token=${encodeURIComponent(nextToken)}`);
    for (const item of page.items) $("items").appendChild(await row(project, item));
    nextToken = page.next_page_token; $("more").hidden = !nextToken;
    if (reset && !page.items.length) $("error").textContent = "No scored annotations yet.";
  } catch (err) { $("error").textContent = err.message; }
}

async function row(project, item) {
  const tr = document.createElement("tr");
  const canvas = document.createElement("canvas");
  try {
    const bitmap = await Api.imageBitmap(`/v1/projects/${project}/images/${encodeURIComponent(item.image_id)}/content`);
    canvas.width = bitmap.width; canvas.height = bitmap.height;
    const ctx = canvas.getContext("2d");
    ctx.drawImage(bitmap, 0, 0);
    ctx.drawImage(Rle.overlay(item.mask, [255, 140, 0, 130]).canvas, 0, 0);
  } catch (_) { /* image gone: the row still shows the score */ }
  const cell = (content, cls) => { const td = document.createElement("td"); if (cls) td.className = cls; td.append(content); return td; };
  const bad = item.predicted_iou < item.threshold;
  tr.append(cell(canvas), cell(item.predicted_iou.toFixed(3), bad ? "bad" : "ok"),
    cell(item.probability_below_threshold.toFixed(2)),
    cell(item.reasons.map((r) => r.description || r.feature).join("; ")),
    cell(`${item.annotator_id} · ${item.click_count} clicks`));
  tr.dataset.sessionId = item.session_id;
  return tr;
}

boot().catch((err) => { $("error").textContent = err.message; });

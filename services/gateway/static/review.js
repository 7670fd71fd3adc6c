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
    if (reset && $("items").firstElementChild) select($("items").firstElementChild);
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
    cell(`${item.annotator_id} · ${item.click_count} clicks`), verdictCell(project, item, tr));
  tr.dataset.sessionId = item.session_id; tr.dataset.verdict = item.verdict;
  tr.onclick = () => select(tr);
  return tr;
}

// Accept / reject go to quality's RecordReview here; correct opens the annotator with the stored mask.
function verdictCell(project, item, tr) {
  const td = document.createElement("td");
  td.className = "review-actions";
  const shown = document.createElement("span");
  shown.className = "verdict"; shown.textContent = item.verdict === "unspecified" ? "" : item.verdict;
  const button = (text, key, onclick) => {
    const b = document.createElement("button");
    b.textContent = text; b.title = `${text} (${key})`; b.dataset.action = text.toLowerCase();
    b.onclick = (e) => { e.stopPropagation(); onclick(); };
    return b;
  };
  const record = async (verdict) => {
    $("error").textContent = "";
    try {
      const reply = await Api.post(`/v1/projects/${project}/review/${encodeURIComponent(item.session_id)}`, { verdict });
      tr.dataset.verdict = reply.verdict; shown.textContent = reply.verdict;
    } catch (err) { $("error").textContent = `Verdict not recorded: ${err.message}`; }
  };
  tr.actions = {
    accept: () => record("accepted"), reject: () => record("rejected"),
    correct: () => { location.href = `/?project=${project}&correct=${encodeURIComponent(item.session_id)}`; },
  };
  td.append(button("Accept", "A", tr.actions.accept), button("Reject", "R", tr.actions.reject),
    button("Correct", "C", tr.actions.correct), shown);
  return td;
}

function select(tr) {
  for (const other of $("items").children) other.classList.toggle("selected", other === tr);
}

document.addEventListener("keydown", (e) => {
  if (e.target.tagName === "INPUT" || e.target.tagName === "SELECT") return;
  const rows = [...$("items").children];
  if (!rows.length) return;
  let current = rows.findIndex((r) => r.classList.contains("selected"));
  const key = e.key.toLowerCase();
  if (key === "j" || key === "k") {
    current = Math.max(0, Math.min(rows.length - 1, current + (key === "j" ? 1 : -1)));
    select(rows[current]); rows[current].scrollIntoView({ block: "nearest" }); e.preventDefault(); return;
  }
  const action = { a: "accept", r: "reject", c: "correct" }[key];
  if (action && current >= 0) { e.preventDefault(); rows[current].actions[action](); }
});

boot().catch((err) => { $("error").textContent = err.message; });

// The project data page: what a project holds (its images count and labels), an existing COCO JSON imported into
// it (POST .../imports/coco, admin) and its exports downloaded (GET .../exports/coco and .../exports/masks.zip,
// reviewer), all with the session cookie as the other pages' requests (api.js). The file goes to the gateway as
// it is, so the gateway judges it: a file that is not JSON, a category that is no label of the project or a
// segmentation it cannot read is refused with the gateway's message, shown here as it comes.
// User text (names, labels, file names, messages) reaches the page as text only (textContent, fillSelect).
"use strict";
const RANK = { annotator: 1, reviewer: 2, admin: 3 };
const IMPORT_ROLE = "admin", EXPORT_ROLE = "reviewer";  // services/gateway/access.py's rules for these routes
const state = { whoami: null, projects: [], project: null, busy: false };

const base = () => `/v1/projects/${encodeURIComponent(state.project.project_id)}`;
const may = (role) => state.whoami && (RANK[state.whoami.role] || 0) >= RANK[role];

async function boot() {
  state.whoami = await signIn();
  if (!state.whoami) return;
  state.projects = await Api.get("/v1/projects");
  fillSelect($("project"), state.projects.map((p) => ({ value: p.project_id, text: p.name || p.project_id })));
  const wanted = new URLSearchParams(location.search).get("project") || localStorage.getItem("annot.project");
  if (wanted && state.projects.some((p) => p.project_id === wanted)) $("project").value = wanted;
  $("project").onchange = () => loadProject().catch(showError);
  $("import-form").onsubmit = (e) => { e.preventDefault(); importCoco(); };
  $("export-coco").onclick = () => download("exports/coco", "coco.json");
  $("export-masks").onclick = () => download("exports/masks.zip", "masks.zip");
  bindKeys();
  await loadProject();
}

async function loadProject() {
  showError(null);
  clearImport(); clearExport();
  state.project = state.projects.find((p) => p.project_id === $("project").value) || null;
  const none = !state.project;
  $("import").disabled = none || !may(IMPORT_ROLE);
  $("export-coco").disabled = $("export-masks").disabled = none || !may(EXPORT_ROLE);
  const role = state.whoami.role;
  $("import-access").textContent = may(IMPORT_ROLE) ? "" :
    `This key's role is ${role}: importing needs an admin key of the project.`;
  $("export-access").textContent = may(EXPORT_ROLE) ? "" :
    `This key's role is ${role}: exporting needs a reviewer or admin key of the project.`;
  if (none) {
    $("project-name").textContent = "No project is visible to this key.";
    $("image-count").textContent = ""; $("labels").replaceChildren();
    return;
  }
  const project = state.project;
  localStorage.setItem("annot.project", project.project_id);
  history.replaceState(null, "", `/project?project=${encodeURIComponent(project.project_id)}`);
  $("project-name").textContent = project.name ? `${project.name} (${project.project_id})` : project.project_id;
  $("labels").replaceChildren(...project.labels.map((label) => {
    const li = document.createElement("li"); li.textContent = label; return li;
  }));
  const { total } = await Api.get(`${base()}/images?limit=1`);
  if (state.project !== project) return;  // another project was picked meanwhile
  $("image-count").dataset.count = String(total);
  $("image-count").textContent = `${total} image${total === 1 ? "" : "s"}`;
}

// --- import ------------------------------------------------------------------------------------------------

function clearImport() {
  const result = $("import-result");
  for (const name of ["state", "imported", "images", "rle", "polygon", "box", "unmatched"]) result.dataset[name] = "";
  $("import-status").textContent = ""; $("import-details").replaceChildren(); $("import-error").textContent = "";
}

// The gateway's refusal ({"error": {code, field, message}}) as api.js builds it, with the status's words.
async function refusal(response) {
  let error = { code: String(response.status), field: "", message: response.statusText };
  try { error = (await response.json()).error || error; } catch (_) { /* not JSON */ }
  const err = new Error(`${error.code}${error.field ? " (" + error.field + ")" : ""}: ${error.message}`);
  err.status = response.status; err.detail = error;
  return err;
}
function describe(err) {
  const words = err.status ? (STATUS_WORDS[err.status] || `Refused (${err.status})`) : "";
  return words ? `${words}: ${err.message}` : String(err.message || err);
}

const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

async function importCoco() {
  if (state.busy || !state.project) return;
  clearImport();
  const file = $("import-file").files[0];
  if (!file) { $("import-error").textContent = "Choose a COCO JSON file first."; return; }
  const result = $("import-result"), project = state.project;
  state.busy = true; $("import").disabled = true; document.body.classList.add("busy");
  result.dataset.state = "importing";
  $("import-status").textContent = `Importing ${file.name} (${file.size} bytes) into ${project.project_id}…`;
  try {
    const text = await file.text();
    const response = await fetch(`${base()}/imports/coco`, { method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": Api.csrf }, body: text });
    if (!response.ok) throw await refusal(response);
    showImport(await response.json(), file.name);
  } catch (err) {
    result.dataset.state = "error";
    $("import-status").textContent = `${file.name} was not imported.`;
    $("import-error").textContent = describe(err);
  } finally {
    state.busy = false; $("import").disabled = !may(IMPORT_ROLE); document.body.classList.remove("busy");
  }
}

function showImport(reply, fileName) {
  const result = $("import-result");
  const unmatched = Array.isArray(reply.unmatched_images) ? reply.unmatched_images.map(String) : [];
  const kinds = reply.kinds;  // the imported annotations by the shape the file gave them in
  Object.assign(result.dataset, { state: "done", imported: String(reply.imported), images: String(reply.images),
    rle: String(kinds.rle), polygon: String(kinds.polygon), box: String(kinds.box), unmatched: String(unmatched.length) });
  $("import-status").textContent = reply.imported
    ? `Imported ${plural(reply.imported, "annotation")} from ${fileName} onto ${plural(reply.images, "image")} of the project.`
    : `Nothing was imported from ${fileName}.`;
  const lines = [`Imported by kind: ${kinds.rle} RLE, ${plural(kinds.polygon, "polygon")}, ${plural(kinds.box, "box")}.`];
  const skipped = reply.skipped_empty;
  if (skipped > 0) lines.push(`${plural(skipped, "annotation")} covered no pixel of its image and ${skipped === 1 ? "was" : "were"} skipped.`);
  if (unmatched.length) {
    const shown = unmatched.slice(0, 20).join(", ") + (unmatched.length > 20 ? `, … (${unmatched.length - 20} more)` : "");
    lines.push(`${plural(unmatched.length, "image")} of the file ${unmatched.length === 1 ? "is" : "are"} not in this project ` +
      `(no image with that file name; upload it first), so ${unmatched.length === 1 ? "its" : "their"} annotations were ` +
      `not imported: ${shown}`);
  }
  if (reply.selection && reply.selection !== "ok" && reply.imported) {
    lines.push(`The annotations are stored; the selection service was not told of them: ${reply.selection}`);
  }
  $("import-details").replaceChildren(...lines.map((line) => {
    const li = document.createElement("li"); li.textContent = line; return li;
  }));
}

// --- export ------------------------------------------------------------------------------------------------

function clearExport() {
  const status = $("export-status");
  status.dataset.state = status.dataset.file = status.dataset.bytes = "";
  status.textContent = ""; $("export-error").textContent = "";
}

// Fetched with the session cookie, then saved from a blob (a plain link could not show the gateway's refusal).
async function download(route, suffix) {
  if (state.busy || !state.project) return;
  clearExport();
  const status = $("export-status"), name = `${state.project.project_id}-${suffix}`;
  state.busy = true; document.body.classList.add("busy");
  status.dataset.state = "exporting"; status.textContent = `Exporting ${name}…`;
  try {
    const response = await fetch(`${base()}/${route}`, { credentials: "same-origin" });
    if (!response.ok) throw await refusal(response);
    const blob = await response.blob();
    const url = URL.createObjectURL(blob);
    const link = document.createElement("a");
    link.href = url; link.download = name; link.hidden = true;
    document.body.append(link); link.click(); link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
    Object.assign(status.dataset, { state: "done", file: name, bytes: String(blob.size) });
    status.textContent = `Downloaded ${name} (${blob.size} bytes).`;
  } catch (err) {
    status.dataset.state = "error"; status.textContent = `${name} was not exported.`;
    $("export-error").textContent = describe(err);
  } finally {
    state.busy = false; document.body.classList.remove("busy");
  }
}

// Every action has a key (a disabled button's key does nothing, as the button).
function bindKeys() {
  document.addEventListener("keydown", (e) => {
    if (e.target.tagName === "SELECT" || (e.target.tagName === "INPUT" && e.target.type !== "file") ||
        e.ctrlKey || e.metaKey || e.altKey || $("work").hidden) return;
    const key = e.key.toLowerCase();
    const press = (id) => { if (!$(id).disabled) $(id).click(); };
    if (e.key === "?") $("help").hidden = !$("help").hidden;
    else if (e.key === "Escape") $("help").hidden = true;
    else if (key === "i") press("import-file");  // a key press lets the page open the file chooser
    else if (key === "e") press("export-coco");
    else if (key === "m") press("export-masks");
    else return;
    e.preventDefault();
  });
}

boot().catch(showError);

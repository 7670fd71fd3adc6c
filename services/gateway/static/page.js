// What the annotator pages share (index.html, video.html): the sign-in (the login form exchanges the key
// for the HttpOnly session cookie; logout drops it) and the messages for refused requests.
"use strict";
const $ = (id) => document.getElementById(id);

const STATUS_WORDS = { 400: "Refused, the request is invalid", 401: "Not logged in", 403: "Not allowed",
  404: "Not found", 409: "Refused, not ready or changed meanwhile", 413: "Refused, too large",
  422: "Refused, invalid input", 429: "Too many requests, slow down", 503: "A service is unavailable" };

function showError(err) {
  if (!err) { $("error").textContent = ""; return; }
  const words = err.status ? (STATUS_WORDS[err.status] || `Refused (${err.status})`) : "";
  $("error").textContent = words ? `${words}: ${err.message}` : String(err.message || err);
}
function refuse(message) { $("error").textContent = `Refused: ${message}`; }

function showLogin(message) {
  $("login").hidden = false; $("work").hidden = true; $("logout").hidden = true;
  $("login-error").textContent = message || "";
}

// Wires the login form and logout; the signed-in caller with the work shown, or null with the login shown.
async function signIn() {
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
  const who = await Api.whoami();
  if (!who) { showLogin(""); return null; }
  $("login").hidden = true; $("work").hidden = false; $("logout").hidden = false;
  $("whoami").textContent = `${who.name} (${who.role})`;
  return who;
}

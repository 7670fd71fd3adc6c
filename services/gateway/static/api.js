// REST client of the gateway. The browser logs in once (POST /v1/login with the API key) and from then
// on holds only an HttpOnly session cookie, which no script can read; the page keeps no key anywhere.
// Requests that change state carry the session's CSRF token as X-CSRF-Token (from the login answer or
// GET /v1/whoami). Errors arrive as {"error": {code, field, message}}.
"use strict";
const Api = {
  csrf: "",

  async request(method, path, body) {
    const headers = {};
    if (method !== "GET" && method !== "HEAD") headers["X-CSRF-Token"] = Api.csrf;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, { method, headers, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body) });
    if (!response.ok) {
      let error = { code: String(response.status), field: "", message: response.statusText };
      try { error = (await response.json()).error || error; } catch (_) { /* not JSON */ }
      const err = new Error(`${error.code}${error.field ? " (" + error.field + ")" : ""}: ${error.message}`);
      err.status = response.status; err.detail = error;
      throw err;
    }
    const type = response.headers.get("content-type") || "";
    return type.includes("json") ? response.json() : response;
  },
  get(path) { return Api.request("GET", path); },
  post(path, body) { return Api.request("POST", path, body === undefined ? {} : body); },

  // The key goes to the gateway once, in the body of this request, and is not kept by the page.
  async login(key) {
    const who = await Api.request("POST", "/v1/login", { key });
    Api.csrf = who.session.csrf_token;
    return who;
  },
  // The signed-in key (and the session's CSRF token), or null when there is no session (401).
  async whoami() {
    try {
      const who = await Api.get("/v1/whoami");
      Api.csrf = who.session ? who.session.csrf_token : "";
      return who;
    } catch (err) {
      if (err.status === 401) return null;
      throw err;
    }
  },
  async logout() { await Api.request("POST", "/v1/logout"); Api.csrf = ""; },

  async imageBitmap(url) {  // fetched with the session cookie, drawn on a canvas
    const response = await Api.request("GET", url);
    return createImageBitmap(await response.blob());
  },
};

// Builds <option>s as elements with text nodes: names and labels are user text, never HTML.
function fillSelect(select, items) {
  select.replaceChildren(...items.map(({ value, text }) => {
    const option = document.createElement("option");
    option.value = value; option.textContent = text;
    return option;
  }));
}

// Keys kept by older versions of the page are dropped.
try { localStorage.removeItem("annot.key"); } catch (_) { /* storage disabled */ }

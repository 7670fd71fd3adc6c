// REST client of the gateway: the API key lives in localStorage ("annot.key") and goes in
// every request as "Authorization: Bearer <key>". Errors arrive as {"error": {code, field, message}}.
"use strict";
const Api = {
  get key() { return localStorage.getItem("annot.key") || ""; },
  set key(value) { value ? localStorage.setItem("annot.key", value) : localStorage.removeItem("annot.key"); },

  async request(method, path, body) {
    const headers = { Authorization: `Bearer ${Api.key}` };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
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

  async imageBitmap(url) {  // images need the key too, so no plain <img src>
    const response = await Api.request("GET", url);
    return createImageBitmap(await response.blob());
  },
};

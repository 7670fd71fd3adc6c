// Swagger UI on this gateway's OpenAPI, from the pinned swagger-ui-bundle wheel (served at /docs/assets):
// works offline, and as a file of its own it needs no inline script under the Content-Security-Policy.
"use strict";
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
});

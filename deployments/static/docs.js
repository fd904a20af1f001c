// Starts Swagger UI on /docs: the start-up code FastAPI normally inlines in the page, served
// as a file so the docs page's Content-Security-Policy needs no inline script. A classic
// script (not a module): it runs after swagger-ui-bundle.js has defined SwaggerUIBundle.
"use strict";

(() => {
  const root = document.getElementById("swagger-ui");
  // Relative to the page, so the docs work under a Serve route prefix too.
  const url = new URL(root.dataset.openapiUrl, document.baseURI).href;
  window.ui = SwaggerUIBundle({
    url,
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
    validatorUrl: null, // no badge fetched from the public validator
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
  });
})();

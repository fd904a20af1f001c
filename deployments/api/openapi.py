"""The OpenAPI document: every status, body, media type and security scheme the API uses.

FastAPI derives the routes' parameters, JSON bodies and success responses from their
signatures; ``install_openapi`` completes the document once and serves it with the facts of
this deployment:

* **Error responses, declared once.** Every operation gets the error statuses it can answer,
  from the one table in ``deployments.http_errors`` (``ERROR_DESCRIPTIONS``): 400 with any
  parameter or body, 401 and 502/503 on ``/v1``, 404 with a path parameter, 408/422 with a
  body, 413 where the route reads a capped body itself, 500 everywhere; all in the one
  ``{"code", "message"}`` shape (503 with ``Retry-After``).
* **Security schemes**: the API key (``X-API-Key``, or ``Authorization: Bearer``) on ``/v1``
  (optional on ``/healthz``, where it adds details), the webhook's bearer token on
  ``POST /v1/events/s3``; none when no key is configured.
* **Bodies routes read themselves**: ``/v1/analyses`` (multipart ``file`` or raw audio, in the
  route), ``POST /v1/generations`` (JSON ``GenerationBody``, or multipart with it as the part
  ``request`` and a ``melody`` or ``continuation`` file) and the MinIO notification of
  ``/v1/events/s3`` (their models' schemas).
* **Live facts**: the limits in force (duration, prompt length, stems), the engine and model
  this deployment serves, the batch source prefix, the servers entry for a route prefix.

Query and header parameters are never ``null`` (absent is absent), so their schemas drop it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.routing import RouteContext, iter_route_contexts

from deployments.api.auth import API_KEY_HEADER
from deployments.api.deps import Services, get_services
from deployments.api.front_door import WEBHOOK_PATH
from deployments.api.generation_inputs import capabilities
from deployments.api_models import GenerationBody, batch_source_pattern
from deployments.http_errors import ERROR_DESCRIPTIONS
from deployments.served_models import ModelTable
from engines.audio_inputs import INPUT_KINDS
from engines.requests import Limits
from triggers.minio_events import MinioNotification

Document = dict[str, Any]
_REF = "#/components/schemas/{model}"
ERROR_SCHEMA: Document = {
    "type": "object", "required": ["code", "message"], "additionalProperties": False,
    "properties": {"code": {"type": "string", "description": "stable snake_case identifier"},
                   "message": {"type": "string", "description": "what to change, one line"}}}
SECURITY_SCHEMES: Document = {
    "ApiKey": {"type": "apiKey", "in": "header", "name": API_KEY_HEADER,
               "description": "MUSICFN_API_KEY (blanks around it are ignored)"},
    "ApiKeyBearer": {"type": "http", "scheme": "bearer",
                     "description": "MUSICFN_API_KEY as `Authorization: Bearer <key>`"},
    "WebhookToken": {"type": "http", "scheme": "bearer",
                     "description": "MUSICFN_WEBHOOK_TOKEN, MinIO's webhook auth_token"},
}
_API_KEY: list[dict[str, list[str]]] = [{"ApiKey": []}, {"ApiKeyBearer": []}]
_RETRY_AFTER: Document = {"Retry-After": {"description": "seconds to wait before retrying",
                                          "schema": {"type": "integer", "minimum": 1}}}


def install_openapi(app: FastAPI) -> None:
    """Serve the completed document at ``app.openapi_url`` (``app.openapi()`` returns it
    without the live facts)."""
    cached: list[Document] = []

    def base() -> Document:
        if not cached:
            cached.append(base_document(app))
        return cached[0]

    async def openapi_json(request: Request) -> JSONResponse:
        services = get_services()
        doc = live_document(base(), services, await services.limits.get(),
                            root_path=str(request.scope.get("root_path", "")).rstrip("/"),
                            supports=await capabilities(services).get(),
                            table=await services.models.get())
        return JSONResponse(doc)

    url = app.openapi_url
    if url is None:
        return
    app.router.routes[:] = [r for r in app.router.routes if getattr(r, "path", None) != url]
    app.add_route(url, openapi_json, include_in_schema=False)
    app.openapi = base  # type: ignore[method-assign]


def base_document(app: FastAPI) -> Document:
    """FastAPI's document with the error responses, security schemes and self-read bodies."""
    doc = get_openapi(title=app.title, version=app.version, description=app.description,
                      routes=app.routes)
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for generated in ("HTTPValidationError", "ValidationError"):
        schemas.pop(generated, None)
    schemas["Error"] = ERROR_SCHEMA
    notification = MinioNotification.model_json_schema(by_alias=True, ref_template=_REF)
    schemas.update(notification.pop("$defs", {}))
    schemas["MinioNotification"] = notification
    # POST /v1/generations reads its body itself (JSON, or multipart with an audio part).
    generation = GenerationBody.model_json_schema(ref_template=_REF)
    schemas.update(generation.pop("$defs", {}))
    schemas["GenerationBody"] = generation
    components["responses"] = {f"Error{status}": _error_response(status)
                               for status in ERROR_DESCRIPTIONS}
    components["securitySchemes"] = SECURITY_SCHEMES
    routes = {(r.path, m.lower()): r for r in iter_route_contexts(app.routes)
              for m in r.methods or ()}
    for path, operations in doc.get("paths", {}).items():
        for method, op in operations.items():
            _complete(path, method, op, routes.get((path, method)))
    return doc


def live_document(base: Document, services: Services, limits: Limits, *,
                  root_path: str = "", supports: Mapping[str, Any] | None = None,
                  table: ModelTable | None = None) -> Document:
    """``base`` with this deployment's facts (limits, engine, bucket, security, and the
    reference audio the served model takes: ``supports``, None when not known yet)."""
    doc = copy.deepcopy(base)
    if supports is not None:
        _offer_inputs(doc, [k for k in INPUT_KINDS if supports.get(k, False)])
    if root_path:
        doc["servers"] = [{"url": root_path}]
    schemas = doc["components"]["schemas"]
    body = schemas["GenerationBody"]["properties"]
    body["duration_s"]["maximum"] = limits.max_duration_s
    body["prompt"]["maxLength"] = min(body["prompt"]["maxLength"], limits.max_prompt_chars)
    stems = body["stems"]["anyOf"][0]
    stems["maxItems"] = min(stems["maxItems"], limits.max_stems)
    table = table or ModelTable.single(services.default_model)
    engines = sorted({m.engine for m in table.models.values()})
    for name, served in (("engine", engines), ("model", list(table.models))):
        body[name]["anyOf"] = [{"type": "string", "enum": served}, {"type": "null"}]
    body["callback_url"]["description"] += (
        "; private and loopback addresses are allowed here"
        if services.settings.callback_allow_private
        else "; nor, here, a private or loopback address or a localhost name")
    settings = services.settings
    schemas["BatchBody"]["properties"]["source"]["pattern"] = batch_source_pattern(
        settings.bucket, settings.incoming_prefix)
    _example(doc, "/v1/generations", {  # requests that work on this deployment
        "prompt": "warm lofi beat with vinyl crackle", "bpm": 90, "seed": 7,
        "duration_s": min(8.0, limits.max_duration_s), "loudness": {"preset": "podcast"}})
    _example(doc, "/v1/batches",
             {"source": f"s3://{settings.bucket}/{settings.incoming_prefix}/takes/"})
    keyed = settings.api_key is not None
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            op["security"] = _security(path, method, keyed)
    return doc


def _offer_inputs(doc: Document, kinds: list[str]) -> None:
    """Keep only the reference audio (melody, continuation) the served model takes: in the
    JSON body and as multipart parts (no multipart at all when it takes none)."""
    body = doc["components"]["schemas"]["GenerationBody"]["properties"]
    content = doc["paths"]["/v1/generations"]["post"]["requestBody"]["content"]
    multipart = content["multipart/form-data"]
    for kind in INPUT_KINDS:
        if kind not in kinds:
            body.pop(kind, None)
            multipart["schema"]["properties"].pop(kind, None)
            multipart["encoding"].pop(kind, None)
    if len(kinds) < len(INPUT_KINDS):
        multipart["schema"].pop("not", None)
    if not kinds:
        del content["multipart/form-data"]


def _example(doc: Document, path: str, body: Document) -> None:
    doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["example"] = body


def _security(path: str, method: str, keyed: bool) -> list[dict[str, list[str]]]:
    if path == WEBHOOK_PATH:
        return [] if method == "head" else [{"WebhookToken": []}]
    if not keyed:
        return []
    return _API_KEY if path.startswith("/v1/") else [{}, *_API_KEY]


def _complete(path: str, method: str, op: Document, route: RouteContext | None) -> None:
    """One operation's error responses, JSON error bodies and null-free parameters."""
    responses: Document = op.setdefault("responses", {})
    errors = _error_statuses(path, method, op, route)
    if 422 not in errors:
        responses.pop("422", None)  # FastAPI's, for parameters: those are 400 here
    for error in sorted(errors):
        if str(error) not in responses or error == 422:
            responses[str(error)] = {"$ref": f"#/components/responses/Error{error}"}
    for status, response in responses.items():
        if status.isdigit() and int(status) >= 400 and "$ref" not in response \
                and "content" not in response:
            response["content"] = {"application/json": {"schema": _ref("Error")}}
            if status == "503":
                response["headers"] = _RETRY_AFTER
    for parameter in op.get("parameters", []):
        parameter["schema"] = _without_null(parameter["schema"])


def _error_statuses(path: str, method: str, op: Document, route: RouteContext | None) -> set[int]:
    statuses = {500}
    if path.startswith("/v1/") and not (path == WEBHOOK_PATH and method == "head"):
        statuses |= {401, 502, 503}
    if op.get("parameters") or "requestBody" in op:
        statuses.add(400)
    if any(p.get("in") == "path" for p in op.get("parameters", [])):
        statuses.add(404)
    if "requestBody" in op:
        statuses |= {408, 422}
        if route is not None and route.body_field is None:  # the route reads it, capped
            statuses.add(413)
    return statuses


def _error_response(status: int) -> Document:
    response: Document = {"description": ERROR_DESCRIPTIONS[status],
                          "content": {"application/json": {"schema": _ref("Error")}}}
    if status == 503:
        response["headers"] = _RETRY_AFTER
    elif status == 405:
        response["headers"] = {"Allow": {"schema": {"type": "string"}}}
    return response


def _ref(name: str) -> Document:
    return {"$ref": _REF.format(model=name)}


def _without_null(schema: Document) -> Document:
    """A parameter schema without its ``null`` alternative (an absent parameter is absent)."""
    options = [s for s in schema.get("anyOf", []) if s.get("type") != "null"]
    if len(options) != 1:
        return schema
    rest = {k: v for k, v in schema.items() if k != "anyOf"}
    return {**options[0], **rest}


"""The OpenAPI 3.1 document of the served API, built from the route table (``routes.Endpoint``)
and the request models the server itself validates with, so it cannot drift from the behaviour."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from .routes import Endpoint, Operation

_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["message", "type", "param", "code"],
    "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                   "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}}}}
_MODEL = {"type": "object", "required": ["id", "object", "created", "owned_by"],
          "properties": {"id": {"type": "string"}, "object": {"const": "model"}, "created": {"type": "integer"},
                         "owned_by": {"type": "string"}}}
_ERRORS = {"400": "invalid request", "401": "missing or wrong API key", "404": "unknown model or resource",
           "409": "conflict with what is installed", "413": "request body too large",
           "429": "too many requests queued", "502": "a gallery could not be read",
           "503": "model loading, cooling down, or server at capacity"}
_GENERATION_MODELS = ("ChatCompletionRequest", "CompletionRequest", "EditRequest")  # their `model` lists the served ones


def _errors(*codes: str) -> dict[str, Any]:
    return {code: {"description": _ERRORS[code],
                   "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
            for code in codes}


def _operation(operation: Operation) -> dict[str, Any]:
    schema = operation.response or ({"type": "object"} if operation.media_type == "application/json" else {"type": "string"})
    content: dict[str, Any] = {operation.media_type: {"schema": schema}}
    if operation.streams:
        content["text/event-stream"] = {"schema": {"type": "string"}}
    errors = operation.errors if operation.public else ("401", *operation.errors)
    rendered: dict[str, Any] = {
        "summary": operation.summary,
        "responses": {"200": {"description": "an SSE stream when stream is true" if operation.streams else "success",
                              "content": content},
                      **_errors(*sorted(set(errors)))},
    }
    if operation.request is not None:
        rendered["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{operation.request.__name__}"}}}}
    if operation.public:
        rendered["security"] = []
    return rendered


def _parameters(template: str) -> list[dict[str, Any]]:
    return [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in re.findall(r"{(\w+)}", template)]


def _request_schema(model: type[BaseModel], models: tuple[str, ...], max_n: int,
                    schemas: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(schema.pop("$defs", {}))
    if model.__name__ in _GENERATION_MODELS:
        if models:
            schema["properties"]["model"] = {"description": "A served model (or null: the only one, or the one "
                                                            "the bearer token names).",
                                             "anyOf": [{"enum": list(models)}, {"type": "null"}]}
        if len(models) > 1:
            schema["properties"]["model"] = {"description": "A served model.", "enum": list(models)}
            schema["required"] = sorted({*schema.get("required", []), "model"})
        schema["properties"]["n"] = {**schema["properties"]["n"], "maximum": max_n}
    return schema


def openapi_document(endpoints: Sequence[Endpoint], models: tuple[str, ...], max_n: int) -> dict[str, Any]:
    """The document of the served ``endpoints`` for a server serving ``models`` (a generation's
    ``model`` lists them, and is required when there are several) with at most ``max_n``
    choices a request."""
    schemas: dict[str, Any] = {"Error": _ERROR, "Model": _MODEL}
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        operation = endpoint.operation
        if operation.request is not None and operation.request.__name__ not in schemas:
            schemas[operation.request.__name__] = _request_schema(operation.request, models, max_n, schemas)
        item = paths.setdefault(endpoint.documented_path(), {})
        for method in endpoint.methods:
            item[method.lower()] = _operation(operation)
        if parameters := _parameters(endpoint.template):
            item["parameters"] = parameters
    return {
        "openapi": "3.1.0",
        "info": {"title": "modelyard", "version": "0.1.0",
                 "description": "OpenAI-compatible text generation. Every /v1 path is also served without /v1."},
        "components": {"schemas": schemas,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
        "paths": paths,
    }


MODEL_LIST = {"type": "object", "properties": {"object": {"const": "list"},
                                               "data": {"type": "array", "items": {"$ref": "#/components/schemas/Model"}}}}
MODEL = {"$ref": "#/components/schemas/Model"}

"""The OpenAPI 3.1 document of the served API, built from the request models the server itself
validates with, so the document cannot drift from the behaviour."""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel

from .protocol import ChatCompletionRequest, CompletionRequest, EditRequest

_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["message", "type", "param", "code"],
    "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                   "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}}}}
_MODEL = {"type": "object", "required": ["id", "object", "created", "owned_by"],
          "properties": {"id": {"type": "string"}, "object": {"const": "model"}, "created": {"type": "integer"},
                         "owned_by": {"type": "string"}}}
_ERRORS = {"400": "invalid request", "401": "missing or wrong API key", "404": "unknown model",
           "413": "request body too large", "429": "too many requests queued for the model",
           "503": "model loading, cooling down, or server at capacity"}


def _errors(*codes: str) -> dict[str, Any]:
    return {code: {"description": _ERRORS[code],
                   "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
            for code in codes}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _generation(summary: str, model: type[BaseModel], streams: bool) -> dict[str, Any]:
    content = {"application/json": {"schema": {"type": "object"}}}
    if streams:
        content["text/event-stream"] = {"schema": {"type": "string"}}
    return {"post": {
        "summary": summary,
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}},
        "responses": {"200": {"description": "the completion (an SSE stream when stream is true)", "content": content},
                      **_errors("400", "401", "404", "413", "429", "503")},
    }}


@functools.cache
def openapi_document(models: tuple[str, ...], max_n: int) -> dict[str, Any]:
    """The document for a server serving ``models`` (``model`` lists them, and is required when
    there are several) with at most ``max_n`` choices a request."""
    schemas: dict[str, Any] = {"Error": _ERROR, "Model": _MODEL}
    for request_model in (ChatCompletionRequest, CompletionRequest, EditRequest):
        schema = request_model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        if models:
            schema["properties"]["model"] = {"description": "A served model (or null: the only one, or the one "
                                                            "the bearer token names).",
                                             "anyOf": [{"enum": list(models)}, {"type": "null"}]}
        if len(models) > 1:
            schema["properties"]["model"] = {"description": "A served model.", "enum": list(models)}
            schema["required"] = sorted({*schema.get("required", []), "model"})
        schema["properties"]["n"] = {**schema["properties"]["n"], "maximum": max_n}
        schemas[request_model.__name__] = schema
    paths = {
        "/v1/chat/completions": _generation("Create a chat completion", ChatCompletionRequest, True),
        "/v1/completions": _generation("Create a completion (legacy)", CompletionRequest, True),
        "/v1/edits": _generation("Create an edit (legacy)", EditRequest, False),
        "/v1/models": {"get": {"summary": "List models", "responses": {
            "200": _json("the served models", {"type": "object", "properties": {
                "object": {"const": "list"}, "data": {"type": "array", "items": {"$ref": "#/components/schemas/Model"}}}}),
            **_errors("401")}}},
        "/v1/models/{model_id}": {"get": {
            "summary": "Describe a model",
            "parameters": [{"name": "model_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": _json("the model", {"$ref": "#/components/schemas/Model"}), **_errors("401", "404")}}},
        "/healthz": {"get": {"summary": "Liveness", "responses": {"200": _json("alive", {"type": "object"})}}},
        "/readyz": {"get": {"summary": "Readiness", "responses": {
            "200": _json("ready", {"type": "object"}), "503": _json("starting", {"type": "object"})}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "modelyard", "version": "0.1.0",
                 "description": "OpenAI-compatible text generation. Every path is also served without /v1."},
        "components": {"schemas": schemas,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": paths,
    }

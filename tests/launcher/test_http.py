"""The HTTP layer over a fake pool: response and chunk shapes, errors, routing, templates."""

from __future__ import annotations

import json

import pytest
from starlette.testclient import TestClient

from modelyard.launcher.app import create_app
from modelyard.launcher.pool import ModelUnavailable

from .fakes import MODELS, FakePool, make_plan, wait_until_ready


def chat(client, content="hi", **body):
    return client.post("/v1/chat/completions", json={"model": "chat", "messages": [{"role": "user", "content": content}], **body})


def sse(response) -> list:
    events = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            data = line[len("data: "):]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def test_models_list_and_get(client) -> None:
    listed = client.get("/v1/models").json()
    assert listed == {"object": "list", "data": [
        {"id": name, "object": "model", "created": 0, "owned_by": "modelyard"}
        for name in ("chat", "embed", "plain", "rules")]}
    assert client.get("/models/chat").json()["id"] == "chat"
    missing = client.get("/v1/models/nope")
    assert missing.status_code == 404
    assert missing.json() == {"error": {
        "message": "model 'nope' not found; available models: chat, embed, plain, rules",
        "type": "invalid_request_error", "param": "model", "code": "model_not_found"}}


def test_chat_completion_shape_usage_and_prompt(client, pool) -> None:
    body = chat(client, "hi").json()
    assert body["id"].startswith("chatcmpl-") and isinstance(body["created"], int)
    assert body["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "Hello world, this is a fake model.",
                                                        "refusal": None}, "logprobs": None, "finish_reason": "stop",
                                    "stop_reason": None}]
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["completion_tokens"] == 9
    model, request = pool.requests[-1]
    assert (model, request.prompt, request.temperature, request.max_tokens) == ("chat", "<user>hi\n<assistant>", 0.3, 64)


def test_request_fields_override_yaml_and_defaults(client, pool) -> None:
    chat(client, temperature=0, max_completion_tokens=3, top_k=5, seed=7)
    _, request = pool.requests[-1]
    assert (request.temperature, request.max_tokens, request.top_k, request.seed, request.top_p) == (0, 3, 5, 7, 0.95)


def test_max_tokens_gives_length(client) -> None:
    body = chat(client, max_tokens=2).json()
    assert body["choices"][0]["message"]["content"] == "Hello world"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 2


def test_stop_sequences_are_excluded_even_across_tokens(client) -> None:
    body = chat(client, stop=["ld, th"]).json()  # spans the tokens " world", ",", " this"
    assert body["choices"][0]["message"]["content"] == "Hello wor"
    assert body["choices"][0]["finish_reason"] == "stop"
    streamed = sse(client.post("/v1/chat/completions", json={
        "model": "chat", "messages": [{"role": "user", "content": "hi"}], "stop": "ld, th", "stream": True}))
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in streamed[:-1] if e["choices"])
    assert text == "Hello wor"


def test_yaml_stopwords_apply(client) -> None:
    body = chat(client, "[echo] say <end> now").json()
    assert "<end>" not in body["choices"][0]["message"]["content"]


def test_streaming_chunk_order(client) -> None:
    events = sse(client.post("/v1/chat/completions", json={
        "model": "chat", "messages": [{"role": "user", "content": "hi"}], "stream": True,
        "stream_options": {"include_usage": True}}))
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    contents = [c["choices"][0]["delta"] for c in chunks[1:-2]]
    assert all(set(d) == {"content"} and d["content"] for d in contents)
    assert "".join(d["content"] for d in contents) == "Hello world, this is a fake model."
    assert chunks[-2]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop",
                                        "stop_reason": None}  # vLLM's: the stop sequence that ended it
    finishes = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finishes) == 1
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 9


def test_streaming_without_usage_has_no_usage_key(client) -> None:
    events = sse(client.post("/v1/completions", json={"model": "chat", "prompt": "x", "stream": True}))
    assert events[-1] == "[DONE]"
    assert all("usage" not in e for e in events[:-1])
    assert events[0]["object"] == "text_completion"


def test_n_choices(client, pool) -> None:
    body = chat(client, n=2, seed=5).json()
    assert [c["index"] for c in body["choices"]] == [0, 1]
    assert body["usage"]["completion_tokens"] == 18
    assert [r.seed for _, r in pool.requests[-2:]] == [5, 6]
    events = sse(client.post("/v1/chat/completions", json={
        "model": "chat", "messages": [{"role": "user", "content": "hi"}], "n": 2, "stream": True}))
    finishes = [(e["choices"][0]["index"], e["choices"][0]["finish_reason"]) for e in events[:-1]
                if e["choices"][0]["finish_reason"]]
    assert sorted(finishes) == [(0, "stop"), (1, "stop")]


def test_n_choices_decode_at_once_and_their_chunks_interleave(client) -> None:
    events = sse(client.post("/v1/chat/completions", json={
        "model": "chat", "messages": [{"role": "user", "content": "hi"}], "n": 3, "stream": True}))
    choices = [e["choices"][0] for e in events[:-1]]
    first_of_last = next(i for i, c in enumerate(choices) if c["index"] == 2)
    finish_of_first = next(i for i, c in enumerate(choices) if c["index"] == 0 and c["finish_reason"])
    assert first_of_last < finish_of_first  # choice 2 started before choice 0 finished
    texts = {i: "".join(c["delta"].get("content") or "" for c in choices if c["index"] == i) for i in range(3)}
    assert texts == dict.fromkeys(range(3), "Hello world, this is a fake model.")
    assert all(choices[i]["delta"] == {"role": "assistant", "content": ""}
               for i in (next(k for k, c in enumerate(choices) if c["index"] == n) for n in range(3)))


def test_chat_logprobs(client) -> None:
    body = chat(client, logprobs=True, top_logprobs=2, stop=[" this"]).json()
    logprobs = body["choices"][0]["logprobs"]
    assert logprobs["refusal"] is None
    assert [e["token"] for e in logprobs["content"]] == ["Hello", " world", ","]  # not the stop's token
    assert logprobs["content"][0] == {"token": "Hello", "logprob": -0.5, "bytes": list(b"Hello"), "top_logprobs": [
        {"token": "alt0", "logprob": -1.0, "bytes": list(b"alt0")}, {"token": "alt1", "logprob": -2.0, "bytes": list(b"alt1")}]}
    assert chat(client).json()["choices"][0]["logprobs"] is None
    refused = chat(client, top_logprobs=2)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "top_logprobs"


def test_streamed_logprobs_follow_their_text(client) -> None:
    events = sse(client.post("/v1/chat/completions", json={
        "model": "chat", "messages": [{"role": "user", "content": "hi"}], "stream": True, "logprobs": True}))
    content_chunks = [e["choices"][0] for e in events[:-1] if e["choices"][0]["delta"].get("content")]
    assert all([x["token"] for x in c["logprobs"]["content"]] == [c["delta"]["content"]] for c in content_chunks)
    assert events[0]["choices"][0]["logprobs"] is None


def test_completion_logprobs_legacy_shape(client) -> None:
    body = client.post("/v1/completions", json={"model": "chat", "prompt": "x", "max_tokens": 2, "logprobs": 1}).json()
    assert body["choices"][0]["logprobs"] == {
        "tokens": ["Hello", " world"], "token_logprobs": [-0.5, -0.5],
        "top_logprobs": [{"alt0": -1.0}, {"alt0": -1.0}], "text_offset": [0, 5]}


def test_echo_with_logprobs_scores_the_prompt_first_streamed_or_not(client) -> None:
    """OpenAI's legacy shape: the prompt's tokens lead the entries, the first with a null logprob,
    offsets counted from the echo. With a completion template ("Q: ..."), the tokens the echo does
    not start with are left out (the fake scores "Q: 2+2" as "Q: ", "2+2")."""
    body = {"model": "plain", "prompt": "Hey there", "max_tokens": 2, "logprobs": 1, "echo": True}
    whole = client.post("/v1/completions", json=body).json()["choices"][0]
    assert whole["text"] == "Hey thereHello world"
    assert whole["logprobs"] == {
        "tokens": ["Hey", " th", "ere", "Hello", " world"], "token_logprobs": [None, -1.0, -1.0, -0.5, -0.5],
        "top_logprobs": [{}, {" th": -1.0}, {"ere": -1.0}, {"alt0": -1.0}, {"alt0": -1.0}],
        "text_offset": [0, 3, 6, 9, 14]}
    with client.stream("POST", "/v1/completions", json={**body, "stream": True}) as response:
        chunks = [json.loads(line[6:]) for line in response.iter_lines()
                  if line.startswith("data: ") and line != "data: [DONE]"]
    pieces = [c["choices"][0] for c in chunks if c["choices"][0]["text"]]
    assert "".join(p["text"] for p in pieces) == whole["text"]
    streamed = [p["logprobs"] for p in pieces]
    assert sum((s["tokens"] for s in streamed), []) == whole["logprobs"]["tokens"]
    assert sum((s["text_offset"] for s in streamed), []) == whole["logprobs"]["text_offset"]
    templated = client.post("/v1/completions", json={**body, "model": "chat", "prompt": "2+2"}).json()
    assert templated["choices"][0]["logprobs"]["tokens"][:1] == ["2+2"]
    assert client.post("/v1/completions", json={**body, "echo": False}).json()["choices"][0]["logprobs"][
        "tokens"] == ["Hello", " world"]


def test_completion_and_edit(client, pool) -> None:
    body = client.post("/v1/completions", json={"model": "chat", "prompt": "2+2", "echo": True}).json()
    assert body["object"] == "text_completion"
    assert body["choices"][0]["text"] == "2+2Hello world, this is a fake model."
    assert pool.requests[-1][1].prompt == "Q: 2+2"
    assert pool.requests[-1][1].max_tokens == 64  # the YAML's max_tokens
    edit = client.post("/v1/edits", json={"model": "chat", "instruction": "Fix", "input": "teh"}).json()
    assert edit["object"] == "edit" and edit["choices"][0]["text"] == "Hello world, this is a fake model."
    assert edit["model"] == "chat" and edit["id"].startswith("edit-")
    assert pool.requests[-1][1].prompt == "<system>Fix\n<user>teh\n<assistant>"


def test_no_max_tokens_means_until_the_context_is_full(client, pool) -> None:
    """LocalAI: no max_tokens, and max_tokens 0, mean llama.cpp's n_predict -1 on every endpoint
    (backend/cpp/llama-cpp/grpc-server.cpp l.233), not OpenAI's legacy 16 for completions."""
    client.post("/v1/completions", json={"model": "plain", "prompt": "2+2"})
    assert pool.requests[-1][1].max_tokens is None
    client.post("/v1/completions", json={"model": "chat", "prompt": "2+2", "max_tokens": 0})  # beats the YAML's 64
    assert pool.requests[-1][1].max_tokens is None
    chat(client, max_tokens=0)
    assert pool.requests[-1][1].max_tokens is None
    client.post("/v1/edits", json={"model": "plain", "instruction": "Fix", "input": "teh", "max_tokens": 5})
    assert pool.requests[-1][1].max_tokens == 5


def test_edits_take_a_list_of_inputs(client, pool) -> None:
    """LocalAI's edit.go loops over ``input``: one choice each, in OpenAI's index order."""
    reply = client.post("/v1/edits", json={"model": "chat", "instruction": "Fix", "input": ["teh", "adn"], "n": 2})
    assert reply.status_code == 200
    assert [c["index"] for c in reply.json()["choices"]] == [0, 1, 2, 3]
    prompts = [request.prompt for _, request in pool.requests[-4:]]
    assert sorted(prompts) == sorted(["<system>Fix\n<user>teh\n<assistant>"] * 2 + ["<system>Fix\n<user>adn\n<assistant>"] * 2)
    usage = reply.json()["usage"]
    assert usage["completion_tokens"] == 4 * 9
    empty = client.post("/v1/edits", json={"model": "chat", "instruction": "Fix", "input": []})
    assert (empty.status_code, empty.json()["error"]["param"]) == (400, "input")


def test_any_text_model_serves_every_text_endpoint(client, pool) -> None:
    """known_usecases only picks the default model in LocalAI (core/http/routes/openai.go l.55,
    ``BuildUsecaseFilterFn``); a model without a chat template gets the messages joined
    (core/templates/evaluator.go ``TemplateMessages``)."""
    reply = client.post("/v1/chat/completions", json={"model": "plain", "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "x"}]})
    assert reply.status_code == 200
    assert pool.requests[-1][1].prompt == "Be brief.\nx"
    assert client.post("/v1/edits", json={"model": "plain", "instruction": "Fix", "input": "teh"}).status_code == 200


def test_output_rules_apply_to_non_streamed_replies_and_never_hold_a_stream_back(client) -> None:
    """LocalAI's Finetune (core/backend/llm.go l.473) runs on non-streamed replies only
    (chat.go l.1082, inference.go l.160); a stream sends the raw tokens as they come."""
    body = client.post("/v1/chat/completions", json={"model": "rules", "messages": [{"role": "user", "content": "hi"}]})
    text = body.json()["choices"][0]["message"]["content"]
    assert text == "Hello world, this is a model"
    events = sse(client.post("/v1/chat/completions", json={
        "model": "rules", "messages": [{"role": "user", "content": "hi"}], "stream": True}))
    pieces = [e["choices"][0]["delta"].get("content", "") for e in events[:-1]]
    assert "".join(pieces) == "Hello world, this is a fake model."
    assert len([p for p in pieces if p]) > 1  # streamed piece by piece, not held to the end


@pytest.mark.parametrize("rules,reply,expected", [
    # The audit's case (shared/reference/localai-gap.md §1 gap 15), as LocalAI's Go returns it.
    ({"trimspace": ("Answer:",), "trimsuffix": ("END",)}, "  Answer: <think>plan</think> hello END  ",
     "Answer: <think>plan</think> hello"),
    ({"trimspace": ("Answer:",)}, "Answer:  42 ", "42"),
    ({"trimsuffix": ("</s>",)}, "done </s>", "done"),
    ({"extract_regex": (r"<a>\w+</a>", r"\d+")}, "x <a>yes</a> y 12 z 34", "<a>yes</a>12"),
    ({"extract_regex": (r"nothing",)}, "kept as is", "kept as is"),
    ({"cutstrings": (r"\[\d+\]",)}, "a[1] b[22]", "a b"),
    ({"echo": True}, " world", "PROMPT world"),
])
def test_finetune_is_localais(rules, reply, expected) -> None:
    from modelyard.compiler.plan import OutputRules
    from modelyard.launcher.output import finetune

    assert finetune("PROMPT", reply, OutputRules(**rules)) == expected


def test_model_selection(client) -> None:
    no_model = {"messages": [{"role": "user", "content": "hi"}]}
    by_token = client.post("/v1/chat/completions", json=no_model, headers={"Authorization": "Bearer chat"})
    assert by_token.json()["model"] == "chat"
    # LocalAI's default (core/http/middleware/request.go l.92): the first model for the endpoint.
    assert client.post("/v1/chat/completions", json=no_model).json()["model"] == "chat"
    assert client.post("/v1/completions", json={"prompt": "x"}).json()["model"] == "chat"
    assert client.post("/v1/embeddings", json={"input": "x"}).json()["model"] == "embed"


def test_only_model_is_the_default() -> None:
    plan = make_plan("name: solo\nbackend: llama-cpp\nparameters: {model: model.gguf}\ntemplate: {chat_message: '{{ Content }}'}\n")
    with TestClient(create_app(plan, pool=FakePool(plan))) as client:
        assert client.post("/chat/completions", json={"messages": [{"role": "user", "content": "x"}]}).json()["model"] == "solo"


ERRORS = [
    ("malformed json", {"content": b"{bad"}, 400, None),
    ("not an object", {"json": [1, 2]}, 400, None),
    ("no messages", {"json": {"model": "chat", "messages": []}}, 400, "messages"),
    ("bad role", {"json": {"model": "chat", "messages": [{"role": "robot", "content": "x"}]}}, 400, "messages.0.role"),
    ("wrong type", {"json": {"model": "chat", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}}, 400, "temperature"),
    ("out of range", {"json": {"model": "chat", "messages": [{"role": "user", "content": "x"}], "top_p": 3}}, 400, "top_p"),
    ("too many n", {"json": {"model": "chat", "messages": [{"role": "user", "content": "x"}], "n": 99}}, 400, "n"),
    ("stream_options alone", {"json": {"model": "chat", "messages": [{"role": "user", "content": "x"}],
                                       "stream_options": {"include_usage": True}}}, 400, "stream_options"),
    ("too many stops", {"json": {"model": "chat", "messages": [{"role": "user", "content": "x"}], "stop": ["s"] * 257}}, 400, "stop"),
    ("stops too long", {"json": {"model": "chat", "messages": [{"role": "user", "content": "x"}], "stop": ["s" * 2049] * 2}}, 400, "stop"),
    ("negative temperature", {"json": {"model": "chat", "messages": [{"role": "user", "content": "x"}], "temperature": -1}}, 400, "temperature"),
    ("negative max_tokens", {"json": {"model": "chat", "messages": [{"role": "user", "content": "x"}], "max_tokens": -1}}, 400, "max_tokens"),
    ("tools", {"json": {"model": "chat", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}}, 400, "tools[0]"),
    ("unknown model", {"json": {"model": "gpt-4", "messages": [{"role": "user", "content": "x"}]}}, 404, "model"),
    ("embeddings-only model", {"json": {"model": "embed", "messages": [{"role": "user", "content": "x"}]}}, 400, "model"),
    ("prompt too long", {"json": {"model": "chat", "messages": [{"role": "user", "content": "[fail]"}]}}, 400, "messages"),
    ("image part", {"json": {"model": "chat", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}}, 400, "messages"),
]


@pytest.mark.parametrize("name,kwargs,status,param", ERRORS, ids=[e[0] for e in ERRORS])
def test_client_mistakes_are_openai_errors(client, name, kwargs, status, param) -> None:
    response = client.post("/v1/chat/completions", **kwargs)
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert chat(client).status_code == 200  # and the server keeps serving


def test_oversized_body_is_413(client) -> None:
    response = client.post("/v1/chat/completions", content=b"x" * (9 * 1024 * 1024))
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"


def test_unknown_route_and_method(client) -> None:
    assert client.get("/v1/nothing").json()["error"]["code"] == "not_found"
    wrong = client.get("/v1/chat/completions")
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"


def test_streaming_refusal_before_first_byte_is_an_http_error(client) -> None:
    response = client.post("/v1/chat/completions", json={
        "model": "chat", "messages": [{"role": "user", "content": "[fail]"}], "stream": True})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "context_length_exceeded"


def test_unavailable_model_is_503_with_retry_after(client, pool) -> None:
    pool.unavailable = ModelUnavailable("model 'chat' is still loading", retry_after=7)
    response = chat(client)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "7"
    assert response.json()["error"]["code"] == "model_unavailable"


def test_health_and_readiness(pool) -> None:
    app = create_app(make_plan(), pool=pool, preload=True)
    with TestClient(app) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert wait_until_ready(client) == {"status": "ready"}  # preloading runs after startup
        assert pool.preloaded
    assert pool.closed


def test_readiness_names_the_failing_models_and_when_they_are_tried_again(client, pool) -> None:
    wait_until_ready(client)
    pool.failing = {"chat": ("worker died: SIGSEGV during decode of model chat", 12.34)}
    response = client.get("/readyz")
    assert response.status_code == 503 and response.headers["retry-after"] == "12"
    assert response.json() == {"status": "failing", "models": {
        "chat": {"error": "worker died: SIGSEGV during decode of model chat", "retry_in_s": 12.3}}}


def schema_nested(depth: int) -> dict:
    schema: dict = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "array", "items": schema}
    return schema


@pytest.mark.parametrize(("body", "param", "message"), [
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {
        "type": "object", "properties": {"a": {"type": "string", "maxLength": 100000}}}}}}, "response_format",
     "response_format: maxLength 100000 at /properties/a is outside 0..4096, the sizes a grammar here enforces"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {
        "type": "string", "maxLength": 1e9}}}}, "response_format",
     "response_format: maxLength 1000000000.0 at / is outside 0..4096, the sizes a grammar here enforces"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema_nested(300)}}},
     "response_format", "response_format: the JSON Schema nests more than 64 levels deep"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"a": {"type": "array", "maxItems": 99999}}}}}], "tool_choice": "required"},
     "tools", "tools: maxItems 99999 at /properties/arguments/properties/a is outside 0..4096, the sizes a grammar "
              "here enforces"),
    ({"grammar": 'root ::= "a"{0,100000}'}, "grammar", "grammar: the repetition {0,100000} counts past 4096"),
    ({"grammar": "root ::= [a]{" + "9" * 5000 + "}"}, "grammar",
     "grammar: the repetition {" + "9" * 5000 + "} counts past 4096"),
    ({"grammar": "root ::= " + '"a" ' * 20000}, "grammar", "grammar: the grammar is longer than 65536 characters"),
    ({"grammar": "root ::= [\\x00]"}, "grammar", "grammar: the character class [\\x00] can match the NUL character, "
                                                 "which llama.cpp cannot sample (it aborts the model's process)"),
    ({"grammar": 'root ::= "a\\u0000" | [a-z]'}, "grammar", 'grammar: the string "a\\u0000" can match the NUL '
                                                            "character, which llama.cpp cannot sample (it aborts the "
                                                            "model's process)"),
])
def test_schemas_and_grammars_past_the_bounds_never_reach_the_worker(client, pool, body, param, message) -> None:
    response = chat(client, **body)
    assert response.status_code == 400, response.json()
    assert response.json()["error"] == {"message": message, "type": "invalid_request_error", "param": param,
                                        "code": None}
    assert pool.requests == []


def test_schemas_and_grammars_within_the_bounds_pass(client, pool) -> None:
    assert chat(client, grammar='root ::= "{" [a-z]{1,4096} "}"  # braces in strings and classes are text').status_code == 200
    assert chat(client, response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {
        "type": "string", "maxLength": 4096}}}).status_code == 200
    assert len(pool.requests) == 2


def test_metrics(client) -> None:
    chat(client)
    client.get("/v1/models/whatever-a-client-sends")
    text = client.get("/metrics").text
    assert 'modelyard_requests_total{model="chat",route="/chat/completions",status="200"} 1.0' in text
    assert 'modelyard_requests_total{model="",route="/models/{id}",status="404"} 1.0' in text
    assert 'modelyard_completion_tokens_total{model="chat"} 9.0' in text
    assert 'modelyard_time_to_first_token_seconds_count{model="chat"} 1.0' in text
    assert 'modelyard_model_loaded{model="chat"} 1.0' in text
    assert "whatever-a-client-sends" not in text


def test_bounded_queues_answer_429_and_503_with_retry_after() -> None:
    plan = make_plan()
    plan = plan.model_copy(update={"server": plan.server.model_copy(update={"max_queue_per_model": 2, "max_in_flight": 3})})
    with TestClient(create_app(plan, pool=FakePool(plan))) as client:
        admission = client.app.state.server.admission
        admission.enter("chat", 2)  # two generations already queued for "chat"
        busy = chat(client)
        assert (busy.status_code, busy.headers["retry-after"], busy.json()["error"]["code"]) == \
            (429, "1", "rate_limit_exceeded")
        assert client.post("/v1/completions", json={"model": "plain", "prompt": "x"}).status_code == 200
        admission.enter("plain", 1)  # the server is now full
        full = client.post("/v1/completions", json={"model": "rules", "prompt": "x"})
        assert (full.status_code, full.headers["retry-after"]) == (503, "2")
        admission.leave("chat", 2)
        admission.leave("plain", 1)
        assert chat(client).status_code == 200
        events = sse(client.post("/v1/chat/completions", json={**{"model": "chat", "stream": True},
                                                                "messages": [{"role": "user", "content": "x"}]}))
        assert events[-1] == "[DONE]"
        assert (admission.total, admission.per_model) == (0, {"chat": 0, "plain": 0})  # every place given back


def test_max_tokens_cap() -> None:
    plan = make_plan()
    plan = plan.model_copy(update={"server": plan.server.model_copy(update={"max_tokens_cap": 5})})
    pool = FakePool(plan)
    with TestClient(create_app(plan, pool=pool)) as client:
        assert chat(client, max_tokens=6).json()["error"]["param"] == "max_tokens"
        chat(client)
        assert pool.requests[-1][1].max_tokens == 5  # the YAML's 64 is capped too


def test_embeddings(client) -> None:
    import base64
    import struct

    body = client.post("/v1/embeddings", json={"model": "embed", "input": ["abcd", "[mix] x"]}).json()
    assert body == {"object": "list", "model": "embed", "usage": {"prompt_tokens": 2, "total_tokens": 2}, "data": [
        {"object": "embedding", "index": 0, "embedding": [1.0, 0.0, 0.0, 0.0]},
        {"object": "embedding", "index": 1, "embedding": [0.5, 0.5, 0.5, 0.5]}]}
    encoded = client.post("/embeddings", json={"model": "embed", "input": "[mix] x", "encoding_format": "base64"})
    raw = base64.b64decode(encoded.json()["data"][0]["embedding"])
    assert list(struct.unpack("<4f", raw)) == [0.5, 0.5, 0.5, 0.5]
    short = client.post("/v1/embeddings", json={"model": "embed", "input": "[mix]", "dimensions": 2}).json()
    assert short["data"][0]["embedding"] == pytest.approx([2 ** -0.5, 2 ** -0.5])
    # Token arrays: one array is one input; a list of arrays is one input each.
    one = client.post("/v1/embeddings", json={"model": "embed", "input": [1, 2, 3]}).json()  # "1 2 3": 5 chars
    assert [d["embedding"] for d in one["data"]] == [[0.0, 1.0, 0.0, 0.0]]
    many = client.post("/v1/embeddings", json={"model": "embed", "input": [[1, 2], [7]]}).json()
    assert [d["embedding"] for d in many["data"]] == [[0.0, 0.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0]]


@pytest.mark.parametrize("body,status,param", [
    ({"model": "chat", "input": "x"}, 400, "model"),  # a chat model serves no embeddings
    ({"model": "embed", "input": []}, 400, "input"),
    ({"model": "embed", "input": [[1], []]}, 400, "input"),
    ({"model": "embed", "input": [3, -1]}, 400, "input"),
    ({"model": "embed", "input": "x", "dimensions": 5}, 400, "dimensions"),
    ({"model": "embed", "input": "x", "encoding_format": "hex"}, 400, "encoding_format"),
    ({"model": "nope", "input": "x"}, 404, "model"),
])
def test_embedding_mistakes(client, body, status, param) -> None:
    response = client.post("/v1/embeddings", json=body)
    assert (response.status_code, response.json()["error"]["param"]) == (status, param)


def test_generation_refused_by_an_embeddings_model(client) -> None:
    response = client.post("/v1/completions", json={"model": "embed", "prompt": "x"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "unsupported_usecase"


def test_a_body_that_trickles_in_is_a_408() -> None:
    import asyncio

    from modelyard.launcher.errors import OpenAIError
    from modelyard.launcher.protocol import read_body

    class Trickle:
        headers: dict[str, str] = {}

        async def stream(self):
            yield b"{"
            await asyncio.sleep(5)
            yield b"}"

    with pytest.raises(OpenAIError) as error:
        asyncio.run(read_body(Trickle(), 1024, timeout_s=0.2))
    assert error.value.status == 408 and "did not arrive within" in error.value.message


def test_capabilities_the_backend_lacks_are_refused_before_the_worker() -> None:
    plan = make_plan(MODELS + """
- name: exl
  backend: exllama2
  parameters: {model: org/model-exl2}
  template: {chat_message: "{{ Content }}"}
""")
    pool = FakePool(plan)
    with TestClient(create_app(plan, pool=pool)) as client:
        messages = [{"role": "user", "content": "hi"}]
        refusals = {
            "response_format": {"response_format": {"type": "json_object"}},
            "tools": {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
                      "tool_choice": "required"},
            "grammar": {"grammar": 'root ::= "a"'},
        }
        for param, extra in refusals.items():
            response = client.post("/v1/chat/completions", json={"model": "exl", "messages": messages, **extra})
            assert response.status_code == 400, response.text
            error = response.json()["error"]
            assert (error["param"], error["code"]) == (param, "unsupported")
        assert pool.requests == []  # none crossed to the worker
        assert client.post("/v1/chat/completions", json={"model": "exl", "messages": messages}).status_code == 200


@pytest.mark.parametrize("grammar", [
    'root ::= [^"\\\\\\x7F\\x00-\\x1F]*',  # llama.cpp's own JSON string rule: it excludes NUL
    'root ::= "\\\\x00"',  # an escaped backslash, then "x00"
    "root ::= [a-z0-9]+",
])
def test_grammars_that_cannot_match_nul_pass(client, grammar) -> None:
    assert chat(client, grammar=grammar).status_code == 200


def _deep_tool_schema(depth: int) -> dict:
    schema: dict = {"type": "object"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


@pytest.mark.parametrize(("raw", "message"), [
    ("[" * 1000 + "]" * 1000, "the request body nests too deeply"),
    ('{"model": "chat", "prompt": "x", "max_tokens": ' + "9" * 5000 + "}",
     "the request body is not valid JSON: Exceeds the limit (4300 digits) for integer string conversion: value has "
     "5000 digits; use sys.set_int_max_str_digits() to increase the limit"),
    ('{"model": "chat", "prompt": "a\\ud800b"}',
     "the request body holds a lone UTF-16 surrogate (\\ud800-\\udfff): it is not text"),
    ('{"model": "chat", "prompt": "x", "stop": ["\\udfff"]}',
     "the request body holds a lone UTF-16 surrogate (\\ud800-\\udfff): it is not text"),
])
def test_hostile_json_bodies_are_400_not_500(client, pool, raw, message) -> None:
    response = client.post("/v1/completions", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"] == {"message": message, "type": "invalid_request_error", "param": None,
                                        "code": "invalid_json"}
    assert pool.requests == []


def test_a_surrogate_pair_is_text_and_passes(client) -> None:
    response = client.post("/v1/completions", content='{"model": "chat", "prompt": "\\ud83d\\ude00"}',
                           headers={"content-type": "application/json"})
    assert response.status_code == 200


def test_a_tool_schema_nested_too_deep_is_400_before_it_is_validated(client) -> None:
    response = chat(client, tools=[{"type": "function", "function": {"name": "f", "parameters": _deep_tool_schema(150)}}])
    assert response.status_code == 400
    assert response.json()["error"]["message"] == ("tools[0].function.parameters: the JSON Schema nests more than 64 "
                                                   "levels deep")


TEMPLATED = """
- name: t
  backend: llama-cpp
  context_size: 1024
  parameters: {model: model.gguf}
  template:
    completion: "{% if Input == 'zero' %}{{ 1 // 0 }}{% elif Input == 'range' %}{% for i in range(10**9) %}{% endfor %}{% elif Input == 'many' %}{{ Input * 20000 }}{% elif Input == 'refuse' %}{{ raise_exception('roles must alternate') }}{% else %}{{ Input }}{% endif %}"
"""


@pytest.mark.parametrize(("prompt", "message"), [
    ("zero", "model 't': template.completion failed on this request: ZeroDivisionError: integer division or modulo "
             "by zero"),
    ("range", "model 't': template.completion failed on this request: OverflowError: Range too big. The sandbox "
              "blocks ranges larger than MAX_RANGE (100000)."),
    ("refuse", "model 't': template.completion refused this request: roles must alternate"),
    ("many", "the prompt is 80000 characters: more than model 't''s context can hold (at most 32768)"),
])
def test_a_template_failing_on_a_request_is_400_and_a_prompt_too_long_is_refused_before_the_worker(
        prompt, message) -> None:
    plan = make_plan(TEMPLATED)
    pool = FakePool(plan)
    with TestClient(create_app(plan, pool=pool)) as client:
        response = client.post("/v1/completions", json={"model": "t", "prompt": prompt})
        assert response.status_code == 400, response.text
        assert response.json()["error"]["message"] == message
        assert pool.requests == []
        assert client.post("/v1/completions", json={"model": "t", "prompt": "fine"}).status_code == 200


def test_a_client_leaving_mid_body_is_no_server_error(caplog) -> None:
    import asyncio

    plan = make_plan()
    app = create_app(plan, pool=FakePool(plan))
    messages = [{"type": "http.request", "body": b'{"model": "chat", "prom', "more_body": True},
                {"type": "http.disconnect"}]
    sent: list[dict] = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/completions", "raw_path": b"/v1/completions",
             "query_string": b"", "headers": [(b"content-type", b"application/json")], "scheme": "http",
             "server": ("testserver", 80), "client": ("127.0.0.1", 1), "root_path": "", "http_version": "1.1",
             "asgi": {"version": "3.0"}}
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 499
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


def test_a_bug_is_a_500_logged_once_with_the_request_id(caplog) -> None:
    class BrokenPool(FakePool):
        async def generate(self, model, request):
            raise KeyError("a bug")
            yield  # pragma: no cover

    import logging

    from modelyard.launcher.logs import REQUEST_ID

    seen: list[str] = []

    class Ids(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.ERROR:
                seen.append(REQUEST_ID.get())  # the request's id, as the real log filter reads it

    ids = Ids()
    logging.getLogger().addHandler(ids)
    plan = make_plan()
    try:
        with TestClient(create_app(plan, pool=BrokenPool(plan)), raise_server_exceptions=False) as client:
            response = client.post("/v1/completions", json={"model": "chat", "prompt": "x"},
                                   headers={"x-request-id": "r-7"})
    finally:
        logging.getLogger().removeHandler(ids)
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and errors[0].exc_info is not None
    assert seen == ["r-7"]


# A chat template whose work grows with the fourth power of the client's message count.
QUARTIC = """
- name: quartic
  backend: llama-cpp
  parameters: {model: model.gguf}
  template:
    chat: "{% for a in messages %}{% for b in messages %}{% for c in messages %}{% for d in messages %}{{ d.content }}{% endfor %}{% endfor %}{% endfor %}{% endfor %}"
"""


def test_a_template_looping_on_the_clients_messages_stops_at_its_time_budget(monkeypatch) -> None:
    import time

    from modelyard.launcher import prompts

    monkeypatch.setattr(prompts, "RENDER_BUDGET_S", 0.3)
    plan = make_plan(QUARTIC)
    with TestClient(create_app(plan, pool=FakePool(plan))) as client:
        started = time.monotonic()
        response = client.post("/v1/chat/completions", json={
            "model": "quartic", "messages": [{"role": "user", "content": "x"}] * 80})
        assert time.monotonic() - started < 3
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "model 'quartic': template.chat took more than 0.3 s for this request"


@pytest.mark.parametrize("prompt", [[5, 6, 7], [[5, 6, 7]]])
def test_a_token_array_prompt_reaches_the_backend_as_is(client, pool, prompt) -> None:
    response = client.post("/v1/completions", json={"model": "chat", "prompt": prompt})
    assert response.status_code == 200, response.text
    request = pool.requests[-1][1]
    assert (request.prompt, request.prompt_tokens) == ("", (5, 6, 7))  # no completion template applied


@pytest.mark.parametrize(("body", "param", "message"), [
    ({"model": "chat", "prompt": []}, "prompt", "prompt is an empty token array"),
    ({"model": "chat", "prompt": [[1], [2], [3]], "n": 3}, "prompt", "the prompts times n must be at most 8 choices"),
    ({"model": "chat", "prompt": [1, 2], "echo": True}, "echo", "echo needs a text prompt"),
    ({"model": "chat", "prompt": list(range(9000))}, "prompt",
     "the prompt is 9000 tokens, which does not fit the model's 8192-token context"),
])
def test_token_array_prompts_that_cannot_run_are_400(client, pool, body, param, message) -> None:
    response = client.post("/v1/completions", json=body)
    assert response.status_code == 400
    assert (response.json()["error"]["param"], response.json()["error"]["message"]) == (param, message)
    assert pool.requests == []


def test_logit_bias_reaches_the_backend_and_is_validated_as_openai_does(client, pool) -> None:
    assert chat(client, logit_bias={"17": -100, "5": 2.5}).status_code == 200
    assert pool.requests[-1][1].logit_bias == ((5, 2.5), (17, -100.0))
    for bias, message in (({"x": 1}, "keys are token ids, got 'x'"), ({"-3": 1}, "keys are token ids, got '-3'"),
                          ({"7": 101}, "biases are from -100 to 100, got 101.0 for token 7")):
        response = chat(client, logit_bias=bias)
        assert response.status_code == 400
        assert response.json()["error"]["message"] == f"logit_bias: {message}"


@pytest.mark.parametrize("seed", [2**64, -(2**63) - 1])
def test_a_seed_outside_64_bits_is_400(client, seed) -> None:
    response = chat(client, seed=seed)
    assert response.status_code == 400 and response.json()["error"]["param"] == "seed"


def test_several_prompts_give_n_choices_each_in_openais_index_order(client, pool) -> None:
    body = client.post("/v1/completions", json={"model": "chat", "prompt": ["[echo]One", "Two"], "n": 2}).json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    assert sorted(r.prompt for _, r in pool.requests[-4:]) == ["Q: Two", "Q: Two", "Q: [echo]One", "Q: [echo]One"]
    assert body["choices"][0]["text"] == body["choices"][1]["text"] == "Q: [echo]One"  # the echo marker's reply
    assert body["choices"][2]["text"] == "Hello world, this is a fake model."
    tokens = client.post("/v1/completions", json={"model": "chat", "prompt": [[7, 8], [9]]}).json()
    assert len(tokens["choices"]) == 2 and [r.prompt_tokens for _, r in pool.requests[-2:]] in ([(7, 8), (9,)],
                                                                                                [(9,), (7, 8)])
    # Each prompt counted once, every choice's completion.
    alone = [client.post("/v1/completions", json={"model": "chat", "prompt": p}).json()["usage"]
             for p in ("[echo]One", "Two")]
    assert body["usage"]["prompt_tokens"] == alone[0]["prompt_tokens"] + alone[1]["prompt_tokens"]
    assert body["usage"]["completion_tokens"] == 2 * (alone[0]["completion_tokens"] + alone[1]["completion_tokens"])
    events = sse(client.post("/v1/completions", json={"model": "chat", "prompt": ["a", "b"], "stream": True,
                                                      "stream_options": {"include_usage": True}}))
    assert sorted({e["choices"][0]["index"] for e in events[:-1] if e["choices"]}) == [0, 1]


def test_streamed_text_offsets_match_the_whole_answers(client) -> None:
    ask = {"model": "chat", "prompt": "x", "logprobs": 1, "max_tokens": 6}
    whole = client.post("/v1/completions", json=ask).json()["choices"][0]["logprobs"]["text_offset"]
    events = sse(client.post("/v1/completions", json={**ask, "stream": True}))
    streamed = [o for e in events[:-1] if e["choices"] and e["choices"][0]["logprobs"]
                for o in e["choices"][0]["logprobs"]["text_offset"]]
    assert streamed == whole and whole[-1] > 0


def test_a_heavy_template_renders_off_the_event_loop(monkeypatch) -> None:
    import asyncio
    import time

    import httpx

    from modelyard.launcher import prompts

    monkeypatch.setattr(prompts, "RENDER_BUDGET_S", 1.5)
    plan = make_plan(QUARTIC)
    app = create_app(plan, pool=FakePool(plan))

    async def race() -> tuple[float, float, int]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            started = time.monotonic()
            heavy = asyncio.create_task(client.post("/v1/chat/completions", json={
                "model": "quartic", "messages": [{"role": "user", "content": "x"}] * 80}))
            await asyncio.sleep(0.2)  # the render is under way
            assert (await client.get("/healthz")).status_code == 200
            healthy = time.monotonic() - started
            response = await heavy
            return healthy, time.monotonic() - started, response.status_code

    healthy, heavy, status = asyncio.run(race())
    assert status == 400 and heavy >= 1.5  # the render ran to its budget...
    assert healthy < 1.0  # ...while /healthz was answered


def test_reply_prefix_is_sent_first_and_the_yaml_grammar_reaches_edits_only() -> None:
    """``template.reply_prefix`` is streamed first and starts the reply (core/backend/llm.go
    l.240, l.325); the YAML ``grammar`` is replaced by the request's on chat and completions
    (chat.go l.319, completion.go l.111), so only edits get it."""
    plan = make_plan("name: pre\nbackend: llama-cpp\nparameters: {model: model.gguf}\ngrammar: 'root ::= \"x\"'\n"
                     "template: {chat_message: '{{ Content }}', reply_prefix: 'Sure: '}\n")
    pool = FakePool(plan)
    with TestClient(create_app(plan, pool=pool)) as client:
        messages = [{"role": "user", "content": "hi"}]
        reply = client.post("/v1/chat/completions", json={"model": "pre", "messages": messages}).json()
        assert reply["choices"][0]["message"]["content"] == "Sure: Hello world, this is a fake model."
        assert pool.requests[-1][1].grammar is None
        events = sse(client.post("/v1/chat/completions", json={"model": "pre", "messages": messages, "stream": True}))
        contents = [e["choices"][0]["delta"].get("content") for e in events if e != "[DONE]" and e["choices"]]
        assert [c for c in contents if c][0] == "Sure: "
        completion = client.post("/v1/completions", json={"model": "pre", "prompt": "x"}).json()
        assert completion["choices"][0]["text"] == "Sure: Hello world, this is a fake model."
        assert pool.requests[-1][1].grammar is None
        client.post("/v1/edits", json={"model": "pre", "instruction": "Fix", "input": "teh"})
        assert pool.requests[-1][1].grammar == 'root ::= "x"'


def test_a_gguf_file_dropped_in_after_launch_is_listed_and_served(tmp_path) -> None:
    """LocalAI serves a models-directory file a request names, with an implicit config
    (core/http/middleware/request.go), and lists loose files in /v1/models; names may hold '/'."""
    from modelyard.launcher.loose_models import LooseModels

    from .file_server import tiny_gguf

    plan = make_plan()
    pool = FakePool(plan)
    app = create_app(plan, pool=pool, loose_models=LooseModels(tmp_path, {}))
    (tmp_path / "sub").mkdir()
    (tmp_path / ".hidden.gguf").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("x")
    with TestClient(app) as client:
        tiny_gguf(tmp_path / "late.gguf")
        tiny_gguf(tmp_path / "sub" / "deep.gguf")
        (tmp_path / "broken.gguf").write_bytes(b"not a gguf")
        listed = [m["id"] for m in client.get("/v1/models").json()["data"]]
        assert listed == ["chat", "embed", "plain", "rules", "broken.gguf", "late.gguf"]
        for name in ("late.gguf", "sub/deep.gguf"):
            reply = client.post("/v1/completions", json={"model": name, "prompt": "x", "max_tokens": 3})
            assert reply.status_code == 200 and reply.json()["model"] == name
            assert pool.requests[-1][0] == name
        assert "late.gguf" in [m["id"] for m in client.get("/v1/models").json()["data"]]
        refused = client.post("/v1/completions", json={"model": "broken.gguf", "prompt": "x"})
        assert (refused.status_code, refused.json()["error"]["code"]) == (400, "model_not_servable")
        for name in ("../etc.gguf", "sub/../../x.gguf", ".hidden.gguf", "notes.txt", "/etc/passwd.gguf"):
            missing = client.post("/v1/completions", json={"model": name, "prompt": "x"})
            assert missing.status_code == 404, name


def test_function_name_and_suppress_system_prompt_are_localais() -> None:
    """``.FunctionName`` is the message's ``name`` (core/templates/evaluator.go l.136);
    ``.SuppressSystemPrompt`` is true once a system message was printed by the role prefixes
    (l.196), so a chat template can leave the YAML's system prompt out then."""
    plan = make_plan(
        "- name: named\n  backend: llama-cpp\n  parameters: {model: model.gguf}\n"
        "  template: {chat_message: '{{.RoleName}}[{{.FunctionName}}]: {{.Content}}'}\n"
        "- name: prefixed\n  backend: llama-cpp\n  parameters: {model: model.gguf}\n  system_prompt: YAML-SYS\n"
        "  roles: {system: 'S: ', user: 'U: '}\n"
        "  template: {chat: \"{{if not .SuppressSystemPrompt}}{{.SystemPrompt}}\\n{{end}}{{.Input}}\"}\n")
    pool = FakePool(plan)
    with TestClient(create_app(plan, pool=pool)) as client:
        client.post("/v1/chat/completions", json={"model": "named", "messages": [
            {"role": "user", "content": "hi", "name": "ann"}, {"role": "tool", "content": "18", "name": "get_weather",
                                                                "tool_call_id": "c1"}]})
        assert pool.requests[-1][1].prompt == "user[ann]: hi\ntool[get_weather]: 18"
        client.post("/v1/chat/completions", json={"model": "prefixed", "messages": [{"role": "user", "content": "hi"}]})
        assert pool.requests[-1][1].prompt == "YAML-SYS\nU: hi"
        client.post("/v1/chat/completions", json={"model": "prefixed", "messages": [
            {"role": "system", "content": "own"}, {"role": "user", "content": "hi"}]})
        assert pool.requests[-1][1].prompt == "S: own\nU: hi"


def test_tokenize_detokenize_capabilities_and_version(client) -> None:
    """LocalAI's /v1/tokenize {model, content} -> {tokens} and /v1/detokenize {model, tokens} ->
    {content} (core/schema/tokenize.go), llama.cpp's add_special / with_pieces, LocalAI's
    /v1/models/capabilities and /version."""
    tokens = client.post("/v1/tokenize", json={"model": "chat", "content": "hi"}).json()
    assert tokens == {"tokens": [1, ord("h"), ord("i")]}
    assert client.post("/tokenize", json={"model": "chat", "content": "hi", "add_special": False}).json() == {
        "tokens": [ord("h"), ord("i")]}
    pieces = client.post("/tokenize", json={"model": "chat", "content": "hi", "with_pieces": True,
                                            "add_special": False}).json()
    assert pieces == {"tokens": [{"id": ord("h"), "piece": "h"}, {"id": ord("i"), "piece": "i"}]}
    assert client.post("/v1/detokenize", json={"model": "chat", "tokens": tokens["tokens"]}).json() == {"content": "hi"}
    bad = client.post("/v1/detokenize", json={"model": "chat", "tokens": [-1]})
    assert (bad.status_code, bad.json()["error"]["param"]) == (400, "tokens")
    outside = client.post("/v1/detokenize", json={"model": "chat", "tokens": [2**30]})
    assert outside.status_code == 400 and "outside the model's vocabulary" in outside.json()["error"]["message"]
    caps = {m["id"]: m for m in client.get("/v1/models/capabilities").json()["data"]}
    assert caps["chat"]["capabilities"] == ["chat", "completion", "edit"]
    assert caps["embed"]["capabilities"] == ["embeddings"]
    assert client.get("/version").json()["name"] == "modelyard"
    assert "/v1/tokenize" in client.get("/openapi.json").json()["paths"]


def test_the_stop_sequence_that_ended_a_choice_is_its_stop_reason(client) -> None:
    body = chat(client, "hi", stop=[" fake", "zzz"]).json()
    assert body["choices"][0]["message"]["content"] == "Hello world, this is a"
    assert body["choices"][0]["finish_reason"] == "stop" and body["choices"][0]["stop_reason"] == " fake"

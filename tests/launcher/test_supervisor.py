"""Real worker processes (running the fake backend) under the pool's supervision."""

from __future__ import annotations

import json
import re
import time

import pytest
from starlette.testclient import TestClient

from modelyard.launcher.app import create_app
from modelyard.launcher.pool import PoolSettings, WorkerPool

from .fakes import make_plan

FAKE = {"llama-cpp": "tests.launcher.fake_backend:FakeBackend"}
PLAN = """
- name: m
  backend: llama-cpp
  parameters: {model: model.gguf}
  template: {chat_message: "{{ Content }}"}
- name: broken
  description: fail-load
  backend: llama-cpp
  parameters: {model: model.gguf}
  template: {chat_message: "{{ Content }}"}
"""


@pytest.fixture
def served():
    plan = make_plan(PLAN)
    pool = WorkerPool(plan, backends=FAKE, settings=PoolSettings(load_wait_s=20, backoff_initial_s=2))
    with TestClient(create_app(plan, pool=pool)) as client:
        yield client, pool
    for worker in pool.workers.values():
        assert worker.process is None or not worker.process.is_alive(), "a worker outlived the server"


def ask(client, content, model="m", **body):
    return client.post("/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": content}], **body})


def test_generation_through_a_worker_process(served) -> None:
    client, pool = served
    assert ask(client, "hi").json()["choices"][0]["message"]["content"] == "Hello world, this is a fake model."
    assert pool.worker_pid("m") is not None


def test_worker_crash_mid_stream_gives_an_error_event_then_recovers(served) -> None:
    client, pool = served
    with client.stream("POST", "/v1/chat/completions", json={
            "model": "m", "messages": [{"role": "user", "content": "[crash]"}], "stream": True}) as response:
        assert response.status_code == 200
        lines = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    error = json.loads(lines[-2])["error"]
    assert error["code"] == "worker_crashed"
    assert error["message"] == "worker died: exit status 3 during decode of model m"
    # The fake dies after 3 tokens; one may still be in the worker's outbox when it does.
    assert 2 <= sum(1 for line in lines[:-2] if json.loads(line)["choices"][0]["delta"].get("content")) <= 3
    assert ask(client, "hi").status_code == 200  # restarted on the next request
    assert pool.workers["m"].restarts == 1
    assert 'modelyard_worker_restarts_total{model="m"} 1.0' in client.get("/metrics").text


def test_client_disconnect_cancels_generation(served) -> None:
    client, _ = served
    ask(client, "warm up")
    with client.stream("POST", "/v1/chat/completions", json={
            "model": "m", "messages": [{"role": "user", "content": "[slow]"}], "stream": True}) as response:
        for i, _line in enumerate(response.iter_lines()):
            if i > 4:
                break  # leave mid-stream: 200 tokens x 20 ms would take 4 s
    start = time.monotonic()
    assert ask(client, "hi").status_code == 200
    # One worker serves one request at a time: this finishes quickly only if the slow one stopped.
    assert time.monotonic() - start < 2.5
    metrics = client.get("/metrics").text  # counted (and logged), not only a 200 with its duration
    assert 'modelyard_generations_abandoned_total{model="m"} 1.0' in metrics


def test_load_failure_is_503_then_cools_down(served) -> None:
    client, _ = served
    first = ask(client, "hi", model="broken")
    assert first.status_code == 503 and "Retry-After" in first.headers
    assert "fail loading" in first.json()["error"]["message"]
    again = ask(client, "hi", model="broken")
    assert again.status_code == 503 and "retrying in" in again.json()["error"]["message"]
    assert ask(client, "hi").status_code == 200  # the other model is unaffected


def test_a_worker_that_dies_on_every_first_decode_cools_down_instead_of_restart_looping(served) -> None:
    client, pool = served
    first = ask(client, "[segv]")
    assert first.status_code == 503 and first.headers["retry-after"] == "1"
    assert first.json()["error"]["message"] == "worker died: SIGSEGV during decode of model m"
    # The first crash restarts at once (a one-off); the second, with no request answered in
    # between, starts the backoff: the next request is refused with Retry-After, not restarted.
    assert ask(client, "[segv]").status_code == 503
    cooling = ask(client, "hi")
    assert cooling.status_code == 503 and int(cooling.headers["retry-after"]) >= 1
    assert re.fullmatch(r"model 'm' failed \(worker died: SIGSEGV during decode of model m\); retrying in \d+ s",
                        cooling.json()["error"]["message"])
    assert pool.workers["m"].restarts == 2
    ready = client.get("/readyz")
    assert ready.status_code == 503 and "retry-after" in ready.headers
    assert ready.json()["status"] == "failing"
    assert ready.json()["models"]["m"]["error"] == "worker died: SIGSEGV during decode of model m"
    # Once the cooldown is over a good request brings it back, and it is healthy again.
    time.sleep(pool.workers["m"].failure[1] + 0.1)
    assert ask(client, "hi").status_code == 200
    assert client.get("/readyz").json() == {"status": "ready"}


def test_readyz_is_503_while_a_preloaded_model_failed_to_load() -> None:
    plan = make_plan(PLAN)
    pool = WorkerPool(plan, backends=FAKE, settings=PoolSettings(load_wait_s=20, backoff_initial_s=30))
    with TestClient(create_app(plan, pool=pool, preload=True)) as client:
        deadline = time.monotonic() + 20
        while (ready := client.get("/readyz")).json()["status"] == "starting" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ready.status_code == 503
        failing = ready.json()["models"]
        assert list(failing) == ["broken"]  # m loaded
        assert failing["broken"]["error"] == "load failed: RuntimeError: this model is configured to fail loading"
        assert 0 < failing["broken"]["retry_in_s"] <= 30
        assert ask(client, "hi").status_code == 200


LIFECYCLE_PLAN = """
- name: a
  backend: llama-cpp
  parameters: {model: model.gguf}
  template: {chat_message: "{{ Content }}"}
- name: b
  backend: llama-cpp
  parameters: {model: model.gguf}
  template: {chat_message: "{{ Content }}"}
"""


def lifecycle(settings: PoolSettings):
    plan = make_plan(LIFECYCLE_PLAN)
    pool = WorkerPool(plan, backends=FAKE, settings=settings)
    return TestClient(create_app(plan, pool=pool)), pool


def resident(pool) -> list[str]:
    return sorted(name for name, w in pool.workers.items() if w.resident)


def test_idle_workers_unload_and_come_back_on_the_next_request() -> None:
    client, pool = lifecycle(PoolSettings(load_wait_s=20, idle_unload_s=0.5))
    with client:
        assert ask(client, "hi", model="a").status_code == 200
        first_pid = pool.worker_pid("a")
        deadline = time.monotonic() + 10
        while resident(pool) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert resident(pool) == [], "the idle worker should have been unloaded"
        assert pool.workers["a"].restarts == 0  # an unload is not a crash
        assert ask(client, "hi", model="a").status_code == 200
        assert pool.worker_pid("a") not in (None, first_pid)


def test_resident_cap_evicts_the_least_recently_used_idle_worker_never_a_busy_one() -> None:
    client, pool = lifecycle(PoolSettings(load_wait_s=20, max_resident=1))
    with client:
        assert ask(client, "hi", model="a").status_code == 200
        assert ask(client, "hi", model="b").status_code == 200
        assert resident(pool) == ["b"] and pool.workers["a"].restarts == 0
        # While b streams, a cannot take its place: 503 with Retry-After, and b finishes whole.
        with client.stream("POST", "/v1/chat/completions", json={
                "model": "b", "messages": [{"role": "user", "content": "[slow]"}], "stream": True,
                "max_tokens": 40}) as response:
            stream = response.iter_lines()
            next(stream)
            refused = ask(client, "hi", model="a")
            lines = [line for line in stream if line.startswith("data: ")]
        assert refused.status_code == 503 and refused.headers["retry-after"] == "5"
        assert "all 1 resident models are busy" in refused.json()["error"]["message"]
        assert lines[-1] == "data: [DONE]" and '"finish_reason": "length"' in lines[-2] + lines[-3]
        assert ask(client, "hi", model="a").status_code == 200  # b is idle now: evicted for a
        assert resident(pool) == ["a"]


def test_a_stopped_worker_is_killed_after_the_stall_timeout_and_its_requests_fail() -> None:
    import os
    import signal
    from pathlib import Path

    plan = make_plan(PLAN)
    pool = WorkerPool(plan, backends=FAKE, settings=PoolSettings(load_wait_s=20, stall_timeout_s=1.5))
    with TestClient(create_app(plan, pool=pool)) as client:
        assert ask(client, "hi").status_code == 200
        pid = pool.worker_pid("m")
        fds_before = len(os.listdir("/proc/self/fd"))
        with client.stream("POST", "/v1/chat/completions", json={
                "model": "m", "messages": [{"role": "user", "content": "[slow]"}], "stream": True}) as response:
            lines = response.iter_lines()
            next(lines)
            os.kill(pid, signal.SIGSTOP)  # as a debugger or the OOM killer's freezer would
            started = time.monotonic()
            rest = [line[6:] for line in lines if line.startswith("data: ")]
        assert time.monotonic() - started < 6
        assert rest[-1] == "[DONE]"
        error = json.loads(rest[-2])["error"]
        assert (error["code"], error["message"]) == (
            "worker_crashed", "worker stalled: no progress for 1.5 s during decode of model m; it was killed and restarts")
        assert ask(client, "hi").status_code == 200  # a fresh worker
        assert pool.worker_pid("m") != pid
        # The dead worker's socket is closed and its socket file gone.
        assert len(os.listdir("/proc/self/fd")) <= fds_before
        assert len(list(Path(pool._socket_dir).glob("*.sock"))) == 1


ENGINE_PLAN = """
- name: e
  description: spawns-engine
  backend: llama-cpp
  parameters: {model: model.gguf}
  template: {chat_message: "{{ Content }}"}
"""


def _gone(pid: int, within_s: float = 5) -> bool:
    """True once ``pid`` has exited (a zombie waiting for init counts as gone)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except OSError:
            return True
        time.sleep(0.05)
    return False


def test_a_dead_engine_fails_its_request_and_the_worker_is_replaced(served) -> None:
    client, pool = served
    ask(client, "warm up")
    first = pool.worker_pid("m")
    with client.stream("POST", "/v1/chat/completions", json={
            "model": "m", "messages": [{"role": "user", "content": "[dead]"}], "stream": True}) as response:
        lines = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    error = json.loads(lines[-2])["error"]
    assert (error["code"], error["message"]) == ("worker_crashed", "the fake engine died")
    assert _gone(first), "the worker should exit once its engine is dead"
    deadline = time.monotonic() + 5
    while "died" not in pool.workers["m"].last_error and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pool.workers["m"].last_error == "the engine of model m died (the fake engine died); its worker restarts"
    assert ask(client, "hi").status_code == 200
    assert pool.worker_pid("m") not in (None, first) and pool.workers["m"].restarts == 1


def test_processes_an_engine_starts_are_stopped_with_its_worker_on_crash_and_on_shutdown() -> None:
    """vLLM's engine core is a child of the worker: the worker's process group goes with it."""
    plan = make_plan(ENGINE_PLAN)
    pool = WorkerPool(plan, backends=FAKE, settings=PoolSettings(load_wait_s=20))
    with TestClient(create_app(plan, pool=pool)) as client:
        crashed_engine = int(ask(client, "[engine-pid]", model="e").json()["choices"][0]["message"]["content"])
        with client.stream("POST", "/v1/chat/completions", json={
                "model": "e", "messages": [{"role": "user", "content": "[crash]"}], "stream": True}) as response:
            list(response.iter_lines())
        assert _gone(crashed_engine), "a crashed worker's engine process outlived it"
        engine = int(ask(client, "[engine-pid]", model="e").json()["choices"][0]["message"]["content"])
        assert engine != crashed_engine
    assert _gone(engine), "the engine process outlived the server"

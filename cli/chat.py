"""``modelyard chat``: the console's chat in a terminal. Against a running server (``--url``),
or one it starts for the session (``modelyard launch`` with the given PATHS, or the embedded
default model) and stops at the end."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import click
import httpx

DEFAULT_URL = "http://127.0.0.1:8080"
START_TIMEOUT_S = 300  # a first launch may build nothing, but it loads a model


def _reachable(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def _server(url: str | None, paths: tuple[str, ...]) -> Iterator[str]:
    """The base URL of a server to talk to: ``url`` (which must answer), or with ``paths`` a
    server started for them, or the default URL when a server answers there, else one started
    for the embedded default model."""
    if url is not None:
        if not _reachable(url):
            raise click.UsageError(f"no modelyard server answers at {url}")
        yield url.rstrip("/")
        return
    if not paths and _reachable(DEFAULT_URL):
        yield DEFAULT_URL
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    click.echo(f"starting a server for this chat (modelyard launch {' '.join(paths)} --port {port}) ...", err=True)
    process = subprocess.Popen([sys.executable, "-m", "modelyard.cli.main", "launch", *paths, "--port", str(port),
                                "--no-console", "--log-level", "warning"], start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _ready(base):
            if process.poll() is not None:
                raise click.ClickException(f"the server exited with status {process.returncode} (see above)")
            if time.monotonic() > deadline:
                raise click.ClickException(f"the server was not ready after {START_TIMEOUT_S} s")
            time.sleep(0.5)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _stream(client: httpx.Client, body: dict) -> Iterator[dict]:
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            response.read()
            message = response.json().get("error", {}).get("message", response.text)
            raise click.ClickException(f"the server refused the request ({response.status_code}): {message}")
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    raise click.ClickException(chunk["error"].get("message", "the generation failed"))
                yield chunk


@click.command("chat")
@click.argument("model", required=False)
@click.option("--url", default=None, help=f"A running server. [default: {DEFAULT_URL} if a server answers there, "
                                          "else one started for the chat]")
@click.option("--models", "paths", multiple=True, metavar="PATH",
              help="Start a server for the chat with these model files or directories (as `modelyard launch "
                   "PATHS`); it stops when the chat ends.")
@click.option("--api-key", envvar="MODELYARD_API_KEY", help="The server's API key (or MODELYARD_API_KEY).")
@click.option("--system", default=None, help="A system prompt.")
@click.option("--temperature", type=click.FloatRange(0, 2), default=None, help="Sampling temperature.")
@click.option("--max-tokens", type=click.IntRange(min=1), default=None, help="Tokens per answer at most.")
def chat_command(model, url, paths, api_key, system, temperature, max_tokens) -> None:
    """Chat with MODEL in the terminal, answers streamed and rendered as Markdown.

    Type a message and press Enter; /reset starts over, /exit (or Ctrl-D) ends. Without MODEL,
    the server's first model.
    """
    from rich.console import Console
    from rich.live import Live
    from rich.markdown import Markdown

    console = Console()
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with _server(url, paths) as base, httpx.Client(base_url=base, headers=headers, timeout=None) as client:
        listed = client.get("/v1/models")
        if listed.status_code == 401:
            raise click.ClickException("the server requires an API key: give --api-key or MODELYARD_API_KEY")
        names = [m["id"] for m in listed.json()["data"]]
        if model is None:
            if not names:
                raise click.ClickException("the server serves no model")
            model = names[0]
        elif model not in names:
            raise click.ClickException(f"the server does not serve {model!r} (it serves: {', '.join(names)})")
        console.print(f"[bold]{model}[/bold] at {base}. /reset starts over, /exit ends.", highlight=False)
        history: list[dict] = [{"role": "system", "content": system}] if system else []
        while True:
            try:
                text = console.input("[bold green]> [/bold green]")
            except (EOFError, KeyboardInterrupt):
                break
            if text.strip() in ("/exit", "/quit"):
                break
            if text.strip() == "/reset":
                history = history[:1] if system else []
                continue
            if not text.strip():
                continue
            history.append({"role": "user", "content": text})
            body = {"model": model, "messages": history, "stream": True, "stream_options": {"include_usage": True}}
            body.update({k: v for k, v in (("temperature", temperature), ("max_tokens", max_tokens)) if v is not None})
            answer, reasoning, usage, started = "", "", None, time.monotonic()
            try:
                with Live(Markdown(""), console=console, refresh_per_second=12, transient=False) as live:
                    for chunk in _stream(client, body):
                        usage = chunk.get("usage") or usage
                        for choice in chunk.get("choices", []):
                            delta = choice.get("delta", {})
                            answer += delta.get("content") or ""
                            reasoning += delta.get("reasoning_content") or ""
                        live.update(Markdown(answer or (f"*thinking: {reasoning[-200:]}*" if reasoning else "")))
            except KeyboardInterrupt:  # stops this answer; the chat goes on
                console.print("[dim](stopped)[/dim]")
            seconds = time.monotonic() - started
            if usage:
                tokens = usage["completion_tokens"]
                console.print(f"[dim]{tokens} tokens, {tokens / max(seconds, 1e-3):.1f} tok/s[/dim]", highlight=False)
            history.append({"role": "assistant", "content": answer})

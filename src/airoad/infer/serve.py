"""`airoad serve RUN_DIR`: an OpenAI-compatible HTTP API and a side-by-side page, on one model.

    airoad serve outputs/my_run                          # http://127.0.0.1:8000/
    curl http://127.0.0.1:8000/v1/chat/completions -d '{"model": "tuned", "messages": [...]}'

Endpoints: ``POST /v1/chat/completions`` (streamed as server-sent events or not; the contract is
:mod:`airoad.infer.serve_api`), ``GET /v1/models`` (``tuned`` and ``base``: the same weights, the
adapters disabled for ``base``; plus an ``airoad`` object with the run, base and defaults the page
shows), ``GET /health`` and ``GET /`` (the page, ``page.html``: one static file).

How requests are answered: one worker thread owns the model (:class:`Engine`) and answers one
request at a time, streaming through :mod:`airoad.core.model.stream` with a KV cache per side (a
chat that resends its history prefills only the new turn). At most ``--queue`` requests wait
beside the one being answered; more get HTTP 429 at once, never a crash. A client that disconnects
stops its generation at the next token (streamed: the response's generator is cancelled; not
streamed: the handler watches the connection).

Safety: binds loopback unless ``--host`` says otherwise, which needs ``--api_key`` (then every
request but the page itself carries ``Authorization: Bearer KEY``; the page is a static file and
asks for the key). Bodies above ``--max_body_kb`` are refused before they are parsed; no request
can name a file. One log line per request on stdout: method, path, status, model, tokens in/out,
seconds, finish.
"""

# No `from __future__ import annotations` here: FastAPI reads the route functions' annotations
# (the request class, imported only when the server starts) as objects, not strings.
import asyncio
import hmac
import importlib.resources
import importlib.util
import json
import queue
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from airoad.core.base.errors import UserError
from airoad.infer.loading import Loaded, load
from airoad.infer.schema import ServeConfig
from airoad.infer.serve_api import (
    Request,
    RequestError,
    check_request,
    chunk,
    completion,
    completion_id,
    error_body,
    parse_json,
)

SERVE_EXTRA = 'pip install -e ".[serve]"  (fastapi and uvicorn)'


@dataclass
class Job:
    """One request handed to the worker: what to answer, and the event loop queue its pieces go to."""

    request: Request
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancel: threading.Event = field(default_factory=threading.Event)

    def send(self, kind: str, value: Any) -> None:
        """From the worker thread: ("piece", text), ("end", stats) or ("error", message)."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self.cancel.set()


class Engine:
    """The one worker that owns the model; see the module docstring."""

    def __init__(self, loaded: Loaded, waiting: int, seed: int):
        self.loaded = loaded
        self.seed = seed
        self.answered = 0
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._slots = threading.BoundedSemaphore(waiting + 1)  # the one answered + those waiting
        self._caches: dict[str, Any] = {}
        self._thread = threading.Thread(target=self._work, name="airoad-serve-worker", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> bool:
        """Queue ``job``; False when the queue is full (the caller answers 429)."""
        if not self._slots.acquire(blocking=False):
            return False
        self._jobs.put(job)
        return True

    def busy(self) -> int:
        return self._jobs.qsize()

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join(timeout=30)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                self._answer(job)
            except Exception as e:  # one bad request never stops the server
                job.send("error", f"generation failed: {type(e).__name__}: {e}")
            finally:
                self._slots.release()

    def _answer(self, job: Job) -> None:
        from airoad.core.model.stream import Decoding, Turns, reply

        req = job.request
        if job.cancel.is_set():  # the client left while waiting
            job.send("end", {"finish": "cancelled", "completion_tokens": 0, "seconds": 0.0})
            return
        seed = req.seed if req.seed is not None else self.seed + self.answered
        self.answered += 1
        decoding = Decoding(req.max_tokens, req.temperature, req.top_p, seed, req.stop)
        with self.loaded.side(req.model):
            r = reply(
                self.loaded.model,
                self.loaded.tokenizer,
                req.messages,
                decoding,
                self._caches.setdefault(req.model, Turns()),
            )
            for piece in r:
                job.send("piece", piece)
                if job.cancel.is_set():
                    break
        finish = "cancelled" if job.cancel.is_set() and r.finish_reason != "stop" else r.finish_reason
        if finish == "cancelled":  # the request's own line was written when its client left
            print(f"stopped: model={req.model} out={len(r.ids)} (the client left)", flush=True)
        job.send(
            "end",
            {
                "finish": finish,
                "completion_tokens": len(r.ids),
                "seconds": r.seconds,
                "prefill": r.prefill_tokens,
            },
        )


@dataclass
class Server:
    """What the request checks need to know (:func:`airoad.infer.serve_api.check_request`)."""

    models: list[str]
    system: str | None
    max_new_tokens: int
    context: int
    temperature: float
    top_p: float
    count_tokens: Callable[[list[dict[str, str]]], int]


def page_html() -> str:
    return importlib.resources.files("airoad.infer").joinpath("page.html").read_text(encoding="utf-8")


def log_line(method: str, path: str, status: int, started: float, extra: str = "") -> None:
    print(f"{method} {path} {status} {time.perf_counter() - started:.2f}s{extra}", flush=True)


def make_app(engine: Engine, server: Server, meta: dict[str, Any], cfg: ServeConfig) -> Any:
    """The FastAPI app: routes, the bearer check, the body limit (module docstring)."""
    from fastapi import FastAPI
    from fastapi import Request as HttpRequest
    from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse

    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    limit = cfg.max_body_kb * 1024

    def refuse(status: int, body: dict, headers: dict | None = None) -> JSONResponse:
        return JSONResponse(body, status_code=status, headers=headers)

    @app.middleware("http")
    async def guard(request: HttpRequest, call_next: Any) -> Any:
        started = time.perf_counter()
        if (
            cfg.api_key
            and request.url.path != "/"
            and not authorized(request.headers.get("authorization"), cfg.api_key)
        ):
            log_line(request.method, request.url.path, 401, started)
            return refuse(
                401, error_body("missing or wrong API key (Authorization: Bearer KEY)", "invalid_api_key")
            )
        response = await call_next(request)
        if request.url.path != "/v1/chat/completions":
            log_line(request.method, request.url.path, response.status_code, started)
        return response

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return page_html()

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "waiting": engine.busy()}

    @app.get("/v1/models")
    async def models() -> dict:
        created = int(meta["started"])
        data = [{"id": m, "object": "model", "created": created, "owned_by": "airoad"} for m in server.models]
        return {"object": "list", "data": data, "airoad": meta}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: HttpRequest) -> Any:
        started = time.perf_counter()
        try:
            req = check_request(parse_json(await read_body(request, limit)), server)
        except RequestError as e:
            log_line("POST", request.url.path, e.status, started, f" refused: {e}")
            return refuse(e.status, e.body)
        job = Job(req, asyncio.get_running_loop())
        if not engine.submit(job):
            log_line("POST", request.url.path, 429, started, f" model={req.model} queue full")
            body = error_body(
                "the server is busy (its queue is full); retry shortly", "queue_full", kind="rate_limit_error"
            )
            return refuse(429, body, {"Retry-After": "1"})
        done = Done(request.url.path, req, started)
        if req.stream:
            return StreamingResponse(
                stream(job, done), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
            )
        return await answer_whole(job, request, done, refuse)

    return app


@dataclass
class Done:
    """The per-request log line, written once when the request ends however it ends."""

    path: str
    req: Request
    started: float
    logged: bool = False

    def log(self, status: int, stats: dict[str, Any] | None) -> None:
        if self.logged:
            return
        self.logged = True
        stats = stats or {"finish": "cancelled", "completion_tokens": 0}
        extra = (
            f" model={self.req.model} in={self.req.prompt_tokens} out={stats['completion_tokens']} "
            f"finish={stats['finish']}{' stream' if self.req.stream else ''}"
        )
        log_line("POST", self.path, status, self.started, extra)


async def read_body(request: Any, limit: int) -> bytes:
    """The body, refused (before it is all read) when larger than ``limit`` bytes."""
    declared = request.headers.get("content-length")
    too_big = RequestError(
        f"the body is larger than this server's limit of {limit // 1024} KiB", "body_too_large"
    )
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_big
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise too_big
    return bytes(body)


def authorized(header: str | None, key: str) -> bool:
    scheme, _, token = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key.encode())


async def stream(job: Job, done: Done) -> AsyncIterator[str]:
    """The server-sent events of one streamed answer; leaving early (the client hung up) cancels it."""
    cid, model, stats = completion_id(), job.request.model, None
    try:
        yield chunk(cid, model, {"role": "assistant", "content": ""})
        while True:
            kind, value = await job.events.get()
            if kind == "piece":
                yield chunk(cid, model, {"content": value})
            elif kind == "end":
                stats = value
                yield chunk(cid, model, {}, value["finish"])
                yield "data: [DONE]\n\n"
                return
            else:
                yield f"data: {error_event(value)}\n\n"
                return
    finally:
        job.cancel.set()  # a no-op when the answer is complete
        done.log(200, stats)


def error_event(message: str) -> str:
    return json.dumps(error_body(message, "generation_failed", kind="server_error"))


async def answer_whole(job: Job, request: Any, done: Done, refuse: Callable[..., Any]) -> Any:
    """Wait for the whole answer, watching the connection: a client that left cancels it."""
    pieces: list[str] = []
    while True:
        try:
            kind, value = await asyncio.wait_for(job.events.get(), timeout=0.25)
        except asyncio.TimeoutError:
            if await request.is_disconnected():
                job.cancel.set()
                done.log(499, None)
                return refuse(499, error_body("client closed the request", "cancelled"))
            continue
        if kind == "piece":
            pieces.append(value)
        elif kind == "end":
            done.log(200, value)
            r = job.request
            return completion(
                completion_id(),
                r.model,
                "".join(pieces),
                value["finish"],
                r.prompt_tokens,
                value["completion_tokens"],
            )
        else:
            done.log(500, None)
            return refuse(500, error_body(value, "generation_failed", kind="server_error"))


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound now: a port in use is one line before any model loads."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise UserError(
            f"--host {host} --port {port}: cannot bind ({e.strerror}); choose another --port (0: any free one)"
        ) from None
    return sock


def run(cfg: ServeConfig, inv: Any) -> int:
    if not all(importlib.util.find_spec(m) for m in ("fastapi", "uvicorn")):
        raise UserError(f"airoad serve needs its server stack: {SERVE_EXTRA}")
    import uvicorn

    from airoad.core.model.generate import encode_prompt

    sock = bind(cfg.host, cfg.port)
    loaded = load(inv.source, cfg.device, cfg.dtype, cfg.trust_remote_code)
    context = int(getattr(loaded.model.config, "max_position_embeddings", 0) or 32768)
    server = Server(
        models=list(reversed(loaded.sides)),  # "tuned" first: the default a client should pick
        system=loaded.system_prompt(cfg.system_prompt),
        max_new_tokens=cfg.max_new_tokens,
        context=context,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        count_tokens=lambda messages: len(encode_prompt(loaded.tokenizer, messages)),
    )
    meta = {
        "run": str(inv.source.adapters) if inv.source.adapters else None,
        "base": inv.source.base,
        "adapter": inv.source.adapter_kind,
        "system_prompt": server.system,
        "max_tokens": cfg.max_new_tokens,
        "temperature": cfg.temperature,
        "top_p": cfg.top_p,
        "context": context,
        "device": loaded.device,
        "dtype": str(loaded.dtype).replace("torch.", ""),
        "started": time.time(),
    }
    engine = Engine(loaded, cfg.queue, cfg.seed)
    app = make_app(engine, server, meta, cfg)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(
        f"airoad serve: http://{shown}:{port}/ (models: {', '.join(server.models)}; Ctrl-C stops)", flush=True
    )
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=5)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn shuts down on Ctrl-C, then re-raises it: the normal way out
        pass
    finally:
        engine.close()
        sock.close()
    print("airoad serve: stopped", file=sys.stderr)
    return 0

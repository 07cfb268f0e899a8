"""``translate serve``: a model loaded once behind a JSON API and a small web page.

Requests are checked by :mod:`.requests`; their sentences go through the batcher of
:mod:`.batching`, which decodes those of concurrent requests together. The model is loaded
before the port is bound: whenever the server answers, /health is 200.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

from ..errors import UserError
from ..runtime import set_threads
from ..translator import Translator
from .answers import model_json, translation_json
from .batching import Batcher, Overloaded
from .options import ServeOptions, check_options
from .requests import ApiError, default_decoding, parse_request

try:
    from aiohttp import web
except ImportError:  # the optional extra: pip install 'translate[serve]'
    web = None

PAGE = Path(__file__).parent / "static" / "index.html"


ROUTES = "GET /, GET /health, GET /model, POST /translate"


class Service:
    """The handlers of the routes, over one translator and its batcher."""

    def __init__(self, translator: Translator, options: ServeOptions, model_dir: Path):
        self.translator, self.options = translator, options
        wait_s = options.batch_wait_ms / 1000
        self.batcher = Batcher(
            translator,
            options.max_batch_sentences,
            options.max_batch_tokens,
            wait_s,
            options.max_queued_sentences,
        )
        self.defaults = default_decoding(translator, options)
        self.description = model_json(translator, model_dir, options, self.defaults)  # GET /model
        self.page = PAGE.read_bytes()

    async def index(self, request: web.Request) -> web.Response:
        return web.Response(body=self.page, content_type="text/html", charset="utf-8")

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", **self.batcher.health()})

    async def describe(self, request: web.Request) -> web.Response:
        return web.json_response(self.description)

    async def translate(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        lines, options = parse_request(body, self.defaults, self.options.max_sentences)
        try:
            self.translator.check(options)  # what this model cannot do, before queueing
            translations = await self.batcher.translate(lines, options)
        except UserError as err:
            raise ApiError(400, str(err)) from None
        except Overloaded as err:  # back-pressure: a client should wait, not pile on
            raise ApiError(503, str(err), {"Retry-After": "1"}) from None
        limit = self.translator.max_source_len
        answers = [translation_json(t, options.n_best, limit) for t in translations]
        return web.json_response({"translations": answers}, dumps=_dumps)

    async def _body(self, request: web.Request) -> bytes:
        """The request body, refused with 413 beyond --max-bytes."""
        too_large = ApiError(413, f"the body is larger than --max-bytes ({self.options.max_bytes})")
        if (request.content_length or 0) > self.options.max_bytes:
            raise too_large
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise too_large from None


def _dumps(value) -> str:
    return json.dumps(value, ensure_ascii=False)


async def _json_errors(request: web.Request, handler):
    """Every error as ``{"error": message}`` with its status; the server keeps serving."""
    headers = {}
    try:
        return await handler(request)
    except ApiError as err:
        status, message, headers = err.status, str(err), err.headers
    except web.HTTPNotFound:
        status, message = 404, f"no route {request.method} {request.path}; routes: {ROUTES}"
    except web.HTTPMethodNotAllowed as err:
        allowed = ", ".join(sorted(err.allowed_methods))
        status, message = 405, f"{request.method} {request.path} is not allowed; use {allowed}"
    except web.HTTPException as err:
        if err.status < 400:
            raise
        status, message = err.status, err.reason
    except Exception as err:  # a bug: say so, keep serving
        print(
            f"translate serve: error on {request.method} {request.path}: {err!r}", file=sys.stderr
        )
        status, message = 500, f"internal error: {type(err).__name__}"
    return web.json_response({"error": message}, status=status, headers=headers, dumps=_dumps)


def build_app(
    translator: Translator, options: ServeOptions, model_dir: str | Path
) -> web.Application:
    """The aiohttp application: routes, JSON errors, the batcher started and stopped with it."""
    service = Service(translator, options, Path(model_dir))
    app = web.Application(
        client_max_size=options.max_bytes, middlewares=[web.middleware(_json_errors)]
    )
    app.router.add_get("/", service.index)
    app.router.add_get("/health", service.health)
    app.router.add_get("/model", service.describe)
    app.router.add_post("/translate", service.translate)

    async def batcher_running(app):
        service.batcher.start()
        yield
        await service.batcher.stop()

    app.cleanup_ctx.append(batcher_running)
    return app


async def serve_app(
    app: web.Application, options: ServeOptions, stop: asyncio.Event, on_ready=None
) -> None:
    """Listen until ``stop`` is set, then stop accepting connections, let the requests in
    flight finish (up to ``shutdown_timeout``) and stop the batcher."""
    runner = web.AppRunner(
        app, handle_signals=False, shutdown_timeout=options.shutdown_timeout, access_log=None
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, options.host, options.port).start()
    except OSError as err:
        await runner.cleanup()
        raise UserError(
            f"cannot listen on {options.host}:{options.port}: {err.strerror or err}"
        ) from None
    if on_ready is not None:
        on_ready(*runner.addresses[0][:2])
    await stop.wait()
    for site in list(runner.sites):
        await site.stop()
    # aiohttp's cleanup closes the connections with no request started: give one accepted just
    # before the listener closed time to be read, so that its request is answered, not dropped
    await asyncio.sleep(0.2)
    await runner.cleanup()


def serve(model_dir: str | Path, options: ServeOptions) -> None:
    """``translate serve``: load the model, then serve until SIGTERM or Ctrl-C, finishing the
    requests in flight before returning."""
    if web is None:
        raise UserError("translate serve needs aiohttp: pip install 'translate[serve]'")
    check_options(options)
    set_threads(options.threads)
    translator = Translator.from_dir(model_dir, options.device, options.dtype, options.quantize)
    asyncio.run(_serve_until_signalled(build_app(translator, options, model_dir), options))


async def _serve_until_signalled(app: web.Application, options: ServeOptions) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def stopping() -> None:
        print("translate: stopping: finishing the requests in flight", file=sys.stderr, flush=True)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping)

    def ready(host: str, port: int) -> None:
        host = f"[{host}]" if ":" in host else host  # an IPv6 address
        print(f"translate: serving on http://{host}:{port} ({ROUTES})", file=sys.stderr, flush=True)

    await serve_app(app, options, stop, ready)
    print("translate: stopped", file=sys.stderr, flush=True)

"""``translate serve``: a model (or an ensemble of models; or, with the ONNX engine, an
export) loaded once behind a JSON API, a small web page, and the APIs of LibreTranslate and
OpenNMT-py's REST server.

Requests are checked by :mod:`.requests` (ours) and :mod:`.compat` (theirs); the sentences of
all go through the batcher of :mod:`.batching`, which decodes those of concurrent requests
together, within the same limits. The model is loaded before the port is bound: whenever the
server answers, /health is 200.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..decoding import DecodeOptions, Translation
from ..errors import UserError
from .answers import translation_json
from .batching import Batcher, Overloaded, search_rows
from .compat import (
    check_lengths,
    form_fields,
    is_form,
    languages_json,
    libretranslate_answer,
    opennmt_answer,
    opennmt_models,
    parse_libretranslate,
    parse_opennmt,
)
from .engines import check_request, describe, length_limits, load_translator
from .options import ServeOptions, check_options
from .requests import ApiError, check_work, default_decoding, parse_request, read_json

if TYPE_CHECKING:
    from ..export.engine import OnnxTranslator
    from ..translator import Translator

try:
    from aiohttp import web
except ImportError:  # the optional extra: pip install 'translate[serve]'
    web = None

PAGE = Path(__file__).parent / "static" / "index.html"


ROUTES = (
    "GET /, GET /health, GET /model, POST /translate, GET /languages, "
    "POST /translator/translate, GET /translator/models, GET /translator/health"
)


class ClientGone(Exception):
    """The client closed its connection before its request was read: nobody to answer."""


class Service:
    """The handlers of the routes, over one translator (of ``options.engine``) and its batcher,
    and the requests in flight, which :meth:`finish` waits for at shutdown."""

    def __init__(
        self, translator: Translator | OnnxTranslator, options: ServeOptions, model_dirs: list[Path]
    ):
        self.translator, self.options = translator, options
        self.defaults = default_decoding(translator, options)
        self.batcher = Batcher(
            translator,
            options.max_batch_sentences,
            options.max_batch_tokens,
            options.batch_wait_ms / 1000,
            options.max_queued_sentences,
            default_rows=search_rows(self.defaults),
        )
        self.description = describe(translator, model_dirs, options, self.defaults)  # GET /model
        self.length_limits = length_limits(translator, options)  # as check_work reads them
        described = self.description
        self.languages = (described["source_language"], described["target_language"])
        self.models = opennmt_models(model_dirs, self.defaults)  # GET /translator/models
        self.page = PAGE.read_bytes()
        self.in_flight = 0  # translation requests being read, queued or decoded
        self.idle = asyncio.Event()
        self.idle.set()
        self.abandoned: asyncio.Future | None = None  # done: answer what is in flight 503

    async def index(self, request: web.Request) -> web.Response:
        return web.Response(body=self.page, content_type="text/html", charset="utf-8")

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", **self.batcher.health()})

    async def describe(self, request: web.Request) -> web.Response:
        return web.json_response(self.description)

    async def list_languages(self, request: web.Request) -> web.Response:
        return web.json_response(languages_json(*self.languages))

    async def list_models(self, request: web.Request) -> web.Response:
        return web.json_response(self.models)

    async def opennmt_health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    def in_flight_handler(self, handler):
        """``handler`` for a request that translates, answered 503 if the server stops before
        it is done."""

        async def answered(request: web.Request) -> web.Response:
            self.in_flight += 1
            self.idle.clear()
            work = asyncio.ensure_future(handler(request))
            try:
                await asyncio.wait((work, self.abandoned), return_when=asyncio.FIRST_COMPLETED)
                if not work.done():
                    work.cancel()  # its sentences are skipped by the batcher
                    await asyncio.gather(work, return_exceptions=True)
                    raise ApiError(
                        503,
                        "the server is stopping and this request did not finish within "
                        f"--shutdown-timeout ({self.options.shutdown_timeout:g} s); retry it",
                    )
                return work.result()
            finally:
                work.cancel()  # when this handler itself was cancelled
                self.in_flight -= 1
                if not self.in_flight:
                    self.idle.set()

        return answered

    async def finish(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the requests in flight, then answer those still
        unfinished 503 rather than cut their connections."""
        try:
            await asyncio.wait_for(self.idle.wait(), timeout)
        except asyncio.TimeoutError:
            self.abandoned.set_result(None)
            await self.idle.wait()  # each handler answers as soon as it runs

    async def translate(self, request: web.Request) -> web.Response:
        """``POST /translate``: our API, or LibreTranslate's (a form, or JSON with ``q``)."""
        body = await self._body(request)
        if is_form(request.content_type, body, request.query):
            headers = request.headers.get("Content-Type", "")
            return await self._libretranslate(request, form_fields(body, headers, request.query))
        value = read_json(body)
        if isinstance(value, dict) and "q" in value:
            return await self._libretranslate(request, value)
        lines, options, single = parse_request(value, self.defaults, self.options.max_sentences)
        check_request(options, self.options.engine)
        translations = await self._decode(request, lines, options)
        limit = self.translator.max_source_len
        answers = [translation_json(t, limit) for t in translations]
        answer = {"translation": answers[0]} if single else {"translations": answers}
        return web.json_response(answer, dumps=_dumps)

    async def _libretranslate(self, request: web.Request, fields: dict) -> web.Response:
        limits = self.options.max_sentences
        asked = parse_libretranslate(fields, self.languages, self.defaults, limits)
        lines = asked.lines
        translations = await self._decode(request, lines, asked.options, asked.where)
        answer = libretranslate_answer(asked, translations, self.languages[0])
        return web.json_response(answer, dumps=_dumps)

    async def opennmt_translate(self, request: web.Request) -> web.Response:
        """``POST /translator/translate``: OpenNMT-py's REST API."""
        value = read_json(await self._body(request))
        lines = parse_opennmt(value, self.options.max_sentences)
        translations = await self._decode(request, lines, self.defaults, "item {}'s src".format)
        answer = opennmt_answer(lines, translations, self.defaults.n_best)
        return web.json_response(answer, dumps=_dumps)

    async def _decode(
        self, request: web.Request, lines: list[str], options: DecodeOptions, where=None
    ) -> list[Translation]:
        """The translations of a request's lines, within its limits and decoded with other
        requests'. ``where``: the APIs that cannot carry a warning refuse a line too long to
        translate whole, naming it as ``where(i)`` does."""
        request[SENTENCES] = len(lines)
        try:
            self.translator.check(options)  # what this model cannot do, before queueing
            if where is not None:
                lengths = [len(ids) for ids in self.translator.src_vocab.encode(lines)]
                check_lengths(lengths, self.translator.max_source_len, where)
            tokens = self.batcher.source_tokens(lines)
            check_work(tokens, options, self.length_limits, self.options)
            return await self.batcher.translate(lines, options, tokens)
        except UserError as err:
            raise ApiError(400, str(err)) from None
        except Overloaded as err:  # back-pressure: a client should wait, not pile on
            raise ApiError(503, str(err), {"Retry-After": "1"}) from None

    async def _body(self, request: web.Request) -> bytes:
        """The request body: 413 beyond --max-bytes, 408 when it does not arrive within
        --read-timeout (a stalled client must not hold a handler, nor the shutdown)."""
        too_large = ApiError(413, f"the body is larger than --max-bytes ({self.options.max_bytes})")
        if (request.content_length or 0) > self.options.max_bytes:
            raise too_large
        timeout = self.options.read_timeout
        try:
            return await asyncio.wait_for(request.read(), timeout)
        except web.HTTPRequestEntityTooLarge:
            raise too_large from None
        except asyncio.TimeoutError:
            raise ApiError(
                408, f"the body did not arrive within --read-timeout ({timeout:g} s)"
            ) from None
        except ConnectionError:  # the client left mid-body
            raise ClientGone() from None


SERVICE = web.AppKey("service", Service) if web is not None else None


def _request_key(name: str, kind: type):
    """A key of a request's storage: typed where aiohttp has RequestKey (3.12 and later)."""
    request_key = getattr(web, "RequestKey", None)
    return request_key(name, kind) if request_key is not None else name


# what the access log reads of a request: the sentences it asked for, and whether its client
# left before its body arrived
SENTENCES, GONE = _request_key("sentences", int), _request_key("gone", bool)


def _dumps(value) -> str:
    return json.dumps(value, ensure_ascii=False)


async def _json_errors(request: web.Request, handler):
    """Every error as ``{"error": message}`` with its status (OpenNMT-py's routes add
    ``"status": "error"``, as its server does); the server keeps serving."""
    headers = {}
    try:
        return await handler(request)
    except ClientGone:  # not a bug, and nobody to tell: an empty answer that goes nowhere
        request[GONE] = True
        return web.Response(status=400)
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
    body = {"error": message}
    if request.path.startswith("/translator/"):
        body["status"] = "error"
    return web.json_response(body, status=status, headers=headers, dumps=_dumps)


async def _access_log(request: web.Request, handler):
    """One line on stderr per request answered: method, path, status, sentences, ms."""
    start, status = time.perf_counter(), "-"
    try:
        response = await handler(request)
        status = "- (the client left)" if request.get(GONE) else response.status
        return response
    finally:
        ms = (time.perf_counter() - start) * 1000
        count = request.get(SENTENCES, 0)
        sentences = f"{count} sentence{'' if count == 1 else 's'}"
        line = f"translate: {request.method} {request.path} {status} {sentences} {ms:.0f} ms"
        print(line, file=sys.stderr, flush=True)


ModelDirs = str | Path | Sequence[str | Path]  # one model directory, or an ensemble's


def _listed(model_dirs: ModelDirs) -> list[Path]:
    return (
        [Path(model_dirs)] if isinstance(model_dirs, (str, Path)) else list(map(Path, model_dirs))
    )


def build_app(
    translator: Translator | OnnxTranslator, options: ServeOptions, model_dirs: ModelDirs
) -> web.Application:
    """The aiohttp application: routes, JSON errors, the batcher started and stopped with it.
    ``translator``: a Translator, or with ``options.engine`` "onnx" an OnnxTranslator;
    ``model_dirs``: where its model (each member of an ensemble, or the export) was loaded
    from, for ``GET /model``."""
    check_options(options)
    service = Service(translator, options, _listed(model_dirs))
    middlewares = [_access_log, _json_errors] if options.access_log else [_json_errors]
    app = web.Application(
        client_max_size=options.max_bytes, middlewares=list(map(web.middleware, middlewares))
    )
    app.router.add_get("/", service.index)
    app.router.add_get("/health", service.health)
    app.router.add_get("/model", service.describe)
    app.router.add_post("/translate", service.in_flight_handler(service.translate))
    app.router.add_get("/languages", service.list_languages)  # LibreTranslate's
    translator_translate = service.in_flight_handler(service.opennmt_translate)
    app.router.add_post("/translator/translate", translator_translate)  # OpenNMT-py's
    app.router.add_get("/translator/models", service.list_models)
    app.router.add_get("/translator/health", service.opennmt_health)
    app[SERVICE] = service

    async def batcher_running(app):
        service.abandoned = asyncio.get_running_loop().create_future()
        service.batcher.start()
        yield
        await service.batcher.stop()

    app.cleanup_ctx.append(batcher_running)
    return app


async def serve_app(
    app: web.Application, options: ServeOptions, stop: asyncio.Event, on_ready=None
) -> None:
    """Listen until ``stop`` is set, then stop accepting connections, let the requests in
    flight finish (up to ``shutdown_timeout``; those left are answered 503) and stop the
    batcher. A client gets ``read_timeout`` seconds for a request's head and again for its
    body, so a stalled one holds neither a handler nor the shutdown."""
    runner = web.AppRunner(
        app,
        handle_signals=False,
        shutdown_timeout=options.shutdown_timeout,
        access_log=None,
        # aiohttp closes a connection whose request head is not complete this long after it
        # opened or after its last answer (its default is an hour)
        keepalive_timeout=options.read_timeout,
        # and reads what is left of an unread body (after a 408 or 413) no longer than this
        lingering_time=min(10.0, options.read_timeout),
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
    await app[SERVICE].finish(options.shutdown_timeout)
    await runner.cleanup()


def load_app(model_dirs: ModelDirs, options: ServeOptions) -> web.Application:
    """What ``translate serve`` does before it listens: check the options, load the model
    (several: an ensemble; with engine onnx: an export) as they say and build the
    application."""
    if web is None:
        raise UserError("translate serve needs aiohttp: pip install 'translate[serve]'")
    check_options(options)
    model_dirs = _listed(model_dirs)
    return build_app(load_translator(model_dirs, options), options, model_dirs)


def serve(model_dirs: ModelDirs, options: ServeOptions) -> None:
    """``translate serve``: load the model (several: an ensemble), then serve until SIGTERM or
    Ctrl-C, finishing the requests in flight before returning."""
    asyncio.run(_serve_until_signalled(load_app(model_dirs, options), options))


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

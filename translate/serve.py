"""``translate serve``: a model loaded once behind a JSON API and a small web page.

Requests are parsed and checked here; their sentences go through the batcher of
:mod:`translate.batching`, which decodes those of concurrent requests together. The model is
loaded before the port is bound: whenever the server answers, /health is 200.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import math
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from .batching import Batcher, DecodeOptions, Overloaded
from .config import UserError
from .model import build_model
from .modeldir import CONFIG, METRICS, read_config
from .runtime import set_threads
from .translator import Translation, Translator

try:
    from aiohttp import web
except ImportError:  # the optional extra: pip install 'translate[serve]'
    web = None

PAGE = Path(__file__).parent / "static" / "index.html"
MAX_BEAM = 64  # beam sizes (and samples per line) a request may ask for
REQUEST_FIELDS = ("text", "beam", "length_penalty", "n_best", "return_attention", "sample")
SAMPLE_FIELDS = ("temperature", "top_k", "seed")
_SERIAL = itertools.count(1)  # numbers the requests that are decoded alone


@dataclass
class ServeOptions:
    """Where to listen, the request limits and the batching settings."""

    host: str = "127.0.0.1"
    port: int = 8000  # 0: any free port (printed at start)
    beam: int | None = None  # the default beam of requests; None: the model's
    length_penalty: float | None = None
    max_sentences: int = 256  # per request
    max_bytes: int = 1_000_000  # per request body
    max_batch_sentences: int = 64  # per decoded batch
    max_batch_tokens: int = 6000  # source subwords per decoded batch
    batch_wait_ms: float = 5.0  # how long the first waiting sentence waits for company
    max_queued_sentences: int = 4096  # waiting sentences of all requests; beyond: 503
    threads: int = 0  # torch threads; 0: all cores
    shutdown_timeout: float = 60.0  # seconds in-flight requests get after SIGTERM
    device: str | None = None  # None: CUDA when present, else the CPU
    dtype: str = "fp32"  # as for translate translate: fp32, bf16, fp16, auto
    quantize: str | None = None  # int8: dynamic quantization (CPU)

    @classmethod
    def from_namespace(cls, args) -> ServeOptions:
        """The options of ``translate serve``'s parsed arguments (same names)."""
        return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


class ApiError(Exception):
    """A request the server refuses: answered with ``status``, ``{"error": message}`` and
    ``headers``."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.headers = status, headers or {}


# --- requests ---------------------------------------------------------------------------------


def default_decoding(translator: Translator, options: ServeOptions) -> DecodeOptions:
    """The beam and length penalty of requests that do not name them: the flags' or the
    model's."""
    decode = translator.cfg.decode
    alpha = decode.length_penalty if options.length_penalty is None else options.length_penalty
    return DecodeOptions(options.beam or decode.beam, alpha)


def parse_request(
    body: bytes, defaults: DecodeOptions, max_sentences: int, has_attention: bool
) -> tuple[list[str], DecodeOptions]:
    """The sentences and decoding options of a ``POST /translate`` body, or an ApiError
    naming what is wrong with it."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ApiError(
            400, f"the body is not valid UTF-8 (a bad byte at offset {err.start})"
        ) from None
    try:
        request = json.loads(text)
    except RecursionError:
        raise ApiError(400, "malformed JSON: nested too deeply") from None
    except ValueError as err:
        raise ApiError(400, f"malformed JSON: {err}") from None
    if not isinstance(request, dict):
        raise ApiError(400, 'the body must be a JSON object such as {"text": ["Hallo Welt!"]}')
    _reject_unknown(request, REQUEST_FIELDS, "field")
    lines = _sentences(request.get("text"), max_sentences)
    beam = _integer(request, "beam", defaults.beam, MAX_BEAM)
    n_best = _integer(request, "n_best", 1, MAX_BEAM)
    length_penalty = request.get("length_penalty", defaults.length_penalty)
    if not _is_number(length_penalty) or not 0 <= length_penalty <= 100:
        raise ApiError(
            400, f"'length_penalty' must be a number from 0 to 100, got {length_penalty!r}"
        )
    attention = request.get("return_attention", False)
    if not isinstance(attention, bool):
        raise ApiError(400, f"'return_attention' must be true or false, got {attention!r}")
    if attention and not has_attention:
        raise ApiError(
            400, "'return_attention': this model has no attention (model.attention is none)"
        )
    if "sample" in request:
        if "beam" in request or "length_penalty" in request:
            raise ApiError(
                400, "'sample' draws translations: it takes no 'beam' or 'length_penalty'"
            )
        sample = _sampling(request["sample"])
        return lines, DecodeOptions(1, 0.0, n_best, attention, sample, alone=next(_SERIAL))
    if n_best > beam:
        raise ApiError(400, f"'n_best' ({n_best}) must not exceed the beam size ({beam})")
    return lines, DecodeOptions(beam, float(length_penalty), n_best, attention)


def _reject_unknown(values: dict, known: tuple[str, ...], what: str) -> None:
    unknown = [key for key in values if key not in known]
    if unknown:
        raise ApiError(
            400, f"unknown {what}(s) {', '.join(map(repr, unknown))}; known: {', '.join(known)}"
        )


def _sentences(text, limit: int) -> list[str]:
    """The ``text`` field checked: a non-empty list of at most ``limit`` strings."""
    if text is None:
        raise ApiError(400, "'text' is missing: give a list of sentences")
    if not isinstance(text, list):
        raise ApiError(400, f"'text' must be a list of strings, got {type(text).__name__}")
    if not text:
        raise ApiError(400, "'text' is an empty list: give at least one sentence")
    if len(text) > limit:
        raise ApiError(413, f"{len(text)} sentences: more than --max-sentences ({limit})")
    for i, line in enumerate(text):
        if not isinstance(line, str):
            raise ApiError(400, f"'text'[{i}] must be a string, got {type(line).__name__}")
        try:
            line.encode("utf-8")
        except UnicodeEncodeError:
            raise ApiError(400, f"'text'[{i}] is not valid Unicode (a lone surrogate)") from None
    return text


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _integer(values: dict, key: str, default: int, most: int) -> int:
    value = values.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise ApiError(400, f"'{key}' must be an integer from 1 to {most}, got {value!r}")
    return value


def _sampling(sample) -> tuple[float, int, int]:
    """The ``sample`` field checked: temperature > 0, top_k >= 0, an integer seed."""
    if not isinstance(sample, dict):
        raise ApiError(400, '\'sample\' must be an object such as {"temperature": 1, "seed": 1}')
    _reject_unknown(sample, SAMPLE_FIELDS, "'sample' field")
    temperature, top_k, seed = (
        sample.get(key, default) for key, default in zip(SAMPLE_FIELDS, (1.0, 0, 1))
    )
    if not _is_number(temperature) or temperature <= 0:
        raise ApiError(400, f"'sample.temperature' must be a number > 0, got {temperature!r}")
    for key, value in (("top_k", top_k), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
            raise ApiError(400, f"'sample.{key}' must be an integer >= 0, got {value!r}")
    return float(temperature), top_k, seed


# --- answers ----------------------------------------------------------------------------------


def translation_json(translation: Translation, n_best: int, max_source_len: int):
    """One line's answer: its best candidate as an object, or with ``n_best`` > 1 the list of
    its candidates, best first."""
    extra = {}
    if translation.source_pieces is not None:
        extra["source_pieces"] = translation.source_pieces
    if translation.truncated:
        extra["warning"] = (
            f"longer than {max_source_len} subwords: only the first {max_source_len} were translated"
        )
    candidates = []
    for candidate in translation.candidates:
        answer = {"text": candidate.text, "score": candidate.score, "log_prob": candidate.log_prob}
        if candidate.attention is not None:
            answer |= {
                "pieces": candidate.pieces,
                "attention": candidate.attention,
                "alignment": candidate.alignment,
            }
        candidates.append(answer | extra)
    return candidates if n_best > 1 else candidates[0]


def model_json(translator: Translator, model_dir: Path, options: ServeOptions) -> dict:
    """What ``GET /model`` says: languages, sizes, vocabularies, decoding defaults, dev BLEU."""
    cfg, defaults = translator.cfg, default_decoding(translator, options)
    with torch.device("meta"):  # the parameter count without memory (int8 hides the weights)
        shape = build_model(cfg.model, len(translator.src_vocab), len(translator.tgt_vocab))
    sizes = {
        key: getattr(cfg.model, key)
        for key in ("cell", "emb_dim", "hidden_dim", "enc_layers", "dec_layers", "bidirectional")
    }
    return {
        "model_dir": str(model_dir),
        "format_version": read_config(model_dir / CONFIG)[1],
        "source_language": cfg.data.src_lang,
        "target_language": cfg.data.tgt_lang,
        "model": sizes
        | {
            "attention": cfg.model.attention,
            "parameters": sum(p.numel() for p in shape.parameters()),
        },
        "vocabulary": {
            "joint": cfg.data.joint_vocab,
            "source_size": len(translator.src_vocab),
            "target_size": len(translator.tgt_vocab),
        },
        "decoding": {
            "beam": defaults.beam,
            "length_penalty": defaults.length_penalty,
            "max_len_a": cfg.decode.max_len_a,
            "max_len_b": cfg.decode.max_len_b,
            "max_source_len": translator.max_source_len,
        },
        "runtime": {
            "device": str(translator.device),
            "dtype": translator.dtype,
            "quantize": options.quantize,
            "threads": torch.get_num_threads(),
        },
        "dev_bleu": best_dev_bleu(model_dir / METRICS),
        "limits": {
            "max_sentences": options.max_sentences,
            "max_bytes": options.max_bytes,
            "max_beam": MAX_BEAM,
            "max_batch_sentences": options.max_batch_sentences,
            "max_batch_tokens": options.max_batch_tokens,
            "batch_wait_ms": options.batch_wait_ms,
            "max_queued_sentences": options.max_queued_sentences,
        },
    }


def best_dev_bleu(metrics: Path) -> dict | None:
    """The best dev BLEU in a metrics.jsonl and the step it was reached at (None without)."""
    if not metrics.is_file():
        return None
    best = None
    for line in metrics.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:  # a line cut off by a crash
            continue
        if isinstance(entry, dict) and _is_number(entry.get("dev_bleu")):
            if best is None or entry["dev_bleu"] > best["bleu"]:
                best = {"bleu": entry["dev_bleu"], "step": entry.get("step")}
    return best


# --- the HTTP service -------------------------------------------------------------------------

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
        self.model = model_json(translator, model_dir, options)
        self.defaults = default_decoding(translator, options)
        self.has_attention = translator.model.decoder.attention is not None
        self.page = PAGE.read_bytes()

    async def index(self, request: web.Request) -> web.Response:
        return web.Response(body=self.page, content_type="text/html", charset="utf-8")

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", **self.batcher.health()})

    async def describe(self, request: web.Request) -> web.Response:
        return web.json_response(self.model)

    async def translate(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        lines, options = parse_request(
            body, self.defaults, self.options.max_sentences, self.has_attention
        )
        try:
            translations = await self.batcher.translate(lines, options)
        except UserError as err:  # an option the translator refused after all
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


def check_options(options: ServeOptions) -> None:
    """Refuse settings that cannot work, naming the flag."""
    for flag, value, least in (
        ("--max-sentences", options.max_sentences, 1),
        ("--max-bytes", options.max_bytes, 1),
        ("--max-batch-sentences", options.max_batch_sentences, 1),
        ("--max-batch-tokens", options.max_batch_tokens, 1),
        ("--port", options.port, 0),
    ):
        if value < least:
            raise UserError(f"{flag} must be >= {least}, got {value}")
    if options.max_queued_sentences < options.max_sentences:
        raise UserError(
            f"--max-queued-sentences ({options.max_queued_sentences}) must be at least "
            f"--max-sentences ({options.max_sentences}), or a full request could never be queued"
        )
    if options.batch_wait_ms < 0:
        raise UserError(f"--batch-wait-ms must be >= 0, got {options.batch_wait_ms}")
    if options.beam is not None and not 1 <= options.beam <= MAX_BEAM:
        raise UserError(f"--beam must be from 1 to {MAX_BEAM}, got {options.beam}")

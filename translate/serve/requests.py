"""Requests to ``translate serve``: a ``POST /translate`` body checked field by field into
sentences and decoding options, or an :class:`ApiError` naming what is wrong."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from ..decoding import SAMPLING_FIELDS, DecodeOptions, DecodingError, Sampling, flag_name
from ..errors import UserError
from .batching import search_rows
from .options import MAX_BEAM, ServeOptions

if TYPE_CHECKING:
    from ..config import DecodeConfig
    from ..export.engine import OnnxTranslator
    from ..translator import Translator

REQUEST_FIELDS = ("text", "beam", "length_penalty", "n_best", "return_attention", "sample")


class ApiError(Exception):
    """A request the server refuses: answered with ``status``, ``{"error": message}`` and
    ``headers``."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.headers = status, headers or {}


def default_decoding(
    translator: Translator | OnnxTranslator, options: ServeOptions
) -> DecodeOptions:
    """The options of requests that name none: the model's, with the flags' beam and length
    penalty in their place."""
    try:
        return translator.defaults.override(
            beam=options.beam, length_penalty=options.length_penalty
        )
    except DecodingError as err:
        raise UserError(err.naming(flag_name(err.setting))) from None


def read_json(body: bytes):
    """The JSON value of a request body, or an ApiError saying why it is not JSON."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ApiError(
            400, f"the body is not valid UTF-8 (a bad byte at offset {err.start})"
        ) from None
    try:
        return json.loads(text)
    except RecursionError:
        raise ApiError(400, "malformed JSON: nested too deeply") from None
    except ValueError as err:
        raise ApiError(400, f"malformed JSON: {err}") from None


def parse_request(
    request, defaults: DecodeOptions, max_sentences: int
) -> tuple[list[str], DecodeOptions, bool]:
    """The sentences and decoding options of a ``POST /translate`` request (its JSON value),
    and whether ``text`` was one string (answered with one translation, not a list); or an
    ApiError naming what is wrong with it."""
    if not isinstance(request, dict):
        raise ApiError(400, 'the body must be a JSON object such as {"text": ["Hallo Welt!"]}')
    reject_unknown(request, REQUEST_FIELDS, "field")
    single = isinstance(request.get("text"), str)
    lines = _sentences(request.get("text"), max_sentences)
    try:
        options = defaults.override(
            beam=request.get("beam"),
            length_penalty=request.get("length_penalty"),
            n_best=request.get("n_best"),
            attention=request.get("return_attention"),
            sampling=_sampling(request.get("sample")),
        )
    except DecodingError as err:
        raise ApiError(400, err.naming(_field_name(err.setting))) from None
    for key in ("beam", "n_best"):  # what one request may cost
        if request.get(key) is not None and getattr(options, key) > MAX_BEAM:
            raise ApiError(400, f"'{key}' must be at most {MAX_BEAM}, got {request[key]!r}")
    return lines, options, single


def check_work(
    tokens: list[int], options: DecodeOptions, decode: DecodeConfig, limits: ServeOptions
) -> None:
    """Refuse (413, naming the flag that raises the limit) a request of lines of ``tokens``
    source subwords (EOS included) that asks for more decoding, or more attention weights,
    than one request may: the cost grows with beam x length, and attention with length
    squared, so a few long lines could otherwise hold the worker for minutes."""
    work = search_rows(options) * sum(tokens)
    if work > limits.max_request_work:
        raise ApiError(
            413,
            f"the request asks for {work} units of work (beam, or samples, x (source subwords "
            f"+ 1), over its sentences): more than --max-request-work "
            f"({limits.max_request_work}); send fewer or shorter sentences or a smaller beam",
        )
    if not options.attention:
        return
    import torch  # only the PyTorch engine gives attention: the ONNX one refused it before

    from ..search import max_lengths

    lengths = torch.tensor(tokens)
    longest = max_lengths(lengths, decode.max_len_a, decode.max_len_b)  # as the search stops
    cells = options.n_best * int((longest * lengths).sum())
    if cells > limits.max_attention_cells:
        raise ApiError(
            413,
            f"the request may ask back {cells} attention weights (n_best x the longest allowed "
            f"translation x (source subwords + 1), over its sentences): more than "
            f"--max-attention-cells ({limits.max_attention_cells}); send fewer or shorter "
            "sentences or a smaller n_best",
        )


def _field_name(setting: str) -> str:
    """The request field that sets a decoding setting, as an error names it."""
    if setting in SAMPLING_FIELDS:
        return f"'sample.{setting}'"
    return repr({"attention": "return_attention", "sampling": "sample"}.get(setting, setting))


def _sampling(sample) -> Sampling | None:
    """The ``sample`` field: an object of Sampling's fields (checked there), or None."""
    if sample is None:
        return None
    if not isinstance(sample, dict):
        raise ApiError(400, '\'sample\' must be an object such as {"temperature": 1, "seed": 1}')
    reject_unknown(sample, SAMPLING_FIELDS, "'sample' field")
    return Sampling(**sample)


def reject_unknown(values: dict, known: tuple[str, ...], what: str) -> None:
    """Refuse (400) the keys of ``values`` that are not ``known``, listing the known ones."""
    unknown = [key for key in values if key not in known]
    if unknown:
        raise ApiError(
            400, f"unknown {what}(s) {', '.join(map(repr, unknown))}; known: {', '.join(known)}"
        )


def _sentences(text, limit: int) -> list[str]:
    """The ``text`` field checked: one string, or a non-empty list of at most ``limit``."""
    if text is None:
        raise ApiError(400, "'text' is missing: give a sentence or a list of sentences")
    if isinstance(text, str):
        text = [text]
    elif not isinstance(text, list):
        raise ApiError(
            400, f"'text' must be a string or a list of strings, got {type(text).__name__}"
        )
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

"""Requests to ``translate serve``: a ``POST /translate`` body checked field by field into
sentences and decoding options, or an :class:`ApiError` naming what is wrong."""

from __future__ import annotations

import itertools
import json
import math

from ..translator import Translator
from .batching import DecodeOptions
from .options import MAX_BEAM, ServeOptions

REQUEST_FIELDS = ("text", "beam", "length_penalty", "n_best", "return_attention", "sample")
SAMPLE_FIELDS = ("temperature", "top_k", "seed")
_SERIAL = itertools.count(1)  # numbers the requests that are decoded alone


class ApiError(Exception):
    """A request the server refuses: answered with ``status``, ``{"error": message}`` and
    ``headers``."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.headers = status, headers or {}


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
    if not is_number(length_penalty) or not 0 <= length_penalty <= 100:
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


def is_number(value) -> bool:
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
    if not is_number(temperature) or temperature <= 0:
        raise ApiError(400, f"'sample.temperature' must be a number > 0, got {temperature!r}")
    for key, value in (("top_k", top_k), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
            raise ApiError(400, f"'sample.{key}' must be an integer >= 0, got {value!r}")
    return float(temperature), top_k, seed

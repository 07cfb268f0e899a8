"""The APIs clients already speak, beside our own: LibreTranslate's (``POST /translate`` with
``q``, ``GET /languages``) and OpenNMT-py's REST server's (``POST /translator/translate``,
``GET /translator/models``). Requests are checked here into lines and decoding options, and
translations shaped into their answers; the server decodes them as it decodes its own."""

from __future__ import annotations

import email.parser
import email.policy
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

from ..decoding import DecodeOptions, Translation
from ..errors import is_integer
from .options import MAX_BEAM
from .requests import ApiError, reject_unknown

LIBRETRANSLATE_FIELDS = ("q", "source", "target", "format", "alternatives", "api_key")
OPENNMT_FIELDS = ("src", "id")
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
LINE_BREAK = re.compile(r"\r\n|\r|\n")

# English names of the commonest language codes, for GET /languages (others show the code)
NAMES = {
    "ar": "Arabic", "bg": "Bulgarian", "ca": "Catalan", "cs": "Czech", "da": "Danish",
    "de": "German", "el": "Greek", "en": "English", "es": "Spanish", "et": "Estonian",
    "eu": "Basque", "fa": "Persian", "fi": "Finnish", "fr": "French", "ga": "Irish",
    "he": "Hebrew", "hi": "Hindi", "hr": "Croatian", "hu": "Hungarian", "id": "Indonesian",
    "is": "Icelandic", "it": "Italian", "ja": "Japanese", "ko": "Korean", "lt": "Lithuanian",
    "lv": "Latvian", "nb": "Norwegian", "nl": "Dutch", "pl": "Polish", "pt": "Portuguese",
    "ro": "Romanian", "ru": "Russian", "sk": "Slovak", "sl": "Slovenian", "sq": "Albanian",
    "sr": "Serbian", "sv": "Swedish", "th": "Thai", "tr": "Turkish", "uk": "Ukrainian",
    "vi": "Vietnamese", "zh": "Chinese",
}  # fmt: skip


# --- LibreTranslate -----------------------------------------------------------------------------


def is_form(content_type: str, body: bytes, query) -> bool:
    """Whether a ``POST /translate`` is a LibreTranslate form (urlencoded, multipart, or ``q``
    in the query string). A JSON body is JSON whatever its type says: ``curl -d`` sends JSON
    labelled as a form."""
    if body.lstrip()[:1] in (b"{", b"["):
        return False
    return content_type in FORM_TYPES or "q" in query


def form_fields(body: bytes, content_type: str, query) -> dict[str, str]:
    """The fields of a form body and of the query string, each given once."""
    pairs = list(query.items())
    try:
        if content_type.lower().startswith("multipart/form-data"):
            pairs += _multipart(body, content_type)
        elif body.strip():
            pairs += parse_qsl(body.decode("utf-8"), keep_blank_values=True, errors="strict")
    except (ValueError, LookupError):  # a bad byte, escape, boundary or charset
        raise ApiError(400, "the form is not valid UTF-8 form data") from None
    fields: dict[str, str] = {}
    for key, value in pairs:
        if key in fields:
            raise ApiError(
                400,
                f"{key!r} is given more than once; to send several texts, send JSON such as "
                '{"q": ["Hallo", "Welt"], ...}',
            )
        fields[key] = value
    return fields


def _multipart(body: bytes, content_type: str) -> list[tuple[str, str]]:
    """The (name, text) fields of a multipart/form-data body (``content_type``: the header,
    boundary included)."""
    head = f"Content-Type: {content_type}\r\n\r\n".encode("utf-8", errors="replace")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not message.is_multipart() or message.defects:
        raise ValueError("malformed multipart body")
    pairs = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        content = part.get_payload(decode=True) or b""
        if not isinstance(name, str) or part.get_filename() is not None:
            raise ValueError("a part that is not a named text field")
        pairs.append((name, content.decode(part.get_content_charset() or "utf-8")))
    return pairs


@dataclass
class LibreRequest:
    """A LibreTranslate request checked: its texts, split into lines (each translated as a
    sentence), and what the answer must hold."""

    texts: list[str]
    single: bool  # q was one string: the answer holds one string
    auto: bool  # source "auto": the answer says which language the text was taken to be
    alternatives: int
    options: DecodeOptions

    @property
    def lines(self) -> list[str]:
        return [line for text in self.texts for line in LINE_BREAK.split(text)]

    def where(self, index: int) -> str:
        """Which text, and which line of it, the line at ``index`` of :attr:`lines` is."""
        for number, text in enumerate(self.texts):
            count = len(LINE_BREAK.split(text))
            if index < count:
                return f"line {index + 1} of {'q' if self.single else f'q[{number}]'}"
            index -= count
        raise IndexError(index)


def parse_libretranslate(
    fields: dict, languages: tuple[str, str], defaults: DecodeOptions, max_sentences: int
) -> LibreRequest:
    """The LibreTranslate request of ``fields`` (JSON's or a form's) to a model translating
    ``languages`` (source, target), or an ApiError naming what is wrong with it."""
    reject_unknown(fields, LIBRETRANSLATE_FIELDS, "LibreTranslate field")
    q = fields.get("q")
    if q is None:
        raise ApiError(400, "Invalid request: missing q parameter (the text to translate)")
    texts = q if isinstance(q, list) else [q]
    if not texts:
        raise ApiError(400, "Invalid request: 'q' is an empty list: give at least one text")
    for i, text in enumerate(texts):
        what = f"'q'[{i}]" if texts is q else "'q'"
        if not isinstance(text, str):
            kind = "a string" if texts is q else "a string or a list of strings"
            raise ApiError(400, f"{what} must be {kind}, got {type(text).__name__}")
        _check_unicode(text, what)
    auto = _check_languages(fields.get("source"), fields.get("target"), languages)
    text_format = fields.get("format")
    if text_format not in (None, "text"):
        raise ApiError(
            400,
            f"{text_format!r} format is not supported: this server translates plain text "
            "(format 'text')",
        )
    alternatives = _alternatives(fields.get("alternatives"))
    # n-best: the translation and its alternatives, from a beam at least that wide
    n_best = alternatives + 1
    options = defaults.override(beam=max(defaults.beam, n_best), n_best=n_best)
    request = LibreRequest(texts, not isinstance(q, list), auto, alternatives, options)
    if len(request.lines) > max_sentences:
        raise ApiError(
            413, f"{len(request.lines)} lines: more than --max-sentences ({max_sentences})"
        )
    return request


def _check_languages(source, target, languages: tuple[str, str]) -> bool:
    """Refuse a source or target other than the model's (``auto`` is its source); whether the
    source was ``auto``."""
    src, tgt = languages
    has = f"this server translates {src} ({name(src)}) to {tgt} ({name(tgt)}) only"
    for field, value in (("source", source), ("target", target)):
        if value is None:
            raise ApiError(400, f"Invalid request: missing {field} parameter; {has}")
        if not isinstance(value, str):
            raise ApiError(400, f"'{field}' must be a language code such as {src!r}")
    if source not in (src, "auto"):
        raise ApiError(400, f"{source} is not supported as a source language: {has}")
    if target != tgt:
        raise ApiError(400, f"{target} is not supported as a target language: {has}")
    return source == "auto"


def _alternatives(value) -> int:
    """The ``alternatives`` field: a count of 0 to MAX_BEAM - 1 (a form sends it as text)."""
    if value is None:
        return 0
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not is_integer(value) or not 0 <= value < MAX_BEAM:
        raise ApiError(
            400, f"'alternatives' must be an integer from 0 to {MAX_BEAM - 1}, got {value!r}"
        )
    return value


def _check_unicode(text: str, what: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, f"{what} is not valid Unicode (a lone surrogate)") from None


def check_lengths(lengths: list[int], limit: int, where) -> None:
    """Refuse (400) a line of more than ``limit`` source subwords: these APIs have no field to
    warn that a translation was cut, so the line is not translated cut (``where(i)`` names
    line i)."""
    for i, length in enumerate(lengths):
        if length > limit:
            raise ApiError(
                400,
                f"Invalid request: {where(i)} is {length} subwords long: more than this model "
                f"translates in one sentence ({limit}); split it into sentences",
            )


def libretranslate_answer(
    request: LibreRequest, translations: list[Translation], source_language: str
) -> dict:
    """``{"translatedText": ...}`` (a string, or a list for a list of texts), with the
    alternatives when asked for and, for source ``auto``, the language assumed."""
    texts, alternatives, at = [], [], 0
    for text in request.texts:
        count = len(LINE_BREAK.split(text))
        lines = translations[at : at + count]
        at += count
        texts.append("\n".join(t.text for t in lines))
        # a text of one line has the alternatives of its sentence; of several, none (the
        # alternatives of a whole text would be combinations of its lines')
        others = [c.text for c in lines[0].candidates[1:]] if count == 1 else []
        alternatives.append(list(dict.fromkeys(o for o in others if o != texts[-1])))
    answer: dict = {"translatedText": texts[0] if request.single else texts}
    if request.auto:  # not detected: the model's source language is assumed
        detected = {"confidence": 0.0, "language": source_language}
        answer["detectedLanguage"] = detected if request.single else [detected] * len(texts)
    if request.alternatives > 0:
        answer["alternatives"] = alternatives[0] if request.single else alternatives
    return answer


def name(code: str) -> str:
    return NAMES.get(code, code)


def languages_json(source: str, target: str) -> list[dict]:
    """What ``GET /languages`` says: the source language with its one target, and the target
    language (a code clients check the target against)."""
    listed = [{"code": source, "name": name(source), "targets": [target]}]
    if target != source:
        listed.append({"code": target, "name": name(target), "targets": []})
    return listed


# --- OpenNMT-py ---------------------------------------------------------------------------------


def parse_opennmt(value, max_sentences: int) -> list[str]:
    """The sentences of a ``POST /translator/translate`` body, ``[{"src": ..., "id": ...}]``
    (``id``, a model's in OpenNMT-py, is any integer: this server has one model)."""
    example = '[{"src": "Hallo Welt!", "id": 100}]'
    if not isinstance(value, list):
        raise ApiError(400, f"the body must be a JSON list such as {example}")
    if not value:
        raise ApiError(400, f"the body is an empty list: give at least one item such as {example}")
    if len(value) > max_sentences:
        raise ApiError(413, f"{len(value)} sentences: more than --max-sentences ({max_sentences})")
    lines = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise ApiError(400, f"item {i} must be an object such as {example[1:-1]}")
        try:
            reject_unknown(item, OPENNMT_FIELDS, "field")
        except ApiError as err:
            raise ApiError(400, f"item {i}: {err}") from None
        src, model_id = item.get("src"), item.get("id", 0)
        if not isinstance(src, str):
            raise ApiError(400, f"item {i}: 'src' must be a string, got {type(src).__name__}")
        if not is_integer(model_id):
            raise ApiError(400, f"item {i}: 'id' must be an integer, got {model_id!r}")
        _check_unicode(src, f"item {i}: 'src'")
        lines.append(src)
    return lines


def opennmt_answer(lines: list[str], translations: list[Translation], n_best: int) -> list:
    """OpenNMT-py's answer: one list per rank of the n-best (the first: the best translations),
    each with one ``{"src", "tgt", "n_best", "pred_score"}`` per sentence, in order."""
    return [
        [
            {
                "src": line,
                "tgt": t.candidates[rank].text,
                "n_best": n_best,
                "pred_score": t.candidates[rank].score,
            }
            for line, t in zip(lines, translations)
        ]
        for rank in range(n_best)
    ]


def opennmt_models(model_dirs: list[Path], defaults: DecodeOptions) -> list[dict]:
    """What ``GET /translator/models`` says: the one model (an ensemble's members), loaded."""
    opt = {"beam_size": defaults.beam, "n_best": defaults.n_best}
    opt["length_penalty"] = defaults.length_penalty
    models = [str(path) for path in model_dirs]
    return [{"model_id": 0, "opt": opt, "models": models, "loaded": True, "timeout": -1}]

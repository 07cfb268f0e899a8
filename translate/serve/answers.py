"""Answers of ``translate serve``: a translation as JSON, and what ``GET /model`` says of a
model directory (PyTorch) or of an export (the ONNX engine, described without torch)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from ..decoding import DecodeOptions, Sampling, Translation
from ..errors import UserError, is_number
from .options import MAX_BEAM, ServeOptions

if TYPE_CHECKING:
    from ..config import Config
    from ..export.engine import OnnxTranslator
    from ..translator import Translator


def translation_json(translation: Translation, max_source_len: int) -> dict:
    """One line's answer, of one shape whatever n_best: the best candidate's text, score and
    log-probability, then ``candidates`` (all of them, best first, each with its attention
    when asked for), and with attention the source pieces, for a cut line a warning."""
    best = translation.candidates[0]
    answer = {"text": best.text, "score": best.score, "log_prob": best.log_prob}
    if translation.source_pieces is not None:
        answer["source_pieces"] = translation.source_pieces
    if translation.truncated:
        answer["warning"] = (
            f"longer than {max_source_len} subwords: only the first {max_source_len} were translated"
        )
    candidates = []
    for candidate in translation.candidates:
        entry = {"text": candidate.text, "score": candidate.score, "log_prob": candidate.log_prob}
        if candidate.attention is not None:
            entry |= {
                "pieces": candidate.pieces,
                "attention": candidate.attention,
                "alignment": candidate.alignment,
            }
        candidates.append(entry)
    return answer | {"candidates": candidates}


def model_json(
    translator: Translator, model_dirs: list[Path], options: ServeOptions, defaults: DecodeOptions
) -> dict:
    """What ``GET /model`` says: languages, sizes, vocabularies, decoding defaults, dev BLEU.
    Of an ensemble (several ``model_dirs``), the model, its directory and dev BLEU are the
    first member's, whose decoding defaults it uses, and ``ensemble`` describes every member."""
    import torch

    cfg = translator.cfg
    first = _member_json(translator, model_dirs[0], cfg)
    description = {
        "model_dir": first["model_dir"],
        "format_version": first["format_version"],
        "source_language": cfg.data.src_lang,
        "target_language": cfg.data.tgt_lang,
        "model": first["model"],
        "vocabulary": {
            "joint": cfg.data.joint_vocab,
            "source_size": len(translator.src_vocab),
            "target_size": len(translator.tgt_vocab),
        },
        "decoding": _decoding_json(
            translator, defaults, cfg.decode.max_len_a, cfg.decode.max_len_b
        ),
        "runtime": {
            "device": str(translator.device),
            "dtype": translator.dtype,
            "quantize": options.quantize,
            "threads": torch.get_num_threads(),
        },
        "dev_bleu": first["dev_bleu"],
        "limits": _limits_json(options),
    }
    if len(model_dirs) > 1:
        description["ensemble"] = [first] + [_member_json(translator, p) for p in model_dirs[1:]]
    return description


def export_json(
    translator: OnnxTranslator, export_dir: Path, options: ServeOptions, defaults: DecodeOptions
) -> dict:
    """What ``GET /model`` says of an export served by the ONNX engine: what its manifest
    says (languages, the model's cell and attention, vocabularies, decoding defaults) and how
    it runs (fp32 or int8); a parameter count only if the manifest holds one."""
    data = translator.manifest.data
    vocab, decode = data["vocab"], translator.decode
    return {
        "export_dir": str(export_dir),
        "format_version": data["format_version"],
        "source_language": data["src_lang"],
        "target_language": data["tgt_lang"],
        "model": dict(data["model"]),
        "vocabulary": {
            "joint": vocab["joint"],
            "source_size": vocab["src_size"],
            "target_size": vocab["tgt_size"],
        },
        "decoding": _decoding_json(translator, defaults, decode["max_len_a"], decode["max_len_b"]),
        "runtime": {
            "engine": "onnx",
            "device": "cpu",
            "precision": translator.precision,
            "threads": options.threads,  # 0: ONNX Runtime's default, every core
        },
        "dev_bleu": None,  # an export does not keep its training's metrics
        "limits": _limits_json(options),
    }


def _decoding_json(translator, defaults: DecodeOptions, max_len_a: float, max_len_b: int) -> dict:
    """The decoding defaults of requests, the length limits, and whether requests may ask for
    attention weights (``return_attention``) and sampling (``sample``): what this model, and
    the engine it runs in, can do."""
    return {
        "beam": defaults.beam,
        "length_penalty": defaults.length_penalty,
        "max_len_a": max_len_a,
        "max_len_b": max_len_b,
        "max_source_len": translator.max_source_len,
        "return_attention": _accepts(translator, DecodeOptions(attention=True)),
        "sample": _accepts(translator, DecodeOptions(sampling=Sampling())),
    }


def _accepts(translator, options: DecodeOptions) -> bool:
    try:
        translator.check(options)
    except UserError:
        return False
    return True


def _limits_json(options: ServeOptions) -> dict:
    return {
        "max_sentences": options.max_sentences,
        "max_bytes": options.max_bytes,
        "max_beam": MAX_BEAM,
        "max_request_work": options.max_request_work,
        "max_attention_cells": options.max_attention_cells,
        "max_batch_sentences": options.max_batch_sentences,
        "max_batch_tokens": options.max_batch_tokens,
        "batch_wait_ms": options.batch_wait_ms,
        "max_queued_sentences": options.max_queued_sentences,
        "read_timeout": options.read_timeout,
        "shutdown_timeout": options.shutdown_timeout,
    }


def _member_json(translator: Translator, model_dir: Path, cfg: Config | None = None) -> dict:
    """One model's directory, format, sizes, attention, parameter count and best dev BLEU
    (``cfg``: its config as loaded; else as its directory holds it)."""
    import torch

    from ..model.seq2seq import build_model
    from ..modeldir import CONFIG, METRICS, read_config

    saved, version = read_config(model_dir / CONFIG)
    cfg = cfg if cfg is not None else saved
    with torch.device("meta"):  # the parameter count without memory (int8 hides the weights)
        shape = build_model(cfg.model, len(translator.src_vocab), len(translator.tgt_vocab))
    sizes = {
        key: getattr(cfg.model, key)
        for key in ("cell", "emb_dim", "hidden_dim", "enc_layers", "dec_layers", "bidirectional")
    }
    return {
        "model_dir": str(model_dir),
        "format_version": version,
        "model": sizes
        | {
            "attention": cfg.model.attention,
            "parameters": sum(p.numel() for p in shape.parameters()),
        },
        "dev_bleu": best_dev_bleu(model_dir / METRICS),
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
        if isinstance(entry, dict) and is_number(entry.get("dev_bleu")):
            if best is None or entry["dev_bleu"] > best["bleu"]:
                best = {"bleu": entry["dev_bleu"], "step": entry.get("step")}
    return best

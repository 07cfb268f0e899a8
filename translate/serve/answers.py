"""Answers of ``translate serve``: a translation as JSON, and what ``GET /model`` says."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..config import Config
from ..decoding import DecodeOptions
from ..errors import is_number
from ..model.seq2seq import build_model
from ..modeldir import CONFIG, METRICS, read_config
from ..translator import Translation, Translator
from .options import MAX_BEAM, ServeOptions


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
        "dev_bleu": first["dev_bleu"],
        "limits": {
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
        },
    }
    if len(model_dirs) > 1:
        description["ensemble"] = [first] + [_member_json(translator, p) for p in model_dirs[1:]]
    return description


def _member_json(translator: Translator, model_dir: Path, cfg: Config | None = None) -> dict:
    """One model's directory, format, sizes, attention, parameter count and best dev BLEU
    (``cfg``: its config as loaded; else as its directory holds it)."""
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

"""``export_model``: a model directory written out as an export directory (see :mod:`.manifest`)
that ONNX Runtime, in Python or in a browser, can translate with."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import numpy as np
import onnxruntime
import torch

from ..translator import Translator
from .graphs import EncoderGraph, StepGraph, export_graphs, graph_tensors
from .manifest import MANIFEST, ExportError, write_manifest
from .quantize import quantize_graph
from .tied import store_tied_once

GRAPH_FILES = {
    "fp32": {"encoder": "encoder.onnx", "step": "step.onnx"},
    "int8": {"encoder": "encoder.int8.onnx", "step": "step.int8.onnx"},
}
PROBE_TOLERANCE = 1e-3  # fp32 graphs differ from PyTorch by rounding only (~1e-6 seen)


def export_model(model_dir: str | Path, out_dir: str | Path, int8: bool = True) -> Path:
    """Write the encoder and step graphs of the model in ``model_dir`` (fp32, and int8 unless
    ``int8`` is False), its SentencePiece model(s) and manifest.json into ``out_dir``: a new or
    empty folder, or an earlier export, which is replaced whole once the new one is complete.
    The fp32 graphs are checked against PyTorch first; a model they do not reproduce is
    refused, and nothing is written."""
    out_dir = Path(out_dir)
    _check_target(out_dir)
    translator = Translator.from_dir(model_dir, device="cpu")
    model, cfg = translator.model, translator.cfg
    encoder_bytes, traced_step = export_graphs(model)
    step_bytes = store_tied_once(traced_step)
    _probe(model, encoder_bytes, step_bytes)
    files = {GRAPH_FILES["fp32"]["encoder"]: encoder_bytes, GRAPH_FILES["fp32"]["step"]: step_bytes}
    if int8:  # from the traced step, whose two copies quantization tells apart by their use
        files[GRAPH_FILES["int8"]["encoder"]] = quantize_graph(encoder_bytes)
        files[GRAPH_FILES["int8"]["step"]] = quantize_graph(traced_step)
    joint = cfg.data.joint_vocab
    src_spm, tgt_spm = ("spm.model",) * 2 if joint else ("spm.src.model", "spm.tgt.model")
    files[src_spm] = translator.src_vocab.model_proto
    files[tgt_spm] = translator.tgt_vocab.model_proto
    decode = cfg.decode
    manifest = {
        "src_lang": cfg.data.src_lang,
        "tgt_lang": cfg.data.tgt_lang,
        "special_ids": {"pad": 0, "unk": 1, "bos": 2, "eos": 3},
        "vocab": {
            "joint": joint,
            "src_spm": src_spm,
            "tgt_spm": tgt_spm,
            "src_size": len(translator.src_vocab),
            "tgt_size": len(translator.tgt_vocab),
        },
        "decode": {
            "beam": decode.beam,
            "length_penalty": decode.length_penalty,
            "max_len_a": decode.max_len_a,
            "max_len_b": decode.max_len_b,
            "batch_size": decode.batch_size,
        },
        "max_source_len": translator.max_source_len,
        "model": {
            "cell": cfg.model.cell,
            "attention": cfg.model.attention,
            "attention_step": cfg.model.attention_step,
            "state_rows": model.decoder.state_rows,
            "hidden_dim": cfg.model.hidden_dim,
        },
        "graphs": {precision: GRAPH_FILES[precision] for precision in ("fp32", "int8")[: 1 + int8]},
        **graph_tensors(model),
    }
    _write_folder(out_dir, files, manifest)
    return out_dir


def _check_target(out_dir: Path) -> None:
    """Refuse an output folder whose contents an export would destroy."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"{out_dir} is a file; give a folder to export into")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / MANIFEST).is_file():
        raise ExportError(
            f"{out_dir} is not empty and holds no export ({MANIFEST}); give a new or empty folder"
        )


def _write_folder(out_dir: Path, files: dict[str, bytes], manifest: dict) -> None:
    """Write the files into a fresh sibling folder, then put it in ``out_dir``'s place: a
    failure leaves any earlier export whole."""
    parent = out_dir.absolute().parent
    staging = parent / f".{out_dir.name}.export-{uuid.uuid4().hex[:8]}"
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging.mkdir()
        for name, data in files.items():
            (staging / name).write_bytes(data)
        write_manifest(staging, manifest)
        old = None
        if out_dir.exists():
            old = parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
            out_dir.rename(old)
        staging.rename(out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as err:
        shutil.rmtree(staging, ignore_errors=True)
        raise ExportError(f"cannot write {out_dir} ({err.strerror or err})") from None


@torch.no_grad()
def _probe(model, encoder_bytes: bytes, step_bytes: bytes) -> None:
    """Run both fp32 graphs in ONNX Runtime on a batch of other shapes than the traced ones
    (3 sentences, 3 rows each) and refuse the export if they differ from PyTorch."""
    vocab = model.decoder.output.out_features
    src_tokens = torch.tensor([[4, 5, 6, 7, 8, 9, 3], [4, 3, 0, 0, 0, 0, 0], [9, 8, 7, 3, 0, 0, 0]])
    src_tokens = torch.where(src_tokens > 3, src_tokens % vocab, src_tokens)
    src_lengths = torch.tensor([7, 2, 4])
    expected = EncoderGraph(model).eval()(src_tokens, src_lengths)
    encoder = onnxruntime.InferenceSession(encoder_bytes, providers=["CPUExecutionProvider"])
    feeds = {"src_tokens": src_tokens.numpy(), "src_lengths": src_lengths.numpy()}
    _compare("encoder", encoder.run(None, feeds), expected, model)
    tile = torch.arange(3).repeat_interleave(3)
    prev_tokens = torch.tensor([2, 4, 5, 2, 6, 7, 2, 8, 9]) % vocab
    args = (prev_tokens, expected[0].index_select(0, tile), *expected[1:])
    step = onnxruntime.InferenceSession(step_bytes, providers=["CPUExecutionProvider"])
    names = [entry.name for entry in step.get_inputs()]
    got = step.run(None, dict(zip(names, (a.numpy() for a in args))))
    _compare("step", got, StepGraph(model).eval()(*args), model)


def _compare(graph: str, got: list, expected: tuple, model) -> None:
    for value, reference in zip(got, expected):
        difference = float(np.abs(value.astype(np.float64) - reference.double().numpy()).max())
        if not difference <= PROBE_TOLERANCE:
            cfg = model.cfg
            raise ExportError(
                f"the exported {graph} graph differs from the model by {difference:.3g}: "
                f"a {cfg.cell} model with {cfg.attention} attention ({cfg.attention_step}) "
                "does not export correctly; nothing was written"
            )

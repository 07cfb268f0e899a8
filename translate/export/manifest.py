"""The export directory's manifest: what its graphs take and give, and how to decode with them.

An export directory (``translate export -m MODEL -o OUT``) holds::

    manifest.json                          this format, below
    encoder.onnx, step.onnx                fp32 graphs (ONNX opset 17)
    encoder.int8.onnx, step.int8.onnx      the same, int8 (absent when exported without int8)
    spm.model                              the joint SentencePiece model, or
    spm.src.model, spm.tgt.model           the source and target ones

manifest.json (format_version 1)::

    {"format": "translate-onnx", "format_version": 1,
     "src_lang": "de", "tgt_lang": "en",
     "special_ids": {"pad": 0, "unk": 1, "bos": 2, "eos": 3},
     "vocab": {"joint": true, "src_spm": "spm.model", "tgt_spm": "spm.model",
               "src_size": 8000, "tgt_size": 8000},
     "decode": {"beam": 5, "length_penalty": 1.0, "max_len_a": 1.5, "max_len_b": 10,
                "batch_size": 64},
     "max_source_len": 200,
     "model": {"cell": "gru", "attention": "general", "attention_step": "after",
               "state_rows": 1, "hidden_dim": 512},
     "graphs": {"fp32": {"encoder": "encoder.onnx", "step": "step.onnx"},
                "int8": {"encoder": "encoder.int8.onnx", "step": "step.int8.onnx"}},
     "encoder": {"inputs": [TENSOR, ...], "outputs": [TENSOR, ...]},
     "step": {"inputs": [TENSOR, ...], "outputs": [TENSOR, ...]}}

where TENSOR is ``{"name": ..., "dtype": "int64" | "float32" | "bool", "shape": [...]}``, each
dimension a number or one of the names ``sentences``, ``rows``, ``src_len``. Both precisions
have the same inputs and outputs, and use standard ONNX ops only (the int8 graphs:
DynamicQuantizeLinear, MatMulInteger, DequantizeLinear). "attention" is "none" for a context-vector model; then the
graphs have no keys, values, mask or attention tensors.

encoder (per sentence):
  inputs   src_tokens  int64 (sentences, src_len)  pieces then EOS, right-padded with PAD
           src_lengths int64 (sentences,)          pieces + 1 (the EOS)
  outputs  state           float32 (sentences, state_rows, hidden)  the first decoder state
           rnn_context     float32 (sentences, gates)   the context's share of the RNN's gates
           readout_context float32 (sentences, emb)     the context's share of the readout
           keys            float32 (sentences, src_len, key_dim)     (attention only)
           values          float32 (sentences, src_len, memory_dim)  (attention only)
           mask            bool    (sentences, src_len)  True on real tokens (attention only)

step (one decoder step for rows = sentences x k, each sentence's k rows adjacent, e.g. its
beams; greedy is k = 1):
  inputs   prev_tokens int64 (rows,)   BOS at the first step, then the token each row chose
           state       float32 (rows, state_rows, hidden)
           rnn_context, readout_context, keys, values, mask: the encoder's, per SENTENCE
  outputs  log_probs   float32 (rows, tgt_size)   log-softmax over the target pieces
           new_state   float32 (rows, state_rows, hidden)
           attention   float32 (rows, src_len)    the step's attention weights (attention only)

Decoding (what :mod:`translate.search` does, and :mod:`.engine` repeats):
  1. Source ids: SentencePiece ids of the line, cut to ``max_source_len``, then EOS appended.
  2. Length limit per sentence: max(1, floor(max_len_a * src_length + max_len_b)), src_length
     counting the EOS; the limit counts the output's EOS.
  3. Each step, before choosing: PAD is never chosen (its log-prob is -inf); a row at its last
     allowed position (step t, counted from 0, with t + 1 >= limit) can only emit EOS (the
     others -inf, EOS keeps its log-prob); a finished row emits PAD at log-prob 0.
  4. Greedy: argmax each step; stop when every row has emitted EOS.
     Beam (k rows per sentence): beams 1..k-1 start at log-prob -inf; each step ranks the k x V
     candidates of a sentence by (summed log-prob) / ((5 + length) / 6) ** length_penalty,
     length counting the tokens and EOS; a finished row keeps its score. The state rows are
     reordered to the chosen beams.
  5. Text: the ids up to the first EOS, special ids (0-3) left out, decoded by SentencePiece.
     The reported score is the summed log-prob (EOS included) over the same penalty.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError

MANIFEST = "manifest.json"
FORMAT = "translate-onnx"
FORMAT_VERSION = 1
OPSET = 17
PRECISIONS = ("fp32", "int8")


class ExportError(UserError):
    """An export directory that cannot be read, or a model that cannot be exported."""


@dataclass(frozen=True)
class Manifest:
    """A read and checked manifest.json, with the directory it lies in."""

    folder: Path
    data: dict

    @property
    def attention(self) -> bool:
        return self.data["model"]["attention"] != "none"

    def graph_path(self, precision: str, graph: str) -> Path:
        """The file of one graph ("encoder" or "step") in one precision ("fp32" or "int8")."""
        graphs = self.data["graphs"]
        if precision not in graphs:
            raise ExportError(
                f"{self.folder} has no {precision} graphs (exported with: {', '.join(graphs)})"
            )
        return self.folder / graphs[precision][graph]

    def spm_paths(self) -> tuple[Path, Path]:
        """The source and target SentencePiece models (the same file when joint)."""
        vocab = self.data["vocab"]
        return self.folder / vocab["src_spm"], self.folder / vocab["tgt_spm"]


def tensor(name: str, dtype: str, *shape: int | str) -> dict:
    """One entry of a graph's inputs or outputs in the manifest."""
    return {"name": name, "dtype": dtype, "shape": list(shape)}


def write_manifest(folder: Path, data: dict) -> None:
    """Write manifest.json (last, so that a directory with one is complete)."""
    text = json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, **data}, indent=2)
    (folder / MANIFEST).write_text(text + "\n", encoding="utf-8")


REQUIRED = (
    "special_ids",
    "vocab",
    "decode",
    "max_source_len",
    "model",
    "graphs",
    "encoder",
    "step",
)


def read_manifest(folder: str | Path) -> Manifest:
    """The manifest of an export directory, checked: a missing or damaged one is refused in
    one line naming the file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ExportError(f"export directory not found: {folder}")
    path = folder / MANIFEST
    if not path.is_file():
        raise ExportError(f"{folder} is not an export directory: {MANIFEST} is missing")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ExportError(f"{path} cannot be read ({err})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ExportError(f"{path} is not a translate export manifest")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise ExportError(
            f"{path} has format version {version!r}; this translate reads {FORMAT_VERSION}"
        )
    missing = [key for key in REQUIRED if key not in data]
    if missing:
        raise ExportError(f"{path} is damaged: it has no {', '.join(missing)}")
    return Manifest(folder, data)

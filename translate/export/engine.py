"""OnnxTranslator: an export directory loaded once, translating as
:class:`~translate.translator.Translator` does, with onnxruntime, sentencepiece and numpy only.

Nothing on this path imports torch, so a service can install translate without it::

    pip install --no-deps translate && pip install onnxruntime sentencepiece numpy
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
import sentencepiece

from ..decoding import Candidate, DecodeOptions, Translation
from ..errors import UserError
from .manifest import ExportError, Manifest, read_manifest
from .search import EOS, PAD, beam_search, greedy_search, max_lengths


class OnnxModel:
    """The two graphs behind the model interface that the search runs on (numpy arrays)."""

    def __init__(self, encoder: onnxruntime.InferenceSession, step: onnxruntime.InferenceSession):
        self.encoder, self.step = encoder, step
        self.encoder_outputs = [entry.name for entry in encoder.get_outputs()]
        self.step_inputs = [entry.name for entry in step.get_inputs()]

    def encode(self, src_tokens: np.ndarray, src_lengths: np.ndarray) -> dict[str, np.ndarray]:
        feeds = {"src_tokens": src_tokens, "src_lengths": src_lengths}
        return dict(zip(self.encoder_outputs, self.encoder.run(None, feeds)))

    def init_state(self, memory: dict[str, np.ndarray]) -> np.ndarray:
        return memory["state"]

    def decode_step(self, prev_tokens: np.ndarray, state: np.ndarray, memory: dict):
        feeds = {name: memory[name] for name in self.step_inputs[2:]}
        feeds["prev_tokens"], feeds["state"] = prev_tokens, state
        log_probs, new_state = self.step.run(["log_probs", "new_state"], feeds)
        return log_probs, new_state


def _session(path: Path, threads: int) -> onnxruntime.InferenceSession:
    if not path.is_file():
        raise ExportError(f"{path} is missing")
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime's own error types are not public API
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ExportError(f"{path} is not a loadable ONNX graph ({first})") from None


def _processor(path: Path) -> sentencepiece.SentencePieceProcessor:
    if not path.is_file():
        raise ExportError(f"{path} is missing")
    try:
        return sentencepiece.SentencePieceProcessor(model_proto=path.read_bytes())
    except (OSError, RuntimeError):
        raise ExportError(f"{path} is not a SentencePiece model (damaged?)") from None


class OnnxTranslator:
    """An exported model (:func:`translate.export.directory.export_model`) with its
    SentencePiece model(s) and decoding defaults: greedy and beam search, n-best, length
    penalty; sampling and attention are refused."""

    def __init__(self, manifest: Manifest, model: OnnxModel, src_spm, tgt_spm, precision: str):
        self.manifest, self.model, self.precision = manifest, model, precision
        self.src_spm, self.tgt_spm = src_spm, tgt_spm
        self.max_source_len = int(manifest.data["max_source_len"])
        self.decode = manifest.data["decode"]  # max_len_a, max_len_b, batch_size, ...

    @classmethod
    def from_dir(cls, path: str | Path, int8: bool = False, threads: int = 0) -> OnnxTranslator:
        """Load an export directory: its fp32 graphs, or with ``int8`` its int8 ones;
        ``threads``: ONNX Runtime's threads per graph (0: its default, all cores)."""
        manifest = read_manifest(path)
        precision = "int8" if int8 else "fp32"
        try:
            encoder = _session(manifest.graph_path(precision, "encoder"), threads)
            step = _session(manifest.graph_path(precision, "step"), threads)
            spm_src, spm_tgt = (_processor(p) for p in manifest.spm_paths())
        except (KeyError, TypeError):
            raise ExportError(f"{manifest.folder / 'manifest.json'} is damaged") from None
        model = OnnxModel(encoder, step)
        expected = [entry["name"] for entry in manifest.data["step"]["inputs"]]
        if model.step_inputs != expected:
            raise ExportError(
                f"{manifest.folder}: the step graph's inputs {model.step_inputs} are not the "
                f"manifest's {expected}; the folder mixes files of two exports"
            )
        return cls(manifest, model, spm_src, spm_tgt, precision)

    @property
    def src_vocab(self) -> sentencepiece.SentencePieceProcessor:
        """The source SentencePiece model under Translator's name for its vocabulary
        (``encode(lines)``: each line's ids), so that the server counts pieces alike."""
        return self.src_spm

    @property
    def defaults(self) -> DecodeOptions:
        """The model's decoding options: the beam and length penalty it was exported with."""
        return DecodeOptions(beam=self.decode["beam"], length_penalty=self.decode["length_penalty"])

    def check(self, options: DecodeOptions) -> None:
        """Refuse in one line what this engine does not do."""
        if options.sampling is not None:
            raise UserError("the ONNX engine does not sample; use the PyTorch engine for --sample")
        if options.attention:
            raise UserError(
                "the ONNX engine gives no alignment; use the PyTorch engine for --alignment"
            )

    def translate(
        self, lines: list[str], beam: int | None = None, length_penalty: float | None = None
    ) -> list[str]:
        """Translations of ``lines``, one per line, in order; blank lines stay blank."""
        options = self.defaults.override(beam=beam, length_penalty=length_penalty)
        return [t.text for t in self.translate_batch(lines, options)]

    def translate_batch(
        self, lines: list[str], options: DecodeOptions | None = None
    ) -> list[Translation]:
        """The ``options.n_best`` candidates of each line (default options: the model's;
        blank lines: blank candidates of score 0), decoded in length-sorted batches."""
        options = options if options is not None else self.defaults
        self.check(options)
        keep = [i for i, line in enumerate(lines) if line.strip()]
        src_ids = self.src_spm.encode([lines[i] for i in keep], out_type=int)
        truncated = [len(ids) > self.max_source_len for ids in src_ids]
        src_ids = [ids[: self.max_source_len] for ids in src_ids]
        hyps = self._search(src_ids, options)
        out = [Translation([Candidate("", 0.0)] * options.n_best) for _ in lines]
        for index, nbest, cut in zip(keep, hyps, truncated):
            candidates = [Candidate(self._text(h.tokens), h.score, h.log_prob) for h in nbest]
            out[index] = Translation(candidates, cut)
        return out

    def _text(self, ids: list[int]) -> str:
        return self.tgt_spm.decode([i for i in ids if i > EOS])

    def _search(self, src_ids: list[list[int]], options: DecodeOptions) -> list:
        """translate.search.search_batches over the graphs: sources sorted by length into
        batches of the model's batch size, results in input order."""
        order = sorted(range(len(src_ids)), key=lambda i: len(src_ids[i]), reverse=True)
        results: list = [None] * len(src_ids)
        size = self.decode["batch_size"]
        for start in range(0, len(order), size):
            chunk = order[start : start + size]
            src_tokens, src_lengths = source_arrays([src_ids[i] for i in chunk])
            max_len = max_lengths(src_lengths, self.decode["max_len_a"], self.decode["max_len_b"])
            args = (self.model, src_tokens, src_lengths, max_len)
            if options.beam == 1 and options.n_best == 1:
                hyps = [[h] for h in greedy_search(*args, options.length_penalty)]
            else:
                hyps = beam_search(*args, options.beam, options.length_penalty, options.n_best)
            for index, hyp in zip(chunk, hyps):
                results[index] = hyp
        return results


def source_arrays(src_ids: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Sources as the encoder takes them: (sentences, len) ids, each then EOS, PAD-padded,
    and their lengths counting the EOS."""
    lengths = np.array([len(ids) + 1 for ids in src_ids], dtype=np.int64)
    tokens = np.full((len(src_ids), int(lengths.max())), PAD, dtype=np.int64)
    for row, ids in enumerate(src_ids):
        tokens[row, : len(ids)] = ids
        tokens[row, len(ids)] = EOS
    return tokens, lengths

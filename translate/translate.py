"""Translator: load a model directory and translate lists of strings or whole files."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TextIO

import torch
from torch import nn

from .config import Config, ConfigError, DecodeConfig, UserError, read_model_config
from .data import pair_batch, source_batch
from .model import Seq2Seq, build_model
from .prepare import vocab_paths
from .search import beam_search, greedy_search, max_lengths
from .vocab import Vocab

WEIGHTS = "model.pt"
CONFIG = "config.yaml"


class ModelDirError(UserError):
    """A model directory that cannot be loaded."""


def pick_device(device: str | None = None) -> torch.device:
    """The requested device, or CUDA when present, else the CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def set_threads(threads: int = 0) -> None:
    """Use ``threads`` intra-op threads (0 = every core this process may run on)."""
    torch.set_num_threads(threads or len(os.sched_getaffinity(0)))


HALF = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_dtype(dtype: str, device: torch.device) -> None:
    """fp16 needs a GPU (it needs loss scaling, and CPUs have no fast fp16 matrix units)."""
    if dtype not in ("fp32", *HALF):
        raise UserError(f"dtype must be fp32, bf16 or fp16, got {dtype!r}")
    if dtype == "fp16" and device.type == "cpu":
        raise UserError("fp16 runs on a GPU only; on a CPU use bf16 (fast with AMX)")


def autocast(device: torch.device, dtype: str):
    """bf16 or fp16 autocast (weights stay fp32) for ``dtype`` "bf16"/"fp16", else nothing."""
    return torch.autocast(device.type, dtype=HALF.get(dtype, torch.bfloat16), enabled=dtype in HALF)


def decode_ids(
    model: Seq2Seq,
    src_ids: list[list[int]],
    decode: DecodeConfig,
    beam: int,
    device: torch.device,
    n_best: int = 1,
) -> list[list]:
    """Hypotheses for each source (as id lists), in input order; sorts by length to batch."""
    order = sorted(range(len(src_ids)), key=lambda i: len(src_ids[i]), reverse=True)
    results: list = [None] * len(src_ids)
    model.eval()
    for start in range(0, len(order), decode.batch_size):
        chunk = order[start : start + decode.batch_size]
        batch = source_batch([src_ids[i] for i in chunk])
        src_tokens, src_lengths = batch.src_tokens.to(device), batch.src_lengths.to(device)
        max_len = max_lengths(batch.src_lengths, decode.max_len_a, decode.max_len_b).to(device)
        if beam == 1 and n_best == 1:
            hyps = [[h] for h in greedy_search(model, src_tokens, src_lengths, max_len)]
        else:
            hyps = beam_search(
                model,
                src_tokens,
                src_lengths,
                max_len,
                beam,
                decode.length_penalty,
                n_best,
                shrink=decode.drop_finished,
            )
        for index, hyp in zip(chunk, hyps):
            results[index] = hyp
    return results


def quantize_int8(model: Seq2Seq) -> Seq2Seq:
    """Dynamic int8 quantization of the linear and GRU/LSTM layers (weights int8, CPU)."""
    import warnings

    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():  # torch marks the eager quantization API as deprecated
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, {nn.Linear, nn.GRU, nn.LSTM}, dtype=torch.qint8)


class Translator:
    """A trained model with its vocabularies and decoding defaults."""

    def __init__(
        self,
        cfg: Config,
        model: Seq2Seq,
        src_vocab: Vocab,
        tgt_vocab: Vocab,
        device: torch.device,
        dtype: str = "fp32",
    ):
        self.cfg, self.model, self.device, self.dtype = cfg, model, device, dtype
        self.src_vocab, self.tgt_vocab = src_vocab, tgt_vocab
        # sources longer than twice the training limit are cut: the model never saw such lengths
        self.max_source_len = max(4, 2 * cfg.data.max_len)
        self.truncated = 0  # how many input lines were cut so far

    @classmethod
    def from_dir(
        cls,
        path: str | Path,
        device: str | None = None,
        dtype: str = "fp32",
        quantize: str | None = None,
    ) -> Translator:
        """Load ``config.yaml``, the SentencePiece model(s) and ``model.pt`` from a directory.

        Weights are read with ``torch.load(weights_only=True)``: no code in the file runs.
        ``dtype="bf16"`` (or "fp16", GPU only) runs the search under autocast;
        ``quantize="int8"`` applies PyTorch dynamic quantization to the linear and recurrent
        layers (CPU only).
        """
        if quantize not in (None, "int8"):
            raise UserError(f"quantize must be int8, got {quantize!r}")
        path = Path(path)
        if not path.is_dir():
            raise ModelDirError(f"model directory not found: {path}")
        config_path = path / CONFIG
        if not config_path.is_file():
            raise ModelDirError(f"{path} is not a model directory: {CONFIG} is missing")
        try:
            cfg = read_model_config(config_path)
        except ConfigError as err:
            raise ModelDirError(f"{config_path} cannot be used: {err}") from None
        src_path, tgt_path = vocab_paths(path, cfg.data.joint_vocab)
        vocabs = []
        for vocab_path in (src_path, tgt_path):
            if not vocab_path.is_file():
                raise ModelDirError(f"{vocab_path} is missing")
            try:
                vocabs.append(Vocab.load(vocab_path))
            except ValueError as err:
                raise ModelDirError(str(err)) from None
        weights_path = path / WEIGHTS
        if not weights_path.is_file():
            raise ModelDirError(f"{weights_path} is missing (has training saved a model yet?)")
        try:
            state = torch.load(weights_path, map_location="cpu", weights_only=True)
        except Exception as err:  # truncated file, planted pickle, not a checkpoint at all
            raise ModelDirError(f"{weights_path} cannot be loaded safely: {err}") from None
        for side, key, vocab, vocab_path in (
            ("source", "encoder.embed.weight", vocabs[0], src_path),
            ("target", "decoder.embed.weight", vocabs[1], tgt_path),
        ):
            rows = state.get(key).shape[0] if isinstance(state, dict) and key in state else None
            if rows is not None and rows != len(vocab):
                raise ModelDirError(
                    f"{vocab_path} has {len(vocab)} pieces but {weights_path} was trained with a "
                    f"{side} vocabulary of {rows}: they come from different trainings"
                )
        model = build_model(cfg.model, len(vocabs[0]), len(vocabs[1]))
        try:
            model.load_state_dict(state)
        except (RuntimeError, TypeError) as err:
            raise ModelDirError(
                f"{weights_path} does not match {config_path} and the vocabularies: {err}"
            ) from None
        dev = pick_device(device)
        check_dtype(dtype, dev)
        model = model.to(dev).eval()
        if quantize == "int8":
            if dev.type != "cpu":
                raise UserError("int8 dynamic quantization runs on the CPU only; add --device cpu")
            model = quantize_int8(model)
        return cls(cfg, model, vocabs[0], vocabs[1], dev, dtype)

    def translate(
        self, lines: list[str], beam: int | None = None, length_penalty: float | None = None
    ) -> list[str]:
        """Translations of ``lines``, one per line, in order; blank lines stay blank."""
        return [nbest[0][0] for nbest in self.translate_nbest(lines, 1, beam, length_penalty)]

    def translate_nbest(
        self,
        lines: list[str],
        n: int,
        beam: int | None = None,
        length_penalty: float | None = None,
    ) -> list[list[tuple[str, float]]]:
        """The ``n`` best (translation, score) pairs of each line, best first."""
        decode = self._decode_config(length_penalty)
        beam = beam or decode.beam
        if not 1 <= n <= beam:
            raise UserError(f"n-best must be between 1 and the beam size ({beam}), got {n}")
        keep = [i for i, line in enumerate(lines) if line.strip()]
        src_ids = self.src_vocab.encode([lines[i] for i in keep])
        max_src = self.max_source_len
        self.truncated += sum(len(ids) > max_src for ids in src_ids)
        src_ids = [ids[:max_src] for ids in src_ids]
        with autocast(self.device, self.dtype):
            hyps = decode_ids(self.model, src_ids, decode, beam, self.device, n_best=n)
        out = [[("", 0.0)] * n for _ in lines]
        for index, nbest in zip(keep, hyps):
            out[index] = [(self.tgt_vocab.decode(h.tokens), h.score) for h in nbest]
        return out

    @torch.no_grad()
    def attention(self, sentence: str, beam: int | None = None):
        """Source pieces, translated pieces (EOS included) and the attention weights
        (tgt_len, src_len) the model used to produce its translation of ``sentence``."""
        if self.model.decoder.attention is None:
            raise UserError("this model has no attention (model.attention is none)")
        src_ids = self.src_vocab.encode([sentence])[0]
        hyp = decode_ids(self.model, [src_ids], self._decode_config(None), beam or 1, self.device)[
            0
        ][0]
        batch = pair_batch([src_ids], [hyp.tokens])
        memory = self.model.encode(
            batch.src_tokens.to(self.device), batch.src_lengths.to(self.device)
        )
        _, weights = self.model.decoder.teacher_forced(
            batch.tgt_in.to(self.device), self.model.init_state(memory), memory
        )
        pieces = self.src_vocab.processor.id_to_piece
        src = [pieces(i) for i in src_ids] + ["</s>"]
        tgt = [self.tgt_vocab.processor.id_to_piece(i) for i in hyp.tokens] + ["</s>"]
        return src, tgt, weights[0].float().cpu()

    def translate_stream(
        self,
        lines: Iterable[str],
        out: TextIO,
        beam: int | None = None,
        chunk_size: int = 2000,
        progress=None,
        n_best: int | None = None,
    ) -> int:
        """Translate an iterable of lines in chunks, writing one line out per line in
        (or ``n_best`` lines ``LINE ||| TEXT ||| SCORE``, LINE counted from 0)."""
        count, chunk = 0, []
        for line in lines:
            chunk.append(line.rstrip("\n").removesuffix("\r"))
            if len(chunk) == chunk_size:
                count += self._write(chunk, count, out, beam, progress, n_best)
                chunk = []
        if chunk:
            count += self._write(chunk, count, out, beam, progress, n_best)
        return count

    def _write(self, chunk, first: int, out: TextIO, beam, progress, n_best) -> int:
        for offset, nbest in enumerate(self.translate_nbest(chunk, n_best or 1, beam)):
            for text, score in nbest:
                text = " ".join(text.split())  # no newline may shift the following lines
                if n_best:
                    out.write(f"{first + offset} ||| {text} ||| {score:.4f}\n")
                else:
                    out.write(text + "\n")
        out.flush()
        if progress is not None:
            progress.update(len(chunk))
        return len(chunk)

    def _decode_config(self, length_penalty: float | None) -> DecodeConfig:
        decode = DecodeConfig(**vars(self.cfg.decode))
        if length_penalty is not None:
            decode.length_penalty = length_penalty
        return decode


def input_lines(path: str | None, replace_bad_utf8: bool = False, skip: int = 0) -> Iterator[str]:
    """Lines of a file (or stdin for None / '-'), split on ``\\n`` only, read as they come.

    A line that is not UTF-8 is an error naming its number, or with ``replace_bad_utf8`` is
    decoded with U+FFFD for the bad bytes. The first ``skip`` lines are passed over.
    """
    name = "stdin" if path in (None, "-") else path
    if path in (None, "-"):
        stream = sys.stdin.buffer
    elif not Path(path).is_file():
        raise UserError(f"input file not found: {path}")
    else:
        stream = open(path, "rb")
    try:
        for number, raw in enumerate(stream, 1):
            if number <= skip:
                continue
            raw = raw.removesuffix(b"\n").removesuffix(b"\r")
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError:
                if not replace_bad_utf8:
                    raise UserError(
                        f"{name}: line {number} is not valid UTF-8 "
                        "(--replace-bad-utf8 translates it with U+FFFD for the bad bytes)"
                    ) from None
                yield raw.decode("utf-8", errors="replace")
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


def finished_lines(partial: Path) -> int:
    """How many whole lines a partly written output holds; a cut-off last line is removed."""
    data = partial.read_bytes()
    whole = data[: data.rfind(b"\n") + 1]
    if len(whole) != len(data):
        with open(partial, "r+b") as f:
            f.truncate(len(whole))
    return whole.count(b"\n")

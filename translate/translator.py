"""Translator: a model directory loaded once, translating lists of strings or whole files."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TextIO

import torch
from torch import nn

from .config import Config
from .data.batches import pair_batch
from .data.vocab import EOS, Vocab
from .decoding import Candidate, DecodeOptions, Translation
from .errors import UserError
from .model.ensemble import Ensemble, members, vocabulary_difference
from .model.seq2seq import Seq2Seq, build_model, reverse_padded
from .modeldir import ModelDirError, ModelFiles, read_model_dir
from .output import CHUNK_LINES, translate_stream
from .runtime import autocast, pick_device, resolve_dtype
from .search import search_batches


def quantize_int8(model: Seq2Seq) -> Seq2Seq:
    """Dynamic int8 quantization of the linear and GRU/LSTM layers (weights int8, CPU)."""
    import warnings

    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():  # torch marks the eager quantization API as deprecated
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, {nn.Linear, nn.GRU, nn.LSTM}, dtype=torch.qint8)


class Translator:
    """A trained model (or an ensemble of them) with its vocabularies and decoding defaults."""

    def __init__(
        self,
        cfg: Config,
        model: Seq2Seq,
        src_vocab: Vocab,
        tgt_vocab: Vocab,
        device: torch.device,
        dtype: str = "fp32",
        model_dirs: Sequence[Path] = (),
    ):
        self.cfg, self.model, self.device, self.dtype = cfg, model, device, dtype
        self.src_vocab, self.tgt_vocab = src_vocab, tgt_vocab
        self.model_dirs = list(model_dirs)  # where the model (each member) was loaded from
        # sources longer than twice the training limit are cut: the model never saw such lengths
        self.max_source_len = max(4, 2 * cfg.data.max_len)

    @classmethod
    def from_dir(
        cls,
        path: str | Path,
        device: str | None = None,
        dtype: str = "fp32",
        quantize: str | None = None,
    ) -> Translator:
        """Load a model directory written by training (no code in its files runs).

        ``dtype="bf16"`` (or "fp16", GPU only) runs the search under autocast;
        ``quantize="int8"`` applies PyTorch dynamic quantization to the linear and recurrent
        layers (CPU only).
        """
        return cls.from_dirs([path], device, dtype, quantize)

    @classmethod
    def from_dirs(
        cls,
        paths: Sequence[str | Path],
        device: str | None = None,
        dtype: str = "fp32",
        quantize: str | None = None,
    ) -> Translator:
        """Load one model directory, or several as an ensemble that averages their
        log-probabilities at each step (:class:`~translate.model.ensemble.Ensemble`); one is
        the model itself, unwrapped. The models must share their SentencePiece pieces on both
        sides (else refused, naming both directories); they may differ in architecture. The
        first one gives the decoding defaults, the length limits and the batch size, and
        splits the source into pieces. Device, dtype and quantization apply to every one.
        A single path (a string, not a list) is one directory, not a sequence of letters.
        """
        if isinstance(paths, (str, Path)):
            paths = [paths]
        if quantize not in (None, "int8"):
            raise UserError(f"quantize must be int8, got {quantize!r}")
        if not paths:
            raise UserError("no model directory given")
        loaded = [_load(path) for path in paths]
        first_files = loaded[0][0]
        for path, (files, _) in zip(paths[1:], loaded[1:]):
            _check_same_vocabularies(paths[0], first_files, path, files)
        dev = pick_device(device)
        dtype = resolve_dtype(dtype, dev, log=lambda message: print(message, file=sys.stderr))
        models = []
        for _, model in loaded:
            model = model.to(dev).eval()
            if quantize == "int8":
                if dev.type != "cpu":
                    raise UserError(
                        "int8 dynamic quantization runs on the CPU only; add --device cpu"
                    )
                model = quantize_int8(model)
            models.append(model)
        model = models[0] if len(models) == 1 else Ensemble(models)
        vocabs = first_files.src_vocab, first_files.tgt_vocab
        return cls(first_files.cfg, model, *vocabs, dev, dtype, [Path(p) for p in paths])

    @property
    def defaults(self) -> DecodeOptions:
        """The model's decoding options, from its config's decode section (read at each use, so
        that a changed ``cfg.decode`` applies)."""
        return DecodeOptions.from_config(self.cfg.decode)

    def check(self, options: DecodeOptions) -> None:
        """Refuse options this model cannot follow: attention from a model without it (of an
        ensemble: from one in which no member has it)."""
        if options.attention and not any(
            member.decoder.attention is not None for member in members(self.model)
        ):
            if isinstance(self.model, Ensemble):
                raise UserError("no model of this ensemble has attention (model.attention is none)")
            raise UserError("this model has no attention (model.attention is none)")

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
        src_ids = self.src_vocab.encode([lines[i] for i in keep])
        truncated = [len(ids) > self.max_source_len for ids in src_ids]
        src_ids = [ids[: self.max_source_len] for ids in src_ids]
        with autocast(self.device, self.dtype):
            hyps = search_batches(self.model, src_ids, self.cfg.decode, self.device, options)
        out = [Translation([Candidate("", 0.0)] * options.n_best) for _ in lines]
        for index, ids, nbest, cut in zip(keep, src_ids, hyps, truncated):
            candidates = [
                Candidate(self.tgt_vocab.decode(h.tokens), h.score, h.log_prob) for h in nbest
            ]
            out[index] = Translation(candidates, cut)
            if options.attention:
                self._attach_attention(out[index], ids, [h.tokens for h in nbest])
        return out

    @torch.no_grad()
    def _attach_attention(self, translation: Translation, src_ids: list[int], tokens: list) -> None:
        """Pieces, attention weights and alignments of each candidate, from one teacher-forced
        pass over all of them (of an ensemble: the mean weights of the members with
        attention)."""
        batch = pair_batch([src_ids] * len(tokens), tokens)
        src_tokens, src_lengths = (
            batch.src_tokens.to(self.device),
            batch.src_lengths.to(self.device),
        )
        every = []
        for member in members(self.model):
            if member.decoder.attention is not None:
                weights = attention_weights(
                    member, src_tokens, src_lengths, batch.tgt_in, self.dtype
                )
                every.append(weights.float())
        weights = every[0] if len(every) == 1 else torch.stack(every).mean(dim=0)
        translation.source_pieces = [self.src_vocab.piece(i) for i in [*src_ids, EOS]]
        for candidate, ids, rows in zip(translation.candidates, tokens, weights.float().cpu()):
            rows = rows[: len(ids) + 1, : len(src_ids) + 1]  # (tgt pieces + EOS, src + EOS)
            candidate.pieces = [self.tgt_vocab.piece(i) for i in [*ids, EOS]]
            candidate.attention = rows.tolist()
            candidate.alignment = rows.argmax(dim=1).tolist()

    def attention(self, sentence: str, beam: int | None = None):
        """Source pieces, translated pieces (EOS included) and the attention weights
        (tgt_len, src_len) the model used to produce its translation of ``sentence``."""
        if not sentence.strip():
            raise UserError("attention needs a sentence to translate, got a blank one")
        options = self.defaults.override(beam=beam or 1, attention=True)
        translation = self.translate_batch([sentence], options)[0]
        best = translation.candidates[0]
        return translation.source_pieces, best.pieces, torch.tensor(best.attention)

    def translate_stream(
        self,
        lines: Iterable[str],
        out: TextIO,
        options: DecodeOptions | None = None,
        chunk_size: int = CHUNK_LINES,
        progress=None,
        rows: bool = False,
        first_line: int = 0,
    ) -> tuple[int, int]:
        """:func:`translate.output.translate_stream` with this model: lines in chunks into
        ``out``, plain or as rows. Returns how many lines were translated and how many cut."""
        return translate_stream(self, lines, out, options, chunk_size, progress, rows, first_line)


def _load(path: str | Path) -> tuple[ModelFiles, Seq2Seq]:
    """A model directory's files and its model with their weights, on the CPU."""
    files = read_model_dir(path)
    model = build_model(files.cfg.model, len(files.src_vocab), len(files.tgt_vocab))
    try:
        model.load_state_dict(files.weights)
    except (RuntimeError, TypeError) as err:
        raise ModelDirError(
            f"the weights in {path} do not match its config and vocabularies: "
            + _first_mismatch(str(err))
        ) from None
    return files, model


def _check_same_vocabularies(first_path, first: ModelFiles, path, other: ModelFiles) -> None:
    """Refuse in one line an ensemble member whose ids mean other pieces than the first's."""
    for side, mine, theirs in (
        ("source", first.src_vocab, other.src_vocab),
        ("target", first.tgt_vocab, other.tgt_vocab),
    ):
        difference = vocabulary_difference(mine, theirs)
        if difference is not None:
            raise UserError(
                f"cannot ensemble {first_path} and {path}: their {side} SentencePiece models "
                f"differ ({difference}); the models of an ensemble must share their pieces"
            )


@torch.no_grad()
def attention_weights(
    model: Seq2Seq,
    src_tokens: torch.Tensor,
    src_lengths: torch.Tensor,
    tgt_in: torch.Tensor,
    dtype: str = "fp32",
) -> torch.Tensor:
    """A model's teacher-forced attention weights (batch, tgt_len, src_len) over the source
    positions in their order (a model that reads the source backwards attends over it
    reversed), the decoder run under ``dtype``'s autocast."""
    memory = model.encode(src_tokens, src_lengths)
    with autocast(src_tokens.device, dtype):
        _, weights = model.decoder(tgt_in.to(src_tokens.device), model.init_state(memory), memory)
    if model.cfg.reverse_source:
        weights = reverse_padded(weights.transpose(1, 2), src_lengths).transpose(1, 2)
    return weights


def _first_mismatch(message: str) -> str:
    """The first problem of torch's load_state_dict message (one line of its many), and how
    many more there are."""
    problems = [line.strip() for line in message.splitlines()[1:] if line.strip()]
    if not problems:
        return message.splitlines()[0] if message else "unknown difference"
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return problems[0].rstrip(".") + more

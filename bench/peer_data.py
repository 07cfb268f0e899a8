"""The subword data every peer toolkit reads, and the scoring of their output: one joint
SentencePiece model (trained here, or an existing one: see :func:`prepare_data`) turns a
corpus's splits into pre-tokenized files, and each peer's output is detokenized here before
sacreBLEU scores it against the raw references.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import sacrebleu
import sentencepiece as spm

from .peer_runs import ChildRun, PeerError
from .peer_setups import BENCH


@dataclass(frozen=True)
class Corpus:
    """The split names of a corpus: files ``{split}.de`` and ``{split}.en``, plain or .gz."""

    train: str
    dev: str
    test: str | None = None


CORPORA = {
    "multi30k": Corpus("train", "val", "test_2016_flickr"),
    "tatoeba": Corpus("train", "valid"),  # no test split
}


# --- shared subword data --------------------------------------------------------------------


@dataclass
class PeerData:
    """Pre-tokenized files (space-separated SentencePiece pieces) that all peers read."""

    folder: Path

    @property
    def spm_model(self) -> Path:
        return self.folder / "spm.model"

    @property
    def vocab(self) -> Path:
        """One piece a line, no specials: each toolkit adds its own."""
        return self.folder / "vocab.txt"

    @property
    def train(self) -> Path:
        """Prefix of ``train.de`` / ``train.en``."""
        return self.folder / "train"

    @property
    def val(self) -> Path:
        return self.folder / "val"

    @property
    def val_ref(self) -> Path:
        """The untokenized English references of ``val.de``."""
        return reference_of(self.val.with_suffix(".de"))

    @property
    def test_src(self) -> Path:
        return self.folder / "test.de"

    @property
    def test_ref(self) -> Path:
        """The untokenized English references of ``test_src``."""
        return reference_of(self.test_src)


def reference_of(src_file: Path) -> Path:
    """Where :func:`prepare_data` puts the raw reference of a pieces file: ``test.de`` ->
    ``test.ref.en``."""
    return Path(src_file).with_suffix(".ref.en")


def read_corpus_lines(data_dir: Path, name: str) -> list[str]:
    """Lines of ``data_dir/name.gz`` or, failing that, ``data_dir/name``."""
    path = Path(data_dir) / f"{name}.gz"
    if path.is_file():
        with gzip.open(path, "rt", encoding="utf-8") as file:
            return file.read().splitlines()
    return (Path(data_dir) / name).read_text(encoding="utf-8").splitlines()


def prepare_data(
    data_dir: Path,
    workdir: Path,
    test_sentences: int | None = None,
    threads: int = 2,
    *,
    corpus: Corpus = CORPORA["multi30k"],
    spm_model: Path | None = None,
    vocab_size: int = BENCH.vocab_size,
) -> PeerData:
    """Write the train, dev and test (its first ``test_sentences``; none when ``corpus`` has
    no test split) splits of ``corpus`` in ``data_dir`` as pieces of one joint SentencePiece
    model: ``spm_model`` when given (e.g. our experiment's ``spm.model``, so that a peer trains
    on the same pieces as ours), else one of ``vocab_size`` trained here on the training data.
    The dev split becomes ``val`` whatever its name. Skipped when ``workdir/data`` already
    holds the same preparation."""
    data = PeerData(Path(workdir) / "data")
    marker = data.folder / "prepared.json"
    recipe = json.dumps(
        {
            "data_dir": str(data_dir),
            "splits": asdict(corpus),
            "spm": file_digest(spm_model) if spm_model else None,
            "vocab": None if spm_model else vocab_size,
            "test": test_sentences,
            "refs": 2,
        }
    )
    if marker.is_file() and marker.read_text() == recipe:
        return data
    data.folder.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    train = {lang: read_corpus_lines(data_dir, f"{corpus.train}.{lang}") for lang in ("de", "en")}
    if spm_model:
        shutil.copyfile(spm_model, data.spm_model)
    else:
        train_spm(train["de"] + train["en"], data.folder / "spm", vocab_size, threads)
    processor = spm.SentencePieceProcessor(model_file=str(data.spm_model))
    data.vocab.write_text("".join(f"{piece}\n" for piece in plain_pieces(processor)), "utf-8")
    splits = {corpus.train: data.train, corpus.dev: data.val}
    if corpus.test:
        splits[corpus.test] = data.test_src.with_suffix("")
    for split, prefix in splits.items():
        for lang in ("de", "en"):
            lines = (
                train[lang]
                if split == corpus.train
                else read_corpus_lines(data_dir, f"{split}.{lang}")
            )
            if split == corpus.test:
                lines = lines[:test_sentences]
            encoded = processor.encode(lines, out_type=str)
            write_lines(prefix.with_suffix(f".{lang}"), [" ".join(p) for p in encoded])
    write_lines(data.val_ref, read_corpus_lines(data_dir, f"{corpus.dev}.en"))
    if corpus.test:
        write_lines(
            data.test_ref, read_corpus_lines(data_dir, f"{corpus.test}.en")[:test_sentences]
        )
    marker.write_text(recipe)
    return data


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes: a given SentencePiece model is part of a preparation's key."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def train_spm(sentences: list[str], prefix: Path, vocab_size: int, threads: int) -> None:
    """Train a joint unigram SentencePiece model on ``sentences`` as ``{prefix}.model``."""
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([s for s in sentences if s.strip()]),
        model_prefix=str(prefix),
        vocab_size=vocab_size,
        model_type="unigram",
        character_coverage=1.0,
        hard_vocab_limit=False,
        num_threads=threads,
        minloglevel=2,
    )


def plain_pieces(processor: spm.SentencePieceProcessor) -> list[str]:
    """The pieces of a SentencePiece model a toolkit's vocabulary file can hold: no control or
    unknown symbols (each toolkit adds its own), none with whitespace or line breaks inside
    (the toolkits split vocabulary files on them)."""
    return [
        piece
        for i in range(processor.get_piece_size())
        if not (processor.is_control(i) or processor.is_unknown(i))
        and (piece := processor.id_to_piece(i)).split() == [piece] == piece.splitlines()
    ]


def write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


# --- detokenising and scoring ---------------------------------------------------------------


def detokenize(line: str) -> str:
    """Text of a line of space-separated SentencePiece pieces."""
    return "".join(line.split()).replace("\u2581", " ").strip()


def score_bleu(hyp_file: Path, ref_file: Path) -> tuple[float, str]:
    """Cased sacreBLEU (13a) of a pieces file against raw references, and its signature."""
    hyps = [detokenize(line) for line in hyp_file.read_text(encoding="utf-8").splitlines()]
    refs = ref_file.read_text(encoding="utf-8").splitlines()
    if len(hyps) != len(refs):
        raise PeerError(f"{hyp_file} has {len(hyps)} lines, {ref_file} has {len(refs)}")
    bleu = sacrebleu.BLEU()
    return bleu.corpus_score(hyps, [refs]).score, str(bleu.get_signature())


def decoded(hyp_file: Path, ref_file: Path, sentences_per_s: float, run: ChildRun) -> dict:
    """The row of a translation run: speed, BLEU with its signature, peak memory."""
    bleu, signature = score_bleu(hyp_file, ref_file)
    return {
        "sentences_per_s": sentences_per_s,
        "bleu": bleu,
        "signature": signature,
        "rss_mib": run.rss_mib,
    }

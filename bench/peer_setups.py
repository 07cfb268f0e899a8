"""Every hyperparameter of a peer toolkit's training and decoding, and the named set-ups that
the peer benchmarks run.

The default set-up, ``bench``: embeddings 256, a one-layer bidirectional encoder of 2 x 256
(its concatenated states are 512 wide: OpenNMT-py's and fairseq's decoders start from them,
so it must be 512), a one-layer decoder of 512 with attention and input feeding, untied
embeddings. OpenNMT-py uses LSTMs and MLP/Bahdanau attention, JoeyNMT GRUs and Bahdanau
attention, fairseq LSTMs and its own bilinear (Luong "general") attention. ``bench_noattn``
drops the attention (OpenNMT-py and fairseq; JoeyNMT has no such variant): the peers of our
context-vector model (see :func:`bench.opennmt.opennmt_config` and
:func:`bench.fairseq.fairseq_args`). ``recipe`` is OpenNMT-py as near our attention recipe as
it goes (embeddings 512, GRUs, Luong's "general" score), which bench/gpu.py also runs on a GPU.
Training follows recipes/multi30k: Adam 0.002 held constant, dropout 0.3, label smoothing 0.1,
clipping at norm 1, loss normalised by target tokens, batches of 4000 tokens (as each toolkit
counts them: the longer side, padding included) and pairs of up to 80 subwords. Decoding: beam
5, 64 sentences a batch, length penalty 1.0 (GNMT's for OpenNMT-py and JoeyNMT; fairseq divides
by the length).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace


@dataclass(frozen=True)
class PeerSetup:
    """Every hyperparameter of a peer's training and decoding, in one value that names can be
    given to (:data:`SETUPS`); the defaults are the bench's set-up."""

    emb_dim: int = 256
    enc_dir_dim: int = 256  # per direction: the two directions side by side are 512
    hidden_dim: int = 512  # the decoder's; it starts from the encoder's 512-wide final states
    attention: bool = True  # False: the source reaches the decoder through its first state only
    batch_size: int = 4000
    batch_type: str = "tokens"  # tokens (the longer side, padding included) | sents
    learning_rate: float = 0.002  # Adam, held constant
    dropout: float = 0.3
    label_smoothing: float = 0.1
    clip_norm: float = 1.0
    max_len: int = 80  # subwords per side; longer training pairs are dropped
    vocab_size: int = 8000  # of the SentencePiece model trained when none is given
    decode_batch: int = 64  # sentences
    beam: int = 5
    length_penalty: float = 1.0
    seed: int = 1234
    # OpenNMT-py's cell and attention score (JoeyNMT always runs GRUs with Bahdanau's score,
    # fairseq LSTMs with Luong's "general" one): LSTM | GRU, mlp (Bahdanau) | general (Luong)
    opennmt_rnn: str = "LSTM"
    opennmt_attention: str = "mlp"

    def __post_init__(self) -> None:
        if self.batch_type not in ("tokens", "sents"):
            raise ValueError(f"batch_type must be tokens or sents, not {self.batch_type!r}")
        if self.opennmt_rnn not in ("LSTM", "GRU"):
            raise ValueError(f"opennmt_rnn must be LSTM or GRU, not {self.opennmt_rnn!r}")
        if self.opennmt_attention not in ("mlp", "general"):
            raise ValueError(
                f"opennmt_attention must be mlp or general, not {self.opennmt_attention!r}"
            )


BENCH = PeerSetup()
SETUPS: dict[str, PeerSetup] = {
    "bench": BENCH,
    "bench_noattn": replace(BENCH, attention=False),  # the peer of our context-vector model
    # one change each from "bench": OpenNMT-py's sweep at equal wall-clock (SWEEP)
    "sents64": replace(BENCH, batch_size=64, batch_type="sents"),
    "sents128": replace(BENCH, batch_size=128, batch_type="sents"),
    "lr0.001": replace(BENCH, learning_rate=0.001),
    "dropout0.2": replace(BENCH, dropout=0.2),
    "smoothing0": replace(BENCH, label_smoothing=0.0),
    # the sweep's winning batches without attention, for the context-vector pair's rerun
    "sents64_noattn": replace(BENCH, attention=False, batch_size=64, batch_type="sents"),
    # OpenNMT-py as near our attention recipe as its encoder-decoder allows (bench/gpu.py):
    # embeddings 512, GRUs, Luong's "general" score. Its decoder starts from the encoder's
    # concatenated final states, so a 512-wide decoder takes a 2 x 256 encoder (ours: 2 x 512)
    "recipe": replace(BENCH, emb_dim=512, opennmt_rnn="GRU", opennmt_attention="general"),
    # the same at recipes/tatoeba's sizes: its pairs are short, so its max_len is 64
    "tatoeba": replace(
        BENCH, emb_dim=512, opennmt_rnn="GRU", opennmt_attention="general", max_len=64
    ),
}
# and with the sweep's winning batches, for the Tatoeba lead against OpenNMT-py at its best
SETUPS["tatoeba_sents64"] = replace(SETUPS["tatoeba"], batch_size=64, batch_type="sents")
SWEEP = ["bench", "sents64", "sents128", "lr0.001", "dropout0.2", "smoothing0"]
# the sweep's winner (README, Time to quality: each set-up 10 minutes, dev BLEU of the last
# checkpoint): time_to_bleu.py's OpenNMT-py rows are this set-up, then the bench's as before
SWEEP_WINNER = "sents64"
TIME_TO_QUALITY = [SWEEP_WINNER, "bench"]


def changes(setup: PeerSetup, base: PeerSetup = BENCH) -> str:
    """How ``setup`` differs from ``base``, e.g. ``batch_size=64 batch_type=sents``, so a table
    row says what it measured; ``-`` when it does not."""
    diffs = [
        f"{f.name}={getattr(setup, f.name)}"
        for f in fields(setup)
        if getattr(setup, f.name) != getattr(base, f.name)
    ]
    return " ".join(diffs) or "-"


def shared_vocab_size(setups: list[PeerSetup]) -> int:
    """The one vocabulary size of set-ups that train on the same prepared data."""
    sizes = {setup.vocab_size for setup in setups}
    if len(sizes) != 1:
        raise ValueError(f"set-ups that share data need one vocab_size, not {sorted(sizes)}")
    return sizes.pop()

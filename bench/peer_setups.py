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

fairseq also runs a Transformer (``arch="transformer"``: post-norm, sinusoidal positions, one
table for source, target and output pieces), trained as fairseq's IWSLT'14 De-En recipe does:
Adam with betas (0.9, 0.98) and weight decay 1e-4, an inverse-square-root schedule after a
linear warm-up, dropout 0.3, label smoothing 0.1, no clipping, lr 5e-4. ``transformer_iwslt``
has that recipe's sizes (transformer_iwslt_de_en), ``transformer_small`` and
``transformer_tiny`` fewer layers and narrower ones, for a CPU budget; the ``TRANSFORMER_SWEEP``
variants change one thing each from their base.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

# the fields only fairseq's Transformer reads; an LSTM set-up keeps their defaults
TRANSFORMER_ONLY = (
    "layers",
    "ffn_dim",
    "heads",
    "lr_schedule",
    "warmup_updates",
    "adam_betas",
    "weight_decay",
)


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
    # fairseq's model: lstm (the sizes above; every toolkit runs it) or transformer, fairseq
    # only: emb_dim wide, ``layers`` layers on each side with ``heads`` heads and feed-forward
    # layers ``ffn_dim`` wide (enc_dir_dim, hidden_dim and attention are the LSTM's)
    arch: str = "lstm"
    layers: int = 1
    ffn_dim: int = 0
    heads: int = 0
    # fixed: learning_rate held; inverse_sqrt: linear warm-up from 1e-7 over warmup_updates,
    # then learning_rate * sqrt(warmup_updates / update)
    lr_schedule: str = "fixed"
    warmup_updates: int = 0
    adam_betas: tuple[float, float] = (0.9, 0.999)  # torch's and every toolkit's default
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.batch_type not in ("tokens", "sents"):
            raise ValueError(f"batch_type must be tokens or sents, not {self.batch_type!r}")
        if self.opennmt_rnn not in ("LSTM", "GRU"):
            raise ValueError(f"opennmt_rnn must be LSTM or GRU, not {self.opennmt_rnn!r}")
        if self.opennmt_attention not in ("mlp", "general"):
            raise ValueError(
                f"opennmt_attention must be mlp or general, not {self.opennmt_attention!r}"
            )
        if self.arch == "transformer":
            self._check_transformer()
        elif self.arch != "lstm":
            raise ValueError(f"arch must be lstm or transformer, not {self.arch!r}")
        else:  # the RNN toolkits read none of these: refused rather than ignored
            for field in fields(self):
                if field.name in TRANSFORMER_ONLY and getattr(self, field.name) != field.default:
                    raise ValueError(f"{field.name} is the Transformer's: arch='transformer'")

    def _check_transformer(self) -> None:
        if self.layers < 1 or self.ffn_dim < 1 or self.heads < 1:
            raise ValueError("a transformer needs layers, ffn_dim and heads of at least 1")
        if self.emb_dim % self.heads:
            raise ValueError(f"emb_dim {self.emb_dim} is not a multiple of heads {self.heads}")
        if not self.attention:
            raise ValueError("a transformer attends: attention must stay True")
        if self.lr_schedule not in ("fixed", "inverse_sqrt"):
            raise ValueError(f"lr_schedule must be fixed or inverse_sqrt, not {self.lr_schedule!r}")
        if (self.lr_schedule == "inverse_sqrt") != (self.warmup_updates > 0):
            raise ValueError("warmup_updates > 0 goes with lr_schedule inverse_sqrt, and only")


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
# fairseq's Transformer, trained as its IWSLT'14 De-En recipe (examples/translation) trains
# transformer_iwslt_de_en: batches of 4000 tokens here (4096 there)
TRANSFORMER_IWSLT = replace(
    BENCH,
    arch="transformer",
    emb_dim=512,
    layers=6,
    ffn_dim=1024,
    heads=4,
    learning_rate=5e-4,
    lr_schedule="inverse_sqrt",
    warmup_updates=4000,
    adam_betas=(0.9, 0.98),
    weight_decay=1e-4,
    clip_norm=0.0,
)
SETUPS["transformer_iwslt"] = TRANSFORMER_IWSLT
SETUPS["transformer_small"] = replace(TRANSFORMER_IWSLT, emb_dim=256, layers=3)
SETUPS["transformer_tiny"] = replace(TRANSFORMER_IWSLT, emb_dim=256, layers=2, ffn_dim=512)
# one change each from their base, named "{base}_{change}"
TRANSFORMER_CHANGES = {
    "lr1e-3": {"learning_rate": 1e-3},
    "warmup1000": {"warmup_updates": 1000},
    "warmup400": {"warmup_updates": 400},  # minutes on a CPU are hundreds of updates
    "dropout0.1": {"dropout": 0.1},
    "batch8000": {"batch_size": 8000},
}
for _base in ("transformer_small", "transformer_tiny"):
    for _change, _values in TRANSFORMER_CHANGES.items():
        SETUPS[f"{_base}_{_change}"] = replace(SETUPS[_base], **_values)
# a second round from warm-up 400 (at a few minutes on a CPU, the warm-up decides): a larger
# rate, or smaller batches for more updates in the same minutes
for _base in ("transformer_small_warmup400", "transformer_tiny_warmup400"):
    SETUPS[f"{_base}_lr1e-3"] = replace(SETUPS[_base], learning_rate=1e-3)
    SETUPS[f"{_base}_batch2000"] = replace(SETUPS[_base], batch_size=2000)
# the tiny one's two winning changes of that round together, and larger rates still (each
# doubling gained at 10 and 30 minutes, so the sweep goes on until one loses)
for _rate in ("1e-3", "2e-3", "4e-3"):
    SETUPS[f"transformer_tiny_warmup400_batch2000_lr{_rate}"] = replace(
        SETUPS["transformer_tiny_warmup400_batch2000"], learning_rate=float(_rate)
    )
# the Transformer's sweep at equal wall-clock (python -m bench.transformer --setups ...): the
# three sizes, then the small one's variants
TRANSFORMER_SWEEP = ["transformer_iwslt", "transformer_small", "transformer_tiny"]
TRANSFORMER_SWEEP += [f"transformer_small_{change}" for change in TRANSFORMER_CHANGES]
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

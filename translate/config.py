"""One typed config tree (data, model, train, decode) shared by the CLI, recipes and the Python API.

YAML files and ``key=value`` overrides are checked against the dataclasses: an unknown key or a
wrong type is a :class:`ConfigError` naming the key and the closest valid one.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .decoding import DecodeOptions, DecodingError
from .errors import UserError


class ConfigError(UserError):
    """A user mistake in a config file or override."""


@dataclass
class CorpusConfig:
    """One training corpus, and how many times per epoch each of its pairs is seen."""

    path: str = ""  # prefix (``train`` -> train.de / train.en), TSV/JSONL file, or ``hub:NAME``
    weight: float = 1.0  # 2: every pair twice an epoch; 0.5: a random half of them


@dataclass
class DataConfig:
    """Where the parallel text is and how it becomes subword ids."""

    # one corpus (a path) or several: [PATH, {path: PATH, weight: 3}, ...]
    train: list[CorpusConfig] = field(default_factory=list)
    dev: str = ""  # the dev set: a path as for the training corpora
    src_lang: str = "de"  # source language code, the suffix of a corpus's source file (train.de)
    tgt_lang: str = "en"  # target language code, the suffix of its target file (train.en)
    vocab_size: int = 8000  # SentencePiece pieces asked for; a small corpus may give fewer
    spm_type: str = "unigram"  # unigram | bpe
    joint_vocab: bool = True  # one SentencePiece model for both languages
    character_coverage: float = 1.0  # share of characters kept; the rarest become unknown pieces
    max_len: int = 100  # subword tokens per side; longer training pairs are dropped
    max_ratio: float = 3.0  # longer/shorter length ratio above which a training pair is dropped
    spm_sample_size: int = 1_000_000  # sentences used to train SentencePiece
    replace_bad_utf8: bool = False  # read invalid UTF-8 as U+FFFD instead of stopping
    sampling_alpha: float = 0.0  # > 0: each epoch, a segmentation of each training line drawn
    # from its 16 best ~ P ** alpha (subword regularisation, Kudo 2018; unigram only), e.g. 0.2


@dataclass
class ModelConfig:
    """Sizes of the context-vector encoder-decoder (Cho et al. 2014)."""

    cell: str = "gru"  # rnn | gru | lstm
    emb_dim: int = 256  # width of the word embeddings
    hidden_dim: int = 512  # the decoder's state (and the encoder's, unless enc_hidden_dim)
    enc_hidden_dim: int = 0  # the encoder's state in each direction; 0: hidden_dim
    enc_layers: int = 1  # stacked encoder RNN layers
    dec_layers: int = 1  # stacked decoder RNN layers
    bidirectional: bool = True  # the encoder reads the source both ways
    dropout: float = 0.2  # in training: on embeddings, between RNN layers, before the output
    tie_embeddings: bool = False  # share target embedding and output projection
    tie_source_embedding: bool = False  # also share the source embedding (joint vocabulary)
    scale_embeddings: bool = True  # a tied table is read times sqrt(emb_dim) (Vaswani et al.)
    reverse_source: bool = False  # read the source backwards (Sutskever et al. 2014)
    context_pool: str = "none"  # none | max | mean: add a pooled summary of all encoder states
    attention: str = "none"  # none | dot | general | additive (on top of the context vector)
    attention_step: str = "after"  # after: Luong, fused over all steps; before: Bahdanau, fed
    # into the RNN's input one step at a time


@dataclass
class TrainConfig:
    """The optimisation loop: batches, Adam, clipping, validation and checkpoints."""

    batch_tokens: int = 4000  # tokens per batch, padding included, over all processes together
    accum_steps: int = 1  # each process's share of a batch in this many parts, one at a time
    lr: float = 1e-3  # Adam's base learning rate: the peak after warm-up
    clip_norm: float = 1.0  # gradients are scaled down to this global L2 norm when above
    label_smoothing: float = 0.0  # share of each target spread over the vocabulary
    max_steps: int = 0  # 0 = no step limit
    max_epochs: int = 10  # passes over the training data
    max_minutes: float = 0.0  # 0 = no wall-clock limit
    valid_every: int = 500  # steps between validations
    valid_bleu_sentences: int = 500  # dev sentences translated (greedy) for dev BLEU; 0 = skip
    warmup_steps: int = 0  # linear learning-rate warm-up from 0
    lr_schedule: str = "constant"  # constant | cosine: anneal to 0 over max_steps/max_minutes
    lr_decay: float = 0.5  # multiply the rate by this when dev BLEU does not improve
    patience: int = 0  # stop after this many validations without improvement; 0 = never
    seed: int = 1  # weights, batch order and dropout: the same seed, the same run
    threads: int = 0  # torch threads; 0 = all cores
    dtype: str = "fp32"  # fp32 | bf16 | fp16 | auto (autocast, weights stay fp32; fp16: GPU only,
    # with loss scaling; auto: bf16 where it is fast, i.e. GPUs and CPUs with AMX/AVX-512 BF16)
    log_every: int = 50  # steps between log records (metrics.jsonl and the bar)
    keep_checkpoints: int = 0  # keep the weights of the last N validations, for averaging
    init_from: str = ""  # a model directory to fine-tune: the run starts from its weights and
    # takes its SentencePiece model(s), vocabulary and model settings; kept here as an absolute
    # path, so the model directory names its parent
    init_optimizer: bool = False  # with init_from: also its Adam state (from its checkpoint.pt)


@dataclass
class DecodeConfig:
    """Search settings used by ``translate`` unless overridden on the command line: the beam
    and length penalty are the model's :class:`~translate.decoding.DecodeOptions`."""

    beam: int = DecodeOptions.beam  # beam size; 1 = greedy
    length_penalty: float = DecodeOptions.length_penalty  # GNMT alpha; 0 = raw log-probability
    max_len_a: float = 1.5  # maximum output length = a * source_length + b
    max_len_b: int = 10  # the b of max_len_a
    batch_size: int = 64  # sentences per batch
    drop_finished: bool = True  # beam search: a sentence whose beams all ended leaves the batch


@dataclass
class Config:
    """The whole experiment; ``out_dir`` becomes the self-contained model directory."""

    out_dir: str = "experiments/default"  # the model directory this run writes
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)


_CHOICES = {
    "data.spm_type": ("unigram", "bpe"),
    "model.cell": ("rnn", "gru", "lstm"),
    "model.attention": ("none", "dot", "general", "additive"),
    "model.attention_step": ("after", "before"),
    "model.context_pool": ("none", "max", "mean"),
    "train.lr_schedule": ("constant", "cosine"),
    "train.dtype": ("fp32", "bf16", "fp16", "auto"),
}


def _from_dict(cls: type, values: dict, prefix: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"'{prefix.rstrip('.') or 'config'}' must be a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" Did you mean '{prefix}{close[0]}'?" if close else ""
            raise ConfigError(
                f"unknown config key '{prefix}{key}'.{hint} Valid keys: {', '.join(names)}"
            )
        kwargs[key] = _coerce(hints[key], value, prefix + key)
    return cls(**kwargs)


def _coerce(kind: Any, value: Any, key: str) -> Any:
    if typing.get_origin(kind) is list:  # a single value stands for a list of one
        (item,) = typing.get_args(kind)
        values = value if isinstance(value, list) else [] if value in (None, "") else [value]
        return [_coerce(item, v, f"{key}[{i}]") for i, v in enumerate(values)]
    if kind is CorpusConfig and isinstance(value, str):  # a corpus may be given by its path
        value = {"path": value}
    if dataclasses.is_dataclass(kind):
        return _from_dict(kind, value or {}, key + ".")
    if isinstance(kind, types.UnionType):
        kind = next(k for k in typing.get_args(kind) if k is not type(None))
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, (str, int, float)) and not isinstance(value, bool),
    }[kind]
    if not ok:
        raise ConfigError(f"'{key}' must be {kind.__name__}, got {value!r}")
    value = kind(value)
    if key in _CHOICES and value not in _CHOICES[key]:
        raise ConfigError(f"'{key}' must be one of {', '.join(_CHOICES[key])}, got {value!r}")
    return value


def _check_ranges(cfg: Config) -> None:
    positive = {
        "data.vocab_size": cfg.data.vocab_size,
        "data.max_len": cfg.data.max_len,
        "model.emb_dim": cfg.model.emb_dim,
        "model.hidden_dim": cfg.model.hidden_dim,
        "model.enc_layers": cfg.model.enc_layers,
        "model.dec_layers": cfg.model.dec_layers,
        "train.batch_tokens": cfg.train.batch_tokens,
        "train.accum_steps": cfg.train.accum_steps,
        "train.lr": cfg.train.lr,
        "train.clip_norm": cfg.train.clip_norm,
        "train.valid_every": cfg.train.valid_every,
        "decode.batch_size": cfg.decode.batch_size,
        "data.max_ratio": cfg.data.max_ratio,
        "data.spm_sample_size": cfg.data.spm_sample_size,
        "train.max_epochs": cfg.train.max_epochs,
        "train.log_every": cfg.train.log_every,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"'{key}' must be > 0, got {value}")
    at_least_zero = {  # 0 means "none" or "no limit" for most of these
        "data.sampling_alpha": cfg.data.sampling_alpha,
        "model.enc_hidden_dim": cfg.model.enc_hidden_dim,
        "train.max_steps": cfg.train.max_steps,
        "train.max_minutes": cfg.train.max_minutes,
        "train.warmup_steps": cfg.train.warmup_steps,
        "train.patience": cfg.train.patience,
        "train.threads": cfg.train.threads,
        "train.keep_checkpoints": cfg.train.keep_checkpoints,
        "train.valid_bleu_sentences": cfg.train.valid_bleu_sentences,
        "decode.max_len_a": cfg.decode.max_len_a,
        "decode.max_len_b": cfg.decode.max_len_b,
    }
    at_least_zero.update(
        {f"data.train[{i}].weight": c.weight for i, c in enumerate(cfg.data.train)}
    )
    for key, value in at_least_zero.items():
        if value < 0:
            raise ConfigError(f"'{key}' must be >= 0, got {value}")
    for key, value in (
        ("data.character_coverage", cfg.data.character_coverage),
        ("train.lr_decay", cfg.train.lr_decay),
    ):
        if not 0.0 < value <= 1.0:
            raise ConfigError(f"'{key}' must be in (0, 1], got {value}")
    try:
        DecodeOptions.from_config(cfg.decode)
    except DecodingError as err:
        raise ConfigError(err.naming(f"'decode.{err.setting}'")) from None
    if cfg.model.tie_source_embedding and not (cfg.model.tie_embeddings and cfg.data.joint_vocab):
        raise ConfigError(
            "'model.tie_source_embedding' needs 'model.tie_embeddings' and 'data.joint_vocab'"
        )
    enc_hidden = cfg.model.enc_hidden_dim or cfg.model.hidden_dim
    enc_out = enc_hidden * (2 if cfg.model.bidirectional else 1)
    if cfg.model.attention == "dot" and enc_out != cfg.model.hidden_dim:
        raise ConfigError(
            "'model.attention: dot' needs encoder outputs as wide as the decoder state "
            f"({enc_out} vs {cfg.model.hidden_dim}); use 'general' or a unidirectional encoder"
        )
    if cfg.data.sampling_alpha and cfg.data.spm_type != "unigram":
        raise ConfigError("'data.sampling_alpha' needs 'data.spm_type: unigram' (n-best lists)")
    if not 0.0 <= cfg.model.dropout < 1.0:
        raise ConfigError(f"'model.dropout' must be in [0, 1), got {cfg.model.dropout}")
    if not 0.0 <= cfg.train.label_smoothing < 1.0:
        raise ConfigError(
            f"'train.label_smoothing' must be in [0, 1), got {cfg.train.label_smoothing}"
        )


def config_from_dict(values: dict) -> Config:
    """Build and validate a :class:`Config` from nested plain values (as read from YAML)."""
    cfg = _from_dict(Config, values or {}, "")
    _check_ranges(cfg)
    return cfg


def apply_overrides(values: dict, overrides: list[str]) -> dict:
    """Apply ``section.key=value`` strings (values parsed as YAML) onto nested plain values."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form section.key=value")
        dotted, raw = item.split("=", 1)
        node = values
        parts = dotted.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}': '{part}' is not a section")
        try:
            node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as err:
            raise ConfigError(
                f"override '{item}': the value is not valid YAML ({yaml_problem(err)})"
            ) from None
    return values


def yaml_problem(err: yaml.YAMLError) -> str:
    """What a YAML parser found wrong, and where, in one line (its own message takes several)."""
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    mark = getattr(err, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:
    """Read a YAML config (or start from defaults when ``path`` is None) and apply overrides;
    with ``train.init_from``, the settings not given are the parent's (:func:`inherit`)."""
    values: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path} is not valid YAML: {yaml_problem(err)}") from None
        if not isinstance(values, dict):
            raise ConfigError(
                f"{path} must hold a mapping of sections, not {type(values).__name__}"
            )
    values = apply_overrides(values, list(overrides))
    cfg = config_from_dict(values)
    return inherit(cfg, values) if cfg.train.init_from else cfg


def config_to_dict(cfg: Config) -> dict:
    """Plain nested values, ready for ``yaml.safe_dump``."""
    return dataclasses.asdict(cfg)


# --- fine-tuning: the settings a run takes from the model it starts from ----------------------

# besides every model.* setting: the data settings that define the vocabulary
PARENT_DATA_KEYS = ("src_lang", "tgt_lang", "vocab_size", "spm_type", "joint_vocab")


def parent_settings(cfg: Config) -> dict[str, Any]:
    """The settings a fine-tuned run shares with its parent, by dotted key."""
    settings = {f"model.{k}": v for k, v in dataclasses.asdict(cfg.model).items()}
    settings.update({f"data.{k}": getattr(cfg.data, k) for k in PARENT_DATA_KEYS})
    return settings


def inherit(cfg: Config, given: dict) -> Config:
    """``cfg`` with ``train.init_from`` resolved and every parent setting (model.*, and the
    vocabulary's data.*) not given in ``given`` (the YAML values with the overrides) taken from
    the parent's config.yaml. A given value must equal the parent's: a model keeps the shape
    and vocabulary it was trained with. Resuming, the run's own config.yaml stands for the
    parent's, so an interrupted fine-tune needs its parent no more."""
    parent_dir = Path(cfg.train.init_from).resolve()
    cfg.train.init_from = str(parent_dir)
    parent = _parent_config(cfg)
    ours, theirs = parent_settings(cfg), parent_settings(parent)
    conflicts = [
        f"{key} {ours[key]!r} (the parent's: {theirs[key]!r})"
        for key in ours
        if _given(given, key) and ours[key] != theirs[key]
    ]
    if conflicts:
        raise ConfigError(
            f"train.init_from {parent_dir} fixes the model and vocabulary settings, and this "
            f"config gives others: {', '.join(conflicts)}; leave them out to take the parent's"
        )
    cfg.model = dataclasses.replace(parent.model)
    for key in PARENT_DATA_KEYS:
        setattr(cfg.data, key, getattr(parent.data, key))
    _check_ranges(cfg)
    return cfg


def _parent_config(cfg: Config) -> Config:
    """The config of ``train.init_from``, or, resuming a run started from it, the run's own."""
    from .modeldir import CHECKPOINT, CONFIG, read_config  # modeldir imports this module

    out, parent = Path(cfg.out_dir), Path(cfg.train.init_from)
    if (out / CHECKPOINT).is_file() and (out / CONFIG).is_file():
        own = read_config(out / CONFIG)[0]
        if own.train.init_from == cfg.train.init_from:
            return own
    if not parent.is_dir():
        what = "is a file" if parent.exists() else "does not exist"
        raise ConfigError(f"train.init_from: {parent} {what}; it must be a model directory")
    if not (parent / CONFIG).is_file():
        raise ConfigError(
            f"train.init_from: {parent} is not a model directory ({CONFIG} is missing)"
        )
    return read_config(parent / CONFIG)[0]


def _given(values: dict, dotted: str) -> bool:
    """Whether the nested plain ``values`` set the ``section.key`` ``dotted``."""
    section, key = dotted.split(".")
    return isinstance(values.get(section), dict) and key in values[section]

"""Decoding options: one frozen type for what a search is asked (beam, length penalty, n-best,
attention, sampling), checked here alone, and the flags of ``translate translate`` and
``translate serve`` that set it.

The config's decode section, the command line, the server and ``tune`` all build it; the
:class:`~translate.translator.Translator` and :func:`~translate.search.search_batches` take it.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import UserError, is_integer, is_number

if TYPE_CHECKING:
    from .config import DecodeConfig

MAX_LENGTH_PENALTY = 10.0  # GNMT uses 0-1; ((5 + len) / 6) ** alpha overflows fp32 from ~20 on
TEMPERATURES = (1e-3, 1e3)  # below: log-probs / T overflow; above: uniform in all but name
MAX_SEED = 2**63 - 1  # torch and numpy seeds are 64-bit


class DecodingError(UserError):
    """A decoding setting that cannot be used. ``setting`` is its field name, so that each
    surface can call it its own way (``--beam``, ``'beam'``, ``'decode.beam'``)."""

    def __init__(self, setting: str, problem: str):
        self.setting, self.problem = setting, problem  # problem: "{name} must be ..."
        super().__init__(self.naming(setting))

    def naming(self, name: str) -> str:
        """The message with the setting called ``name``."""
        return self.problem.format(name=name)


def _require(setting: str, value, ok: bool, requirement: str) -> None:
    if not ok:
        quoted = repr(value).replace("{", "{{").replace("}", "}}")  # text, not a template field
        raise DecodingError(setting, f"{{name}} must be {requirement}, got {quoted}")


@dataclass(frozen=True)
class Sampling:
    """Sampled decoding (e.g. for back-translation): each token drawn from the model's
    distribution sharpened or flattened by ``temperature``, from the ``top_k`` most probable
    (0: all), with a generator seeded by ``seed``."""

    temperature: float = 1.0
    top_k: int = 0
    seed: int = 1

    def __post_init__(self):
        low, high = TEMPERATURES
        ok = is_number(self.temperature) and low <= self.temperature <= high
        _require("temperature", self.temperature, ok, f"a number from {low:g} to {high:g}")
        object.__setattr__(self, "temperature", float(self.temperature))
        ok = is_integer(self.top_k) and self.top_k >= 0
        _require("top_k", self.top_k, ok, "an integer >= 0 (0: all tokens)")
        ok = is_integer(self.seed) and 0 <= self.seed <= MAX_SEED
        _require("seed", self.seed, ok, "an integer from 0 to 2**63 - 1")


SAMPLING_FIELDS = tuple(field.name for field in dataclasses.fields(Sampling))


@dataclass(frozen=True)
class DecodeOptions:
    """What a search is asked: the ``n_best`` best translations of each line from a beam of
    ``beam`` (1: greedy), ranked by log-probability divided by the GNMT length penalty with
    alpha ``length_penalty``; or, with ``sampling``, ``n_best`` drawn ones (beam and length
    penalty unused). ``attention``: each candidate's attention weights and alignment too."""

    beam: int = 5
    length_penalty: float = 1.0
    n_best: int = 1
    attention: bool = False
    sampling: Sampling | None = None

    def __post_init__(self):
        _require("beam", self.beam, is_integer(self.beam) and self.beam >= 1, "an integer >= 1")
        alpha, most = self.length_penalty, MAX_LENGTH_PENALTY
        ok = is_number(alpha) and 0 <= alpha <= most
        _require("length_penalty", alpha, ok, f"a number from 0 to {most:g}")
        object.__setattr__(self, "length_penalty", float(alpha))
        if self.sampling is None:
            ok = is_integer(self.n_best) and 1 <= self.n_best <= self.beam
            _require("n_best", self.n_best, ok, f"between 1 and the beam size ({self.beam})")
        else:
            ok = is_integer(self.n_best) and self.n_best >= 1
            _require("n_best", self.n_best, ok, "an integer >= 1 (translations drawn per line)")
        _require("attention", self.attention, isinstance(self.attention, bool), "true or false")
        ok = self.sampling is None or isinstance(self.sampling, Sampling)
        _require("sampling", self.sampling, ok, "a Sampling or None")

    @classmethod
    def from_config(cls, decode: DecodeConfig) -> DecodeOptions:
        """A model's defaults: the beam and length penalty of its config's decode section."""
        return cls(beam=decode.beam, length_penalty=decode.length_penalty)

    def override(
        self,
        beam: int | None = None,
        length_penalty: float | None = None,
        n_best: int | None = None,
        attention: bool | None = None,
        sampling: Sampling | None = None,
    ) -> DecodeOptions:
        """These options with each setting that is given (not None) in its place. Sampling
        draws translations: a beam or length penalty given with it is refused, not ignored."""
        if sampling is not None and (beam is not None or length_penalty is not None):
            raise DecodingError(
                "sampling", "{name} draws translations: it takes no beam or length penalty"
            )
        given = dict(
            beam=beam,
            length_penalty=length_penalty,
            n_best=n_best,
            attention=attention,
            sampling=sampling,
        )
        return dataclasses.replace(self, **{k: v for k, v in given.items() if v is not None})


# --- the flags of translate translate and translate serve ---------------------------------------


def flag_name(setting: str) -> str:
    """The command-line flag that sets a decoding setting (a field name)."""
    return {"attention": "--alignment", "sampling": "--sample"}.get(
        setting, "--" + setting.replace("_", "-")
    )


def check_setting(setting: str, value):
    """``value`` for one decoding setting (a field name), checked alone as the type checks it
    (how it fits the others, such as n-best within the beam, is checked with them)."""
    if setting in SAMPLING_FIELDS:
        Sampling(**{setting: value})
    elif setting == "n_best":  # at most the beam is checked once the beam is known
        _require(setting, value, is_integer(value) and value >= 1, "an integer >= 1")
    else:
        DecodeOptions(**{setting: value})
    return value


def flag_type(setting: str, kind: type, listed: bool = False):
    """An argparse ``type=`` for a decoding setting: the text read as ``kind`` (``listed``: a
    comma-separated list of them) and checked by :func:`check_setting`, so that a value out of
    range is a usage error naming the flag while the command line is parsed."""
    noun = {int: "an integer", float: "a number"}[kind]

    def parse(text: str):
        values = []
        for item in text.split(",") if listed else [text]:
            try:
                values.append(check_setting(setting, kind(item)))
            except ValueError:
                raise argparse.ArgumentTypeError(f"must be {noun}, got {item!r}") from None
            except DecodingError as err:
                raise argparse.ArgumentTypeError(err.naming("").lstrip()) from None
        return values if listed else values[0]

    parse.__name__ = setting  # argparse names the type in some messages
    return parse


def add_decoding_flags(parser: argparse.ArgumentParser, for_requests: bool = False) -> None:
    """The decoding flags, in a group of their own: --beam and --length-penalty (for serve:
    the defaults of requests that do not name them), and for translate also --n-best,
    --alignment and sampling. Each overrides the model's setting; None: not given."""
    group = parser.add_argument_group("decoding")
    whose = " of requests that give none" if for_requests else ""
    group.add_argument(
        "--beam",
        type=flag_type("beam", int),
        help=f"beam size{whose}; 1: greedy (default: the model's decode.beam)",
    )
    group.add_argument(
        "--length-penalty",
        type=flag_type("length_penalty", float),
        metavar="ALPHA",
        help=f"GNMT length penalty{whose}, 0 to {MAX_LENGTH_PENALTY:g}: a translation's score, "
        "by which the beam ranks, is its log-probability (EOS included) divided by "
        "((5 + length) / 6) ** ALPHA, length counting EOS; every search reports that score "
        "(0: the log-probability; default: the model's decode.length_penalty)",
    )
    if for_requests:  # a request names its own n-best, attention and sampling
        return
    group.add_argument(
        "--n-best",
        type=flag_type("n_best", int),
        metavar="N",
        help="write the N best translations of each line (at most the beam), best first, as N "
        "lines 'LINE ||| TEXT ||| SCORE': LINE counts input lines from 0, SCORE as --scores",
    )
    group.add_argument(
        "--alignment",
        action="store_true",
        help="add '||| SRC-TGT ...' to each line: for every target subword piece, the source "
        "piece it attends to most (pieces counted from 0; models with attention)",
    )
    group.add_argument(
        "--sample",
        action="store_true",
        help="draw translations from the model instead of searching (e.g. for back-translation); "
        "with --n-best N, N of them; see --temperature, --top-k, --seed",
    )
    low, high = TEMPERATURES
    group.add_argument(
        "--temperature",
        type=flag_type("temperature", float),
        metavar="T",
        help=f"--sample: divide log-probabilities by T, {low:g} to {high:g} (default: "
        f"{Sampling.temperature}); below 1 sharper, above 1 flatter",
    )
    group.add_argument(
        "--top-k",
        type=flag_type("top_k", int),
        metavar="K",
        help=f"--sample: draw from the K most probable tokens; 0: all (default: {Sampling.top_k})",
    )
    group.add_argument(
        "--seed",
        type=flag_type("seed", int),
        help=f"--sample: seed, 0 to 2**63 - 1 (default: {Sampling.seed})",
    )


def options_from_flags(args: argparse.Namespace, defaults: DecodeOptions) -> DecodeOptions:
    """``defaults`` with the decoding flags of ``translate translate`` given in their place; a
    flag that cannot apply (a sampling flag without --sample) is refused, naming it."""
    tuning = {name: getattr(args, name) for name in SAMPLING_FIELDS}  # the flags of --sample
    given = {name: value for name, value in tuning.items() if value is not None}
    try:
        if given and not args.sample:
            raise DecodingError(next(iter(given)), "{name} applies to sampling: add --sample")
        sampling = Sampling(**given) if args.sample else None
        return defaults.override(
            beam=args.beam,
            length_penalty=args.length_penalty,
            n_best=args.n_best,
            attention=args.alignment or None,
            sampling=sampling,
        )
    except DecodingError as err:
        raise UserError(err.naming(flag_name(err.setting))) from None


@dataclass
class Candidate:
    """One translation of a line: its text, score (the log-probability divided by the length
    penalty) and log-probability; with attention asked for, its pieces, the attention weights
    (one row per target piece, EOS included, over the source pieces and EOS) and the alignment
    (for each target piece, the source piece it attends to most)."""

    text: str
    score: float
    log_prob: float = 0.0
    pieces: list[str] | None = None
    attention: list[list[float]] | None = None
    alignment: list[int] | None = None


@dataclass
class Translation:
    """What one input line became: its candidates, best first."""

    candidates: list[Candidate]
    truncated: bool = False  # the source was cut to the model's length limit first
    source_pieces: list[str] | None = None  # with attention: the pieces it was read as

    @property
    def text(self) -> str:
        return self.candidates[0].text

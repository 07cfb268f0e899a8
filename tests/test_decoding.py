"""Decoding options: the checks of the one type, and the flag contract: every decoding flag of
``translate translate`` and ``translate serve`` changes the output or is refused in one line."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import math
import random
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from aiohttp.test_utils import TestClient, TestServer

from translate.cli import build_parser, main
from translate.config import DecodeConfig
from translate.decoding import DecodeOptions, DecodingError, Sampling
from translate.errors import UserError
from translate.serve.http import build_app
from translate.serve.options import ServeOptions
from translate.translator import Translator

# --- the type ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: DecodeOptions(beam=0), "beam must be an integer >= 1, got 0"),
        (lambda: DecodeOptions(beam=True), "beam must be an integer >= 1, got True"),
        (lambda: DecodeOptions(beam=2.0), "beam must be an integer >= 1, got 2.0"),
        (lambda: DecodeOptions(length_penalty=-0.5), "length_penalty must be a number from 0"),
        (lambda: DecodeOptions(length_penalty=math.nan), "length_penalty must be a number"),
        (lambda: DecodeOptions(length_penalty=math.inf), "length_penalty must be a number"),
        (lambda: DecodeOptions(length_penalty=11), "length_penalty must be a number from 0 to 10"),
        (lambda: DecodeOptions(beam=3, n_best=4), "n_best must be between 1 and the beam size (3)"),
        (lambda: DecodeOptions(n_best=0), "n_best must be between 1 and the beam size"),
        (lambda: DecodeOptions(attention=1), "attention must be true or false, got 1"),
        (lambda: DecodeOptions(sampling=(1.0, 0, 1)), "sampling must be a Sampling or None"),
        (lambda: DecodeOptions(n_best=0, sampling=Sampling()), "n_best must be an integer >= 1"),
        (lambda: Sampling(temperature=0), "temperature must be a number from 0.001 to 1000"),
        (lambda: Sampling(temperature=1e-4), "temperature must be a number from 0.001 to 1000"),
        (lambda: Sampling(temperature=1e4), "temperature must be a number from 0.001 to 1000"),
        (lambda: Sampling(temperature=math.nan), "temperature must be a number"),
        (lambda: Sampling(top_k=-1), "top_k must be an integer >= 0"),
        (lambda: Sampling(seed=-1), "seed must be an integer from 0 to 2**63 - 1"),
        (lambda: Sampling(seed=2**63), "seed must be an integer from 0 to 2**63 - 1"),
        (
            lambda: DecodeOptions().override(beam=3, sampling=Sampling()),
            "sampling draws translations: it takes no beam or length penalty",
        ),
        (
            lambda: DecodeOptions().override(length_penalty=0.5, sampling=Sampling()),
            "sampling draws translations: it takes no beam or length penalty",
        ),
    ],
)
def test_out_of_range_settings_are_refused_naming_them(build, message):
    with pytest.raises(DecodingError) as refused:
        build()
    assert str(refused.value).startswith(message)
    assert isinstance(refused.value, UserError) and "\n" not in str(refused.value)


def test_a_refusal_can_be_named_the_way_each_surface_names_the_setting():
    with pytest.raises(DecodingError) as refused:
        DecodeOptions(beam=-2)
    assert refused.value.setting == "beam"
    assert refused.value.naming("--beam") == "--beam must be an integer >= 1, got -2"


def test_the_edges_of_the_ranges_are_accepted():
    DecodeOptions(beam=1, length_penalty=0, n_best=1)
    DecodeOptions(beam=4, length_penalty=10, n_best=4, attention=True)
    DecodeOptions(beam=1, n_best=8, sampling=Sampling(temperature=1e-3, top_k=0, seed=0))
    Sampling(temperature=1e3, top_k=1, seed=2**63 - 1)


def test_the_options_are_frozen_hashable_and_override_only_what_is_given():
    options = DecodeOptions(beam=4, length_penalty=0.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.beam = 2
    assert options.override() == options and hash(options) == hash(DecodeOptions(4, 0.5))
    assert options.override(n_best=2) == DecodeOptions(4, 0.5, n_best=2)
    assert options.override(attention=True).attention
    drawn = options.override(n_best=6, sampling=Sampling(seed=3))
    assert (drawn.beam, drawn.n_best, drawn.sampling) == (4, 6, Sampling(1.0, 0, 3))
    with pytest.raises(DecodingError, match="n_best must be between 1 and the beam size"):
        options.override(n_best=5)  # checked again after the override


def test_a_config_decode_section_gives_the_defaults():
    assert DecodeOptions.from_config(DecodeConfig()) == DecodeOptions()  # declared once
    decode = DecodeConfig(beam=3, length_penalty=0.25, batch_size=2)
    assert DecodeOptions.from_config(decode) == DecodeOptions(beam=3, length_penalty=0.25)


# --- the flag contract ---------------------------------------------------------------------

# Sentences twice as long as the training ones: the tiny models are unsure there, so that beam
# size, length penalty and sampling settings show in the translations.
WORDS = "haus hund katze baum auto buch tisch stuhl".split()
_rng = random.Random(0)
LONG = [" ".join(_rng.choice(WORDS) for _ in range(_rng.randint(7, 12))) for _ in range(30)]


@dataclass
class Differs:
    """Two runs, with ``first`` and with ``second`` flags, whose outputs differ."""

    first: list[str]
    second: list[str]
    model: str = "plain"  # plain | attention

    @property
    def flags(self) -> list[str]:
        return self.first + self.second


@dataclass
class Refused:
    """A run with ``flags`` that ends in a one-line error containing ``message``."""

    flags: list[str]
    message: str
    model: str = "plain"


SAMPLE = ["--sample", "--n-best", "2"]  # two drawn translations of each line
CASES = {
    "translate": {
        "--beam": [
            Differs(["--beam", "1"], ["--beam", "5"]),
            Refused(["--beam", "0"], "--beam must be an integer >= 1, got 0"),
        ],
        "--length-penalty": [
            Differs(
                ["--beam", "5", "--length-penalty", "0"], ["--beam", "5", "--length-penalty", "5"]
            ),
            Refused(["--length-penalty", "-1"], "--length-penalty must be a number from 0 to 10"),
        ],
        "--n-best": [
            Differs([], ["--n-best", "3"]),
            Refused(["--beam", "2", "--n-best", "3"], "--n-best must be between 1 and the beam"),
        ],
        "--alignment": [
            Differs([], ["--alignment"], model="attention"),
            Refused(["--alignment"], "this model has no attention"),
        ],
        "--sample": [
            Differs(["--n-best", "2"], SAMPLE),
            Refused(["--sample", "--beam", "3"], "--sample draws translations: it takes no beam"),
        ],
        "--temperature": [
            Differs([*SAMPLE, "--temperature", "0.5"], [*SAMPLE, "--temperature", "5"]),
            Refused(["--temperature", "2"], "--temperature applies to sampling: add --sample"),
            Refused(["--sample", "--temperature", "0"], "--temperature must be a number from"),
        ],
        "--top-k": [
            Differs(
                [*SAMPLE, "--temperature", "3"], [*SAMPLE, "--temperature", "3", "--top-k", "1"]
            ),
            Refused(["--top-k", "1"], "--top-k applies to sampling: add --sample"),
            Refused(["--sample", "--top-k", "-1"], "--top-k must be an integer >= 0"),
        ],
        "--seed": [
            Differs([*SAMPLE, "--seed", "1"], [*SAMPLE, "--seed", "2"]),
            Refused(["--seed", "1"], "--seed applies to sampling: add --sample"),
            Refused(["--sample", "--seed", "-1"], "--seed must be an integer from 0"),
        ],
    },
    "serve": {  # the defaults of requests that do not name them
        "--beam": [
            Differs(["--beam", "1"], ["--beam", "5"]),
            Refused(["--beam", "0"], "--beam must be an integer >= 1, got 0"),
        ],
        "--length-penalty": [
            Differs(["--length-penalty", "0"], ["--length-penalty", "5"]),
            Refused(["--length-penalty", "nan"], "--length-penalty must be a number from 0"),
        ],
    },
}
# The other options, and where their effect is tested: a new option must go in one table.
OTHERS = {
    "translate": {
        "--help": "argparse",
        "--model": "test_cli",
        "--input": "test_cli",
        "--output": "test_cli (one line per line, written atomically)",
        "--resume": "test_cli::test_resume_a_partly_written_output",
        "--replace-bad-utf8": "test_cli::test_bad_utf8_in_translation_input",
        "--scores": "test_cli::test_scores_alignments_and_samples",
        "--dtype": "test_translator::test_bf16_and_int8_translate_like_fp32",
        "--quantize": "test_translator::test_bf16_and_int8_translate_like_fp32",
        "--threads": "how fast, not what",
        "--device": "where, not what",
    },
    "serve": {
        "--help": "argparse",
        "--model": "test_serve",
        "--host": "test_serve",
        "--port": "test_serve",
        "--dtype": "as for translate",
        "--quantize": "as for translate",
        "--threads": "how fast, not what",
        "--device": "where, not what",
        "--max-sentences": "test_serve (413)",
        "--max-bytes": "test_serve (413)",
        "--max-batch-sentences": "test_serve (batching)",
        "--max-batch-tokens": "test_serve (batching)",
        "--batch-wait-ms": "test_serve (batching)",
        "--max-queued-sentences": "test_serve::test_a_full_queue_answers_503_and_keeps_serving",
        "--shutdown-timeout": "test_serve::test_sigterm_finishes_the_request_in_flight_then_exits",
    },
}


def subcommand(name: str) -> argparse.ArgumentParser:
    (choices,) = [a for a in build_parser()._subparsers._group_actions if a.choices]
    return choices.choices[name]


def options_of(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Each option of a parser by its long name."""
    return {
        action.option_strings[-1]: action for action in parser._actions if action.option_strings
    }


@pytest.mark.parametrize("command", ["translate", "serve"])
def test_every_option_is_in_a_table_and_every_decoding_flag_has_its_cases(command):
    parser = subcommand(command)
    options = options_of(parser)
    unlisted = set(options) - set(CASES[command]) - set(OTHERS[command])
    assert not unlisted, f"{command}: options in neither table: {sorted(unlisted)}"
    assert set(CASES[command]) | set(OTHERS[command]) <= set(options)  # no stale entries
    (group,) = [g for g in parser._action_groups if g.title == "decoding"]
    assert {a.option_strings[-1] for a in group._group_actions} == set(CASES[command])
    for flag, cases in CASES[command].items():
        assert all(flag in case.flags for case in cases), f"a case of {flag} without it"


@pytest.fixture(scope="module")
def models(trained_dir, attention_dir) -> dict[str, Path]:
    return {"plain": trained_dir, "attention": attention_dir}


@pytest.fixture(scope="module")
def long_source(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("long") / "long.de"
    path.write_text("".join(line + "\n" for line in LONG), encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def keep_threads():
    """main() sets torch's threads for the process; leave them as they were."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def run_translate(model: Path, source: Path, flags: list[str], capsys) -> tuple[int, str, str]:
    """``translate translate`` in this process: exit status, stdout, stderr."""
    code = main(["translate", "-m", str(model), "-i", str(source), "--threads", "1", *flags])
    out, err = capsys.readouterr()
    return code, out, err


def run_serve(model: Path, flags: list[str], capsys) -> tuple[int, str, str]:
    """``translate serve`` with ``flags``: refused at start (status 1), or its translations
    of the long sentences, one a line (status 0)."""
    args = build_parser().parse_args(["serve", "-m", str(model), *flags])
    try:
        app = build_app(Translator.from_dir(model), ServeOptions.from_namespace(args), model)
    except UserError:  # what serve refuses at start, before it listens: through main
        code = main(["serve", "-m", str(model), *flags])
        return code, *capsys.readouterr()

    async def post() -> str:
        async with TestClient(TestServer(app)) as client:
            response = await client.post("/translate", json={"text": LONG})
            assert response.status == 200
            answer = await response.json()
            return "".join(line["text"] + "\n" for line in answer["translations"])

    return 0, asyncio.run(post()), ""


CASE_IDS = [
    (command, flag, case)
    for command, flags in CASES.items()
    for flag, cases in flags.items()
    for case in cases
]


@pytest.mark.parametrize(
    "command, flag, case",
    CASE_IDS,
    ids=[f"{c}{f}-{type(k).__name__}-{i}" for i, (c, f, k) in enumerate(CASE_IDS)],
)
def test_each_decoding_flag_changes_the_output_or_is_refused(
    command, flag, case, models, long_source, capsys
):
    model = models[case.model]

    def run(flags):
        if command == "translate":
            return run_translate(model, long_source, flags, capsys)
        return run_serve(model, flags, capsys)

    if isinstance(case, Differs):
        (code1, first, err1), (code2, second, err2) = run(case.first), run(case.second)
        assert code1 == code2 == 0, (err1, err2)
        assert first and second and first != second
    else:
        code, _, err = run(case.flags)
        assert code == 1 and err.startswith("translate: error: ") and err.count("\n") == 1, err
        assert case.message in err, err

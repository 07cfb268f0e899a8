"""Decoding options: the checks of the one type, and the flag contract of the command line:
every argument of every subcommand is in a table with cases that show it does what it says
(or tests that do, by name) or is refused, in one line or as argparse refuses a usage."""

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
from translate.decoding import DecodeOptions, DecodingError, Sampling, flag_name
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


def test_a_refused_value_that_holds_braces_is_quoted_as_it_is():
    for build, message in [
        (lambda: DecodeOptions(beam={}), "--beam must be an integer >= 1, got {}"),
        (
            lambda: Sampling(seed="{name}"),
            "--seed must be an integer from 0 to 2**63 - 1, got '{name}'",
        ),
        (
            lambda: DecodeOptions(attention={"a": "{0}"}),
            "--alignment must be true or false, got {'a': '{0}'}",
        ),
    ]:
        with pytest.raises(DecodingError) as refused:
            build()
        assert refused.value.naming(flag_name(refused.value.setting)) == message


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
# Every argument of every subcommand is in FLAGS with cases that show it does what it says or is
# refused: an argument in no table fails the suite, and so does a number not checked as parsed.

# Sentences twice as long as the training ones: the tiny models are unsure there, so that beam
# size, length penalty and sampling settings show in the translations.
WORDS = "haus hund katze baum auto buch tisch stuhl".split()
_rng = random.Random(0)
LONG = [" ".join(_rng.choice(WORDS) for _ in range(_rng.randint(7, 12))) for _ in range(30)]
TESTS = Path(__file__).resolve().parent


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
    """A run with ``flags`` that ends in a one-line error (status 1) containing ``message``."""

    flags: list[str]
    message: str
    model: str = "plain"


@dataclass
class Unparsed:
    """A command line with ``flags`` that argparse refuses as it parses them: status 2, and a
    last line ``translate COMMAND: error: argument FLAG: ...`` containing ``message``."""

    flags: list[str]
    message: str


@dataclass
class Sets:
    """``translate serve`` with ``flags`` runs with ServeOptions' ``field`` set to ``value``."""

    flags: list[str]
    field: str
    value: object


@dataclass
class ShownBy:
    """The effect (or refusal) is the subject of ``test`` ("test_file.py::test_name")."""

    test: str


HELP = ShownBy("test_cli.py::test_help_explains_each_command")
MISTAKES = ShownBy("test_cli.py::test_user_mistakes_are_one_line_errors")
SAMPLE = ["--sample", "--n-best", "2"]  # two drawn translations of each line
DECODING = {  # translate's decoding flags; serve's --beam and --length-penalty, for requests
    "--beam": [
        Differs(["--beam", "1"], ["--beam", "5"]),
        Unparsed(["--beam", "0"], "must be an integer >= 1, got 0"),
        Unparsed(["--beam", "2.5"], "must be an integer, got '2.5'"),
    ],
    "--length-penalty": [
        Differs(["--beam", "5", "--length-penalty", "0"], ["--beam", "5", "--length-penalty", "5"]),
        # greedy's scores are divided by the penalty too
        Differs(
            ["--beam", "1", "--scores", "--length-penalty", "0"],
            ["--beam", "1", "--scores", "--length-penalty", "2"],
        ),
        Unparsed(["--length-penalty", "-1"], "must be a number from 0 to 10, got -1.0"),
        Unparsed(["--length-penalty", "nan"], "must be a number from 0 to 10, got nan"),
    ],
    "--n-best": [
        Differs([], ["--n-best", "3"]),
        Refused(["--beam", "2", "--n-best", "3"], "--n-best must be between 1 and the beam"),
        Unparsed(["--n-best", "-3"], "must be an integer >= 1, got -3"),
        Unparsed(["--sample", "--n-best", "0"], "must be an integer >= 1, got 0"),
        ShownBy("test_cli.py::test_n_best_lines_are_numbered_from_0_with_the_n_best_of_each_line"),
    ],
    "--alignment": [
        Differs([], ["--alignment"], model="attention"),
        Refused(["--alignment"], "this model has no attention"),
    ],
    "--sample": [
        Differs(["--n-best", "2"], SAMPLE),
        Refused(["--sample", "--beam", "3"], "--sample draws translations: it takes no beam"),
        Refused(["--sample", "--length-penalty", "1"], "--sample draws translations: it takes"),
    ],
    "--temperature": [
        Differs([*SAMPLE, "--temperature", "0.5"], [*SAMPLE, "--temperature", "5"]),
        Refused(["--temperature", "2"], "--temperature applies to sampling: add --sample"),
        Unparsed(["--sample", "--temperature", "0"], "must be a number from 0.001 to 1000"),
        Unparsed(["--sample", "--temperature", "1e-300"], "from 0.001 to 1000, got 1e-300"),
        Unparsed(["--sample", "--temperature", "1e300"], "from 0.001 to 1000, got 1e+300"),
        Unparsed(["--sample", "--temperature", "nan"], "from 0.001 to 1000, got nan"),
    ],
    "--top-k": [
        Differs([*SAMPLE, "--temperature", "3"], [*SAMPLE, "--temperature", "3", "--top-k", "1"]),
        Refused(["--top-k", "1"], "--top-k applies to sampling: add --sample"),
        Unparsed(["--sample", "--top-k", "-1"], "must be an integer >= 0"),
    ],
    "--seed": [
        Differs([*SAMPLE, "--seed", "1"], [*SAMPLE, "--seed", "2"]),
        Refused(["--seed", "1"], "--seed applies to sampling: add --sample"),
        Unparsed(["--sample", "--seed", "-1"], "must be an integer from 0 to 2**63 - 1"),
    ],
}
SERVE_DECODING = {  # the defaults of requests that do not name them
    "--beam": [
        Differs(["--beam", "1"], ["--beam", "5"]),
        Unparsed(["--beam", "0"], "must be an integer >= 1, got 0"),
    ],
    "--length-penalty": [
        Differs(["--length-penalty", "0"], ["--length-penalty", "5"]),
        Unparsed(["--length-penalty", "nan"], "must be a number from 0 to 10, got nan"),
    ],
}


def serve_flag(flag: str, value: str, parsed, test: str, *tests: str, bad: str = "0", why=""):
    """Cases of one of serve's own flags: it sets its ServeOptions field, whose effect the
    serve tests named show, and (for a number) ``bad`` is refused as it is parsed."""
    field = flag.removeprefix("--").replace("-", "_")
    cases = [Sets([flag, value], field, parsed), *(ShownBy(t) for t in (test, *tests))]
    return cases + ([Unparsed([flag, bad], why)] if why else [])


FLAGS = {
    "prepare": {
        "--help": [HELP],
        "config": [
            MISTAKES,
            ShownBy("test_prepare.py::test_an_interrupted_prepare_is_not_taken_for_finished"),
        ],
        "section.key=value": [
            ShownBy("test_prepare.py::test_an_interrupted_prepare_is_not_taken_for_finished"),
            ShownBy("test_cli.py::test_an_override_that_is_not_yaml_is_one_line_naming_it"),
        ],
    },
    "train": {
        "--help": [HELP],
        "config": [MISTAKES, ShownBy("test_cli.py::test_train_translate_score_end_to_end")],
        "section.key=value": [ShownBy("test_cli.py::test_train_translate_score_end_to_end")],
    },
    "translate": {
        "--help": [HELP],
        "--model": [MISTAKES],
        "--input": [
            Refused(["-i", "/nonexistent/in.de"], "input file not found: /nonexistent/in.de"),
            ShownBy("test_cli.py::test_bad_utf8_in_translation_input"),
        ],
        "--output": [
            ShownBy("test_output.py::test_a_regular_file_is_replaced_whole_and_keeps_its_mode"),
            ShownBy(
                "test_cli.py::test_an_output_that_is_a_directory_is_one_line_and_leaves_nothing"
            ),
            ShownBy("test_cli.py::test_closed_streams_and_a_full_disk_are_one_line_errors"),
        ],
        **DECODING,
        "--dtype": [
            Differs(["--scores"], ["--scores", "--dtype", "bf16"]),  # bf16 rounds the scores
            Refused(["--dtype", "fp16", "--device", "cpu"], "fp16 runs on a GPU only"),
        ],
        "--quantize": [
            Differs(
                ["--scores", "--device", "cpu"],
                ["--scores", "--device", "cpu", "--quantize", "int8"],
            ),
            Unparsed(["--quantize", "int4"], "invalid choice: 'int4'"),
        ],
        "--threads": [
            ShownBy("test_cli.py::test_threads_sets_the_threads_of_the_search"),
            Unparsed(["--threads", "-1"], "must be an integer >= 0, got -1"),
        ],
        "--device": [
            ShownBy("test_translator.py::test_the_device_asked_for_is_the_one_used"),
            Refused(["--device", "tpu"], "device 'tpu' is not a torch device"),
            Refused(["--device", "cuda:99"], "device 'cuda:99': this machine has"),
        ],
        "--engine": [
            ShownBy("test_cli_export.py::test_the_onnx_engine_writes_what_the_torch_engine_writes"),
            ShownBy(
                "test_cli_export.py::test_the_onnx_engine_translates_where_torch_cannot_be_imported"
            ),
            Unparsed(["--engine", "tensorflow"], "invalid choice: 'tensorflow'"),
        ],
        "--resume": [
            ShownBy("test_cli.py::test_resume_a_partly_written_output"),
            ShownBy("test_output.py::test_an_interruption_keeps_the_tmp_for_resume"),
            Refused(["--resume"], "--resume continues an output file: give -o"),
        ],
        "--replace-bad-utf8": [ShownBy("test_cli.py::test_bad_utf8_in_translation_input")],
        "--scores": [
            Differs([], ["--scores"]),
            ShownBy("test_cli.py::test_beam_scores_and_alignments"),
            ShownBy("test_cli.py::test_greedy_scores_follow_the_length_penalty"),
        ],
    },
    "tune": {
        "--help": [HELP],
        **dict.fromkeys(
            ["--model", "--src", "--ref"],
            [
                ShownBy(
                    "test_tune.py::test_tune_through_the_cli_writes_what_the_model_translates_best"
                )
            ],
        ),
        "--beams": [
            ShownBy(
                "test_tune.py::test_tune_through_the_cli_writes_what_the_model_translates_best"
            ),
            Unparsed(["--beams", "3,0"], "must be an integer >= 1, got 0"),
            Unparsed(["--beams", "3,x"], "must be an integer, got 'x'"),
        ],
        "--alphas": [
            ShownBy(
                "test_tune.py::test_tune_through_the_cli_writes_what_the_model_translates_best"
            ),
            Unparsed(["--alphas", "1,nan"], "must be a number from 0 to 10, got nan"),
        ],
    },
    "average": {
        "--help": [HELP],
        "--model": [
            ShownBy("test_average.py::test_average_mistakes_are_one_line_and_write_nothing")
        ],
        "--last": [
            ShownBy(
                "test_average.py::test_average_writes_the_mean_of_exactly_the_last_checkpoints"
            ),
            Unparsed(["-n", "1"], "must be an integer >= 2 (an average of several), got 1"),
            Unparsed(["-n", "0"], "must be an integer >= 2"),
        ],
    },
    "score": {
        "--help": [HELP],
        "--ref": [MISTAKES, ShownBy("test_score.py::test_score_prints_each_systems_scores")],
        "hyp": [ShownBy("test_score.py::test_score_prints_each_systems_scores")],
        "--ter": [ShownBy("test_score.py::test_ter_adds_ter")],
        "--json": [ShownBy("test_score.py::test_json_prints_the_scores_as_one_object")],
        "--paired-bs": [
            ShownBy("test_score.py::test_paired_bs_compares_each_system_with_the_first"),
            Unparsed(["--paired-bs", "0"], "must be an integer >= 1, got 0"),
        ],
        "--src": [ShownBy("test_score.py::test_src_adds_bleu_by_source_length_and_plot_draws_it")],
        "--plot": [ShownBy("test_score.py::test_src_adds_bleu_by_source_length_and_plot_draws_it")],
    },
    "plot": {
        "--help": [HELP],
        "--model": [ShownBy("test_plots.py::test_plot_of_a_trained_directory")],
        "--output": [ShownBy("test_plots.py::test_plot_draws_each_curve_where_it_belongs")],
    },
    "serve": {
        "--help": [HELP],
        "--model": [MISTAKES],
        "--host": serve_flag(
            "--host", "::1", "::1", "test_serve_options.py::test_host_is_where_it_listens"
        ),
        "--port": serve_flag(
            "--port",
            "0",
            0,
            "test_serve_options.py::test_port_is_where_it_listens",
            bad="70000",
            why="must be an integer from 0 to 65535, got 70000",
        ),
        **SERVE_DECODING,
        "--dtype": serve_flag(
            "--dtype",
            "bf16",
            "bf16",
            "test_serve_options.py::test_the_runtime_settings_reach_the_model",
        ),
        "--quantize": serve_flag(
            "--quantize",
            "int8",
            "int8",
            "test_serve_options.py::test_int8_serves_the_quantized_model",
        ),
        "--threads": serve_flag(
            "--threads",
            "1",
            1,
            "test_serve_options.py::test_the_runtime_settings_reach_the_model",
            bad="-1",
            why="must be an integer >= 0, got -1",
        ),
        "--device": serve_flag(
            "--device",
            "cpu",
            "cpu",
            "test_serve_options.py::test_a_device_that_is_not_there_is_refused",
        ),
        "--max-sentences": serve_flag(
            "--max-sentences",
            "9",
            9,
            "test_serve.py::test_bad_input_is_a_4xx_naming_the_problem",
            why="must be an integer >= 1, got 0",
        ),
        "--max-bytes": serve_flag(
            "--max-bytes",
            "9000",
            9000,
            "test_serve.py::test_bad_input_is_a_4xx_naming_the_problem",
            why="must be an integer >= 1, got 0",
        ),
        "--max-request-work": serve_flag(
            "--max-request-work",
            "77",
            77,
            "test_serve_requests.py::test_work_is_beam_times_source_subwords",
            "test_serve_requests.py::test_a_request_of_hours_of_work_is_refused_at_once",
            why="must be an integer >= 1, got 0",
        ),
        "--max-attention-cells": serve_flag(
            "--max-attention-cells",
            "77",
            77,
            "test_serve_requests.py::test_attention_cells_are_n_best_times_target_times_source_length",
            why="must be an integer >= 1, got 0",
        ),
        "--max-batch-sentences": serve_flag(
            "--max-batch-sentences",
            "3",
            3,
            "test_serve_batching.py::test_the_servers_batch_caps_slice_a_request",
            why="must be an integer >= 1, got 0",
        ),
        "--max-batch-tokens": serve_flag(
            "--max-batch-tokens",
            "30",
            30,
            "test_serve_batching.py::test_the_servers_batch_caps_slice_a_request",
            why="must be an integer >= 1, got 0",
        ),
        "--batch-wait-ms": serve_flag(
            "--batch-wait-ms",
            "0.5",
            0.5,
            "test_serve_batching.py::test_the_servers_batch_wait_gathers_requests",
            bad="-1",
            why="must be a number >= 0, got -1.0",
        ),
        "--max-queued-sentences": serve_flag(
            "--max-queued-sentences",
            "512",
            512,
            "test_serve.py::test_a_full_queue_answers_503_and_keeps_serving",
            why="must be an integer >= 1, got 0",
        ),
        "--read-timeout": serve_flag(
            "--read-timeout",
            "2.5",
            2.5,
            "test_serve.py::test_a_client_slow_to_send_its_head_is_dropped",
            "test_serve.py::test_a_stalled_body_is_answered_408",
            why="must be a number > 0, got 0.0",
        ),
        "--shutdown-timeout": serve_flag(
            "--shutdown-timeout",
            "0",
            0.0,
            "test_serve.py::test_requests_past_the_shutdown_timeout_are_answered_503",
            "test_serve.py::test_sigterm_finishes_the_request_in_flight_then_exits",
            bad="nan",
            why="must be a number >= 0, got nan",
        ),
        "--no-access-log": [
            Sets(["--no-access-log"], "access_log", False),
            ShownBy("test_serve_compat.py::test_the_access_log_has_a_line_per_request"),
        ],
        "--engine": serve_flag(
            "--engine",
            "onnx",
            "onnx",
            "test_serve_onnx.py::test_answers_equal_the_onnx_engine",
            "test_serve_onnx.py::test_serves_without_torch",
        ),
    },
    "attention": {
        "--help": [HELP],
        "--model": [
            ShownBy("test_plots.py::test_attention_writes_one_heatmap_per_sentence"),
            ShownBy("test_plots.py::test_attention_from_a_model_without_it_is_one_line"),
        ],
        "--output": [
            ShownBy(
                "test_plots.py::test_attention_draws_one_sentence_into_o_and_reads_a_file_or_stdin"
            )
        ],
        "--out-dir": [ShownBy("test_plots.py::test_attention_writes_one_heatmap_per_sentence")],
        "--input": [
            ShownBy(
                "test_plots.py::test_attention_draws_one_sentence_into_o_and_reads_a_file_or_stdin"
            )
        ],
        "sentences": [ShownBy("test_plots.py::test_attention_writes_one_heatmap_per_sentence")],
    },
    "export": {
        "--help": [HELP],
        "--model": [
            ShownBy("test_cli_export.py::test_export_writes_the_graphs_it_names"),
            ShownBy("test_cli_export.py::test_export_refusals_are_one_line_and_write_nothing"),
        ],
        "--output": [
            ShownBy("test_cli_export.py::test_export_writes_the_graphs_it_names"),
            ShownBy("test_cli_export.py::test_export_refusals_are_one_line_and_write_nothing"),
        ],
        "--no-int8": [ShownBy("test_cli_export.py::test_export_writes_the_graphs_it_names")],
        "--web": [ShownBy("test_cli_export.py::test_export_web_writes_a_page_folder")],
    },
}
# what a command needs on the command line besides the flags of an Unparsed case
REQUIRED = {
    "translate": ["-m", "model"],
    "serve": ["-m", "model"],
    "tune": ["-m", "model", "--src", "dev.de", "--ref", "dev.en"],
    "average": ["-m", "model"],
    "score": ["-r", "ref", "hyp"],
}


def subcommand(name: str) -> argparse.ArgumentParser:
    (choices,) = [a for a in build_parser()._subparsers._group_actions if a.choices]
    return choices.choices[name]


def arguments_of(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Each argument of a parser: an option by its long name, a positional by its metavar."""
    return {
        (
            action.option_strings[-1] if action.option_strings else action.metavar or action.dest
        ): action
        for action in parser._actions
    }


def test_every_subcommand_is_in_the_table():
    (choices,) = [a for a in build_parser()._subparsers._group_actions if a.choices]
    assert sorted(choices.choices) == sorted(FLAGS)


@pytest.mark.parametrize("command", sorted(FLAGS))
def test_every_argument_is_in_the_table_with_cases_that_show_it(command):
    parser = subcommand(command)
    arguments = arguments_of(parser)
    assert sorted(arguments) == sorted(FLAGS[command]), "an argument in no table, or a stale one"
    for name, cases in FLAGS[command].items():
        action = arguments[name]
        assert cases, name
        shown = [case for case in cases if not isinstance(case, (Refused, Unparsed))]
        assert shown or action.option_strings == ["-h", "--help"], f"{name}: no effect shown"
        for case in cases:
            if isinstance(case, ShownBy):
                file, test = case.test.split("::")
                assert f"\ndef {test}(" in (TESTS / file).read_text(), f"{name}: no {case.test}"
            else:
                assert set(action.option_strings) & set(case.flags), f"{name}: a case without it"
        # a number is checked as it is parsed: a bare int or float would take -1, nan, 1e999
        assert action.type not in (int, float), f"{name}: a number not checked as parsed"
        if action.type is not None and action.type is not str:
            assert any(isinstance(c, Unparsed) for c in cases), f"{name}: no case out of range"


def test_the_decoding_group_is_the_decoding_table():
    for command, table in (("translate", DECODING), ("serve", SERVE_DECODING)):
        (group,) = [g for g in subcommand(command)._action_groups if g.title == "decoding"]
        assert {a.option_strings[-1] for a in group._group_actions} == set(table)


UNPARSED = [
    (command, name, case)
    for command, table in FLAGS.items()
    for name, cases in table.items()
    for case in cases
    if isinstance(case, Unparsed)
]


@pytest.mark.parametrize(
    "command, name, case", UNPARSED, ids=[f"{c}-{' '.join(k.flags)}" for c, _, k in UNPARSED]
)
def test_each_number_out_of_range_is_refused_as_it_is_parsed(command, name, case, capsys):
    with pytest.raises(SystemExit) as ended:
        main([command, *REQUIRED[command], *case.flags])
    assert ended.value.code == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith(f"translate {command}: error: argument ") and name in last, last
    assert case.message in last, last


SETS = [
    (name, case)
    for name, cases in FLAGS["serve"].items()
    for case in cases
    if isinstance(case, Sets)
]


@pytest.mark.parametrize("name, case", SETS, ids=[n for n, _ in SETS])
def test_each_serve_flag_sets_its_setting(name, case):
    args = build_parser().parse_args(["serve", "-m", "model", *case.flags])
    options = ServeOptions.from_namespace(args)
    assert getattr(options, case.field) == case.value != getattr(ServeOptions(), case.field)


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
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            response = await client.post("/translate", json={"text": LONG})
            assert response.status == 200
            answer = await response.json()
            return "".join(line["text"] + "\n" for line in answer["translations"])

    return 0, asyncio.run(post()), ""


RUNS = [
    (command, name, case)
    for command, table in FLAGS.items()
    for name, cases in table.items()
    for case in cases
    if isinstance(case, (Differs, Refused))
]


@pytest.mark.parametrize(
    "command, flag, case",
    RUNS,
    ids=[f"{c}{f}-{type(k).__name__}-{i}" for i, (c, f, k) in enumerate(RUNS)],
)
def test_each_flag_changes_the_output_or_is_refused(
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

"""translate serve's settings: every ServeOptions field has a flag and a test of its effect
(a new field without both fails here), values that cannot work are refused naming the flag,
and the settings that choose where and how the model runs reach it."""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import math
import socket
from pathlib import Path

import pytest
import torch
from aiohttp.test_utils import TestClient, TestServer

from translate.cli import build_parser
from translate.errors import UserError
from translate.serve.http import build_app, load_app, serve_app
from translate.serve.options import ServeOptions, check_options, flag
from translate.translator import Translator

TESTS = Path(__file__).parent
REQUEST_DEFAULTS = (
    "test_serve_options.py::test_beam_and_length_penalty_are_the_defaults_of_requests"
)

# Where each setting's effect is tested: the test fails if the setting stops doing what it says.
EFFECTS = {
    "host": ["test_serve_options.py::test_host_is_where_it_listens"],
    "engine": [
        "test_serve_onnx.py::test_answers_equal_the_onnx_engine",
        "test_serve_onnx.py::test_serves_without_torch",
        "test_serve_onnx.py::test_the_other_engines_folders_and_settings_are_refused_in_one_line",
    ],
    "port": ["test_serve_options.py::test_port_is_where_it_listens"],
    "beam": [REQUEST_DEFAULTS],
    "length_penalty": [REQUEST_DEFAULTS],
    "max_sentences": ["test_serve.py::test_bad_input_is_a_4xx_naming_the_problem"],
    "max_bytes": ["test_serve.py::test_bad_input_is_a_4xx_naming_the_problem"],
    "max_request_work": [
        "test_serve_requests.py::test_work_is_beam_times_source_subwords",
        "test_serve_requests.py::test_a_request_of_hours_of_work_is_refused_at_once",
    ],
    "max_attention_cells": [
        "test_serve_requests.py::test_attention_cells_are_n_best_times_target_times_source_length",
        "test_serve_requests.py::test_a_request_of_hours_of_work_is_refused_at_once",
    ],
    "max_batch_sentences": [
        "test_serve_batching.py::test_the_servers_batch_caps_slice_a_request",
        "test_serve_batching.py::test_a_request_is_decoded_in_slices_of_max_batch_sentences",
    ],
    "max_batch_tokens": [
        "test_serve_batching.py::test_the_servers_batch_caps_slice_a_request",
        "test_serve_batching.py::test_a_wider_beam_fills_a_batch_sooner",
    ],
    "batch_wait_ms": [
        "test_serve_batching.py::test_the_servers_batch_wait_gathers_requests",
        "test_serve_batching.py::test_the_first_sentence_waits_batch_wait_for_company",
    ],
    "max_queued_sentences": ["test_serve.py::test_a_full_queue_answers_503_and_keeps_serving"],
    "read_timeout": [
        "test_serve.py::test_a_client_slow_to_send_its_head_is_dropped",
        "test_serve.py::test_a_stalled_body_is_answered_408",
        "test_serve.py::test_stalled_clients_do_not_hold_the_shutdown",
    ],
    "shutdown_timeout": [
        "test_serve.py::test_requests_past_the_shutdown_timeout_are_answered_503",
        "test_serve.py::test_sigterm_finishes_the_request_in_flight_then_exits",
    ],
    "threads": ["test_serve_options.py::test_the_runtime_settings_reach_the_model"],
    "device": [
        "test_serve_options.py::test_the_runtime_settings_reach_the_model",
        "test_serve_options.py::test_a_device_that_is_not_there_is_refused",
    ],
    "dtype": ["test_serve_options.py::test_the_runtime_settings_reach_the_model"],
    "quantize": ["test_serve_options.py::test_int8_serves_the_quantized_model"],
    "access_log": ["test_serve_compat.py::test_the_access_log_has_a_line_per_request"],
}


def test_every_setting_has_a_test_of_its_effect():
    fields = [field.name for field in dataclasses.fields(ServeOptions)]
    assert sorted(EFFECTS) == sorted(fields), "a ServeOptions field without a test, or a stale one"
    for field, tests in EFFECTS.items():
        for test in tests:
            file, name = test.split("::")
            tree = ast.parse((TESTS / file).read_text(encoding="utf-8"))
            defined = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
            assert name in defined, f"{field}: {test} does not exist"


def test_every_setting_has_a_flag_with_its_default():
    """`translate serve` declares a flag for each field, whose default is the field's (a
    switch that is on by default: the flag that turns it off, --no-...)."""
    (sub,) = [a for a in build_parser()._subparsers._group_actions if a.choices]
    serve = sub.choices["serve"]
    flags = {name: action.dest for action in serve._actions for name in action.option_strings}
    for field in dataclasses.fields(ServeOptions):
        wanted = flag(field.name)
        if field.default is True:
            wanted = "--no-" + wanted.removeprefix("--")
        assert flags.get(wanted) == field.name, (
            f"no flag {wanted} (translate/cli/parser.py declares the flags of translate serve)"
        )
    args = serve.parse_args(["-m", "model"])
    assert ServeOptions.from_namespace(args) == ServeOptions()


REFUSED = [
    ({"max_request_work": 0}, "--max-request-work must be an integer >= 1, got 0"),
    ({"max_attention_cells": -5}, "--max-attention-cells must be an integer >= 1, got -5"),
    ({"max_batch_tokens": 2.5}, "--max-batch-tokens must be an integer >= 1, got 2.5"),
    ({"max_sentences": True}, "--max-sentences must be an integer >= 1, got True"),
    ({"threads": -1}, "--threads must be an integer >= 0, got -1"),
    ({"port": 70000}, "--port must be an integer from 0 to 65535, got 70000"),
    ({"port": -1}, "--port must be an integer from 0 to 65535, got -1"),
    ({"read_timeout": 0}, "--read-timeout must be a finite number > 0, got 0"),
    ({"read_timeout": math.inf}, "--read-timeout must be a finite number > 0, got inf"),
    ({"shutdown_timeout": math.nan}, "--shutdown-timeout must be a finite number >= 0, got nan"),
    ({"shutdown_timeout": -1.0}, "--shutdown-timeout must be a finite number >= 0, got -1.0"),
    ({"batch_wait_ms": math.inf}, "--batch-wait-ms must be a finite number >= 0, got inf"),
    ({"access_log": "no"}, "access_log must be true or false, got 'no'"),
    (
        {"max_sentences": 8, "max_queued_sentences": 4},
        "--max-queued-sentences (4) must be at least --max-sentences (8)",
    ),
]


@pytest.mark.parametrize("changes, message", REFUSED, ids=[m for _, m in REFUSED])
def test_settings_that_cannot_work_are_refused_naming_the_flag(changes, message, trained_dir):
    with pytest.raises(UserError) as refused:
        load_app(trained_dir, ServeOptions(**changes))  # before the model is loaded
    assert str(refused.value).startswith(message)


def test_the_defaults_are_accepted():
    check_options(ServeOptions())
    check_options(ServeOptions(port=0, batch_wait_ms=0, shutdown_timeout=0, threads=3))


@pytest.fixture(scope="module")
def translator(trained_dir) -> Translator:
    return Translator.from_dir(trained_dir)


def serve_until_ready(translator: Translator, options: ServeOptions, model_dir: Path) -> int:
    """Start the server, stop it as soon as it listens; the port it listened on."""
    ports = []

    async def main() -> None:
        stop = asyncio.Event()

        def ready(host: str, port: int) -> None:
            ports.append(port)
            stop.set()

        app = build_app(translator, options, model_dir)
        await asyncio.wait_for(serve_app(app, options, stop, ready), 60)

    asyncio.run(main())
    return ports[0]


def test_host_is_where_it_listens(translator, trained_dir):
    """An address of no interface here cannot be listened on: the host reaches the socket."""
    options = ServeOptions(host="203.0.113.1", port=0)  # TEST-NET-3: never local
    with pytest.raises(UserError, match=r"^cannot listen on 203\.0\.113\.1:0: "):
        serve_until_ready(translator, options, trained_dir)
    assert serve_until_ready(translator, ServeOptions(port=0), trained_dir) > 0


def test_port_is_where_it_listens(translator, trained_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        options = ServeOptions(port=port)
        with pytest.raises(UserError, match=f"^cannot listen on 127.0.0.1:{port}: .*in use"):
            serve_until_ready(translator, options, trained_dir)
    assert serve_until_ready(translator, options, trained_dir) == port  # free again


@pytest.fixture
def keep_threads():
    """load_app sets torch's threads for the process; leave them as they were."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def served(app, request: dict) -> tuple[dict, list[dict]]:
    """GET /model and the answers to ``request`` from ``app``, on a loopback test server."""

    async def main():
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            model = await (await client.get("/model")).json()
            response = await client.post("/translate", json=request)
            assert response.status == 200
            return model, (await response.json())["translations"]

    return asyncio.run(main())


# sentences longer than the training ones, where the tiny model is unsure enough for the beam
# size to change the translations
UNSURE = [
    "hund katze baum auto buch tisch stuhl haus hund",
    "baum baum auto stuhl haus katze tisch buch hund katze",
    "stuhl tisch hund hund katze auto buch haus baum",
]


def test_beam_and_length_penalty_are_the_defaults_of_requests(translator, trained_dir):
    """Served with --beam 1 and with --beam 5 (length penalty 0 and 5): requests that name
    none are answered as the translator answers with those settings, and differently; a
    request that names its own is answered with its own."""

    def answers(options: ServeOptions, request: dict) -> list[tuple[str, float]]:
        model, translations = served(build_app(translator, options, trained_dir), request)
        assert (model["decoding"]["beam"], model["decoding"]["length_penalty"]) == (
            options.beam,
            options.length_penalty,
        )
        return [(a["text"], a["score"]) for a in translations]

    def wanted(beam: int, alpha: float) -> list[tuple[str, float]]:
        options = translator.defaults.override(beam=beam, length_penalty=alpha)
        return [
            (t.text, t.candidates[0].score) for t in translator.translate_batch(UNSURE, options)
        ]

    plain = {"text": UNSURE}
    greedy = answers(ServeOptions(beam=1, length_penalty=0.0), plain)
    beam = answers(ServeOptions(beam=5, length_penalty=0.0), plain)
    penalised = answers(ServeOptions(beam=5, length_penalty=5.0), plain)
    assert greedy == wanted(1, 0.0) and beam == wanted(5, 0.0) and penalised == wanted(5, 5.0)
    assert [text for text, _ in greedy] != [text for text, _ in beam]
    assert [score for _, score in beam] != [score for _, score in penalised]
    own = {"text": UNSURE, "beam": 5, "length_penalty": 0.0}  # a request's own settings win
    assert answers(ServeOptions(beam=1, length_penalty=5.0), own) == beam


def test_the_runtime_settings_reach_the_model(trained_dir, keep_threads):
    options = ServeOptions(threads=1, device="cpu", dtype="bf16")
    app = load_app(trained_dir, options)
    assert torch.get_num_threads() == 1
    lines = ["hund katze", "baum auto buch"]
    model, answers = served(app, {"text": lines})
    assert model["runtime"] == {"device": "cpu", "dtype": "bf16", "quantize": None, "threads": 1}
    wanted = Translator.from_dir(trained_dir, "cpu", "bf16").translate_batch(lines)
    assert [(a["text"], a["score"]) for a in answers] == [
        (t.text, t.candidates[0].score) for t in wanted
    ]


def test_int8_serves_the_quantized_model(trained_dir, keep_threads):
    app = load_app(trained_dir, ServeOptions(quantize="int8", threads=1))
    lines = ["hund katze baum"]
    model, answers = served(app, {"text": lines})
    assert model["runtime"]["quantize"] == "int8"
    int8 = Translator.from_dir(trained_dir, quantize="int8").translate_batch(lines)
    fp32 = Translator.from_dir(trained_dir).translate_batch(lines)
    assert answers[0]["score"] == int8[0].candidates[0].score != fp32[0].candidates[0].score


def test_a_device_that_is_not_there_is_refused(trained_dir, keep_threads):
    gpus = torch.cuda.device_count()
    with pytest.raises(UserError, match=f"this machine has {gpus} CUDA GPU"):
        load_app(trained_dir, ServeOptions(device=f"cuda:{gpus}"))

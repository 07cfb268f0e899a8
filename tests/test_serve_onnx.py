"""translate serve --engine onnx: an export served by the ONNX engine through every route, its
answers equal to OnnxTranslator's, what the engine cannot do refused per request, the folders
and settings of the other engine refused at start, the page, and a server without torch."""

from __future__ import annotations

import asyncio
import json
import queue
import shutil
import signal
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("aiohttp")

from tests.test_serve import (  # noqa: E402
    call,
    chromium,
    chromium_executable,
    expected,
    serving,
    use_page,
)
from translate import modeldir, runtime  # noqa: E402
from translate.cli import main  # noqa: E402
from translate.errors import UserError  # noqa: E402
from translate.export.directory import export_model  # noqa: E402
from translate.export.engine import OnnxTranslator  # noqa: E402
from translate.serve import engines, http  # noqa: E402
from translate.serve.http import SERVICE, load_app  # noqa: E402
from translate.serve.options import ServeOptions  # noqa: E402

LINES = ["hund katze", "", "   ", "baum auto buch", "haus", "stuhl tisch hund katze"]


@pytest.fixture(scope="module")
def exported(attention_dir, tmp_path_factory) -> Path:
    """The attention model exported, fp32 and int8: the ONNX engine gives no attention weights
    even where the model has attention."""
    return export_model(attention_dir, tmp_path_factory.mktemp("serve-onnx") / "export")


@pytest.fixture(scope="module")
def engine(exported) -> OnnxTranslator:
    return OnnxTranslator.from_dir(exported)


@contextmanager
def running(export: Path, **changes):
    """The export served by the ONNX engine on a free loopback port, in a thread of this
    process, loaded as ``translate serve`` loads it; yields a Server."""
    options = ServeOptions(host="127.0.0.1", port=0, engine="onnx", **changes)
    app = load_app(export, options)
    with serving(app, options, app[SERVICE].translator) as server:
        yield server


@pytest.fixture(scope="module")
def onnx_server(exported):
    with running(exported, max_sentences=8) as served:
        yield served


def post(port: int, path: str, body) -> tuple[int, dict]:
    return call(port, "POST", path, json.dumps(body).encode())


# --- our API, LibreTranslate's, OpenNMT-py's --------------------------------------------------


@pytest.mark.parametrize(
    "asked", [{}, {"beam": 1}, {"beam": 3, "n_best": 2}, {"beam": 4, "length_penalty": 0.0}]
)
def test_answers_equal_the_onnx_engine(onnx_server, engine, asked):
    status, answer = post(onnx_server.port, "/translate", {"text": LINES, **asked})
    assert status == 200, answer
    wanted = engine.translate_batch(LINES, engine.defaults.override(**asked))
    assert answer["translations"] == [expected(t) for t in wanted]
    assert answer["translations"][0]["text"] == "dog cat"
    assert len(answer["translations"][3]["candidates"]) == asked.get("n_best", 1)
    status, one = post(onnx_server.port, "/translate", {"text": "baum auto buch", **asked})
    assert (status, one) == (200, {"translation": answer["translations"][3]})


def test_a_long_line_is_cut_with_a_warning_or_refused_where_no_warning_fits(onnx_server, engine):
    port, line = onnx_server.port, "hund " * 300
    pieces = len(engine.src_spm.encode(line))  # the engine's own SentencePiece model counts
    assert pieces > engine.max_source_len == 200
    status, answer = post(port, "/translate", {"text": line})
    assert status == 200
    (wanted,) = engine.translate_batch([line], engine.defaults)
    assert wanted.truncated and answer["translation"]["text"] == wanted.text
    assert answer["translation"]["warning"] == (
        "longer than 200 subwords: only the first 200 were translated"
    )
    status, refused = post(port, "/translate", {"q": line, "source": "de", "target": "en"})
    assert status == 400
    assert refused["error"] == (
        f"Invalid request: line 1 of q is {pieces} subwords long: more than this model "
        "translates in one sentence (200); split it into sentences"
    )


def test_libretranslate_and_opennmt_answer_as_the_engine_translates(onnx_server, engine, exported):
    port = onnx_server.port
    status, languages = call(port, "GET", "/languages")
    assert (status, [entry["code"] for entry in languages]) == (200, ["de", "en"])
    request = {"q": "hund katze\nbaum", "source": "auto", "target": "en", "alternatives": 2}
    status, answer = post(port, "/translate", request)
    assert status == 200, answer
    assert answer["translatedText"] == "dog cat\ntree"
    assert answer["detectedLanguage"] == {"confidence": 0.0, "language": "de"}
    status, answer = post(port, "/translate", request | {"q": "hund katze"})
    (wanted,) = engine.translate_batch(["hund katze"], engine.defaults.override(n_best=3))
    others = [c.text for c in wanted.candidates[1:] if c.text != "dog cat"]
    assert answer["alternatives"] == others and len(others) == 2
    status, answer = post(port, "/translator/translate", [{"src": "baum auto", "id": 100}])
    (wanted,) = engine.translate_batch(["baum auto"], engine.defaults)
    assert (status, answer[0][0]["tgt"]) == (200, wanted.text)
    assert answer[0][0]["pred_score"] == wanted.candidates[0].score
    status, models = call(port, "GET", "/translator/models")
    assert (status, models[0]["models"]) == (200, [str(exported)])


def test_model_says_what_the_export_says(onnx_server, engine, exported):
    status, model = call(onnx_server.port, "GET", "/model")
    assert status == 200
    manifest = engine.manifest.data
    assert model["export_dir"] == str(exported)
    assert (model["source_language"], model["target_language"]) == ("de", "en")
    assert model["model"] == manifest["model"] and model["model"]["attention"] == "general"
    assert "parameters" not in model["model"]  # the manifest does not say: not made up
    assert model["vocabulary"] == {
        "joint": True,
        "source_size": len(engine.src_spm),
        "target_size": len(engine.tgt_spm),
    }
    decoding = model["decoding"]
    assert (decoding["beam"], decoding["length_penalty"]) == (
        engine.defaults.beam,
        engine.defaults.length_penalty,
    )
    assert (decoding["return_attention"], decoding["sample"]) == (False, False)
    assert decoding["max_source_len"] == engine.max_source_len
    assert model["runtime"] == {
        "engine": "onnx",
        "device": "cpu",
        "precision": "fp32",
        "threads": 0,
    }
    assert model["limits"]["max_sentences"] == 8
    status, health = call(onnx_server.port, "GET", "/health")
    assert (status, health["status"]) == (200, "ok")


@pytest.mark.parametrize(
    "asked, message",
    [
        ({"sample": {"seed": 3}}, "'sample': the ONNX engine does not sample"),
        ({"sample": {}, "n_best": 2}, "'sample': the ONNX engine does not sample"),
        ({"return_attention": True}, "'return_attention': the ONNX engine gives no attention"),
    ],
)
def test_what_the_engine_cannot_do_is_refused_per_request(onnx_server, asked, message):
    port = onnx_server.port
    status, answer = post(port, "/translate", {"text": ["hund"], **asked})
    assert status == 400 and answer["error"].startswith(message), answer
    assert "\n" not in answer["error"]
    # what it can do is still served, return_attention false included
    status, answer = post(port, "/translate", {"text": ["hund"], "return_attention": False})
    assert (status, answer["translations"][0]["text"]) == (200, "dog")


# --- loading: int8, threads, and what belongs to the other engine -------------------------------


def test_int8_and_threads_go_to_onnx_runtime_not_torch(exported, monkeypatch):
    monkeypatch.setattr(runtime, "set_threads", lambda threads: pytest.fail("torch's threads"))
    threads_before = torch.get_num_threads()
    lines = ["hund katze baum", "auto"]
    with running(exported, quantize="int8", threads=1) as server:
        status, answer = post(server.port, "/translate", {"text": lines})
        model = call(server.port, "GET", "/model")[1]
    assert torch.get_num_threads() == threads_before
    assert server.translator.precision == "int8"
    for session in (server.translator.model.encoder, server.translator.model.step):
        assert session.get_session_options().intra_op_num_threads == 1
    assert model["runtime"] == {
        "engine": "onnx",
        "device": "cpu",
        "precision": "int8",
        "threads": 1,
    }
    int8 = OnnxTranslator.from_dir(exported, int8=True).translate_batch(lines)
    fp32 = OnnxTranslator.from_dir(exported).translate_batch(lines)
    assert status == 200 and answer["translations"] == [expected(t) for t in int8]
    assert answer["translations"][0]["score"] != fp32[0].candidates[0].score


def test_the_cpu_device_is_accepted(exported):
    app = load_app(exported, ServeOptions(engine="onnx", device="cpu"))
    assert app[SERVICE].translator.precision == "fp32"


def refusals(export: Path, model: Path) -> list[tuple[object, dict, str]]:
    """(what -m names, ServeOptions changes, the message) of each start that is refused."""
    return [
        (
            model,
            {"engine": "onnx"},
            f"{model} is a model directory, not an export: translate export -m {model} -o OUT, "
            "then serve OUT with --engine onnx",
        ),
        (export, {}, f"{export} is an ONNX export: serve it with --engine onnx"),
        (
            [export, export],
            {"engine": "onnx"},
            "--engine onnx serves one export (-m once); ensembles: --engine torch",
        ),
        (
            export,
            {"engine": "onnx", "device": "cuda"},
            "--engine onnx runs on the CPU; --device cuda needs --engine torch",
        ),
        (
            export,
            {"engine": "onnx", "dtype": "bf16"},
            "--engine onnx runs fp32 graphs, or int8 ones with --quantize int8; --dtype bf16 "
            "needs --engine torch",
        ),
        (export, {"engine": "tensorrt"}, "--engine must be one of torch, onnx, got 'tensorrt'"),
    ]


def test_the_other_engines_folders_and_settings_are_refused_in_one_line(exported, attention_dir):
    assert engines.MODEL_CONFIG == modeldir.CONFIG  # how a model directory is told
    for model_dirs, changes, message in refusals(exported, attention_dir):
        with pytest.raises(UserError) as refused:
            load_app(model_dirs, ServeOptions(**changes))
        assert str(refused.value) == message


def test_a_missing_onnx_runtime_or_a_manifest_without_languages_is_one_line(
    exported, tmp_path, monkeypatch
):
    damaged = tmp_path / "export"
    shutil.copytree(exported, damaged)
    manifest = json.loads((damaged / "manifest.json").read_text(encoding="utf-8"))
    del manifest["tgt_lang"]
    (damaged / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(UserError) as refused:
        load_app(damaged, ServeOptions(engine="onnx"))
    assert str(refused.value) == f"{damaged / 'manifest.json'} is damaged: it names no languages"
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "translate.export.engine")
    with pytest.raises(UserError) as refused:
        load_app(exported, ServeOptions(engine="onnx"))
    assert str(refused.value) == "the ONNX engine needs onnxruntime: pip install 'translate[onnx]'"


def test_the_command_line_refuses_in_one_line(exported, attention_dir, capsys, monkeypatch):
    def served(*args):  # a start that is not refused fails here instead of serving
        raise AssertionError("the server started")

    monkeypatch.setattr(http, "_serve_until_signalled", served)
    for model_dirs, changes, message in refusals(exported, attention_dir)[:5]:
        argv = ["serve"]
        for path in model_dirs if isinstance(model_dirs, list) else [model_dirs]:
            argv += ["-m", str(path)]
        for key, value in changes.items():
            argv += [f"--{key}", value]
        assert main(argv) == 1
        assert capsys.readouterr().err == f"translate: error: {message}\n"


# --- without torch ------------------------------------------------------------------------------

# translate serve with every import of torch refused and recorded; what was attempted, and the
# torch modules loaded, are printed as JSON on stdout once the server has stopped
WITHOUT_TORCH = """
import json, sys
attempts = []
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            attempts.append(name)
            raise ImportError(f"no torch here ({name})")
sys.meta_path.insert(0, NoTorch())
from translate.cli import main
code = main(sys.argv[1:])
loaded = sorted(name for name in sys.modules if name.split(".")[0] == "torch")
print(json.dumps({"attempts": attempts, "loaded": loaded}))
sys.exit(code)
"""


def test_serves_without_torch(exported, engine):
    command = [sys.executable, "-c", WITHOUT_TORCH, "serve", "--engine", "onnx"]
    command += ["-m", str(exported), "--port", "0", "--threads", "1", "--no-access-log"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()  # its stderr, read aside so that no read can hang
    reader = threading.Thread(target=lambda: [lines.put(line) for line in server.stderr])
    reader.start()
    try:
        started = lines.get(timeout=60)
        assert "serving on http://127.0.0.1:" in started, started
        port = int(started.split("127.0.0.1:")[1].split()[0])
        status, answer = post(port, "/translate", {"text": LINES, "beam": 3})
        assert status == 200, answer
        wanted = engine.translate_batch(LINES, engine.defaults.override(beam=3))
        assert answer["translations"] == [expected(t) for t in wanted]
        assert call(port, "GET", "/model")[1]["runtime"]["engine"] == "onnx"
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0
        # stdout alone: communicate() would also read and close stderr under the reader's feet
        assert json.loads(server.stdout.read()) == {"attempts": [], "loaded": []}
    finally:
        server.kill()
        server.wait(timeout=30)
        reader.join(timeout=30)


# --- the page, in headless Chromium -----------------------------------------------------------


def test_page_translates_with_the_onnx_engine(onnx_server, engine, tmp_path):
    executable = chromium_executable()
    with chromium(executable, tmp_path) as devtools_port:
        url = f"http://127.0.0.1:{onnx_server.port}/"
        first, second = asyncio.run(use_page(devtools_port, url, "hund katze"))
    (wanted,) = engine.translate_batch(["hund katze"], engine.defaults.override(n_best=3))
    candidates = wanted.candidates
    assert first["error"] == "" and second["error"] == ""
    assert first["translation"] == candidates[0].text == "dog cat"
    assert first["nbest"] == second["nbest"] == [c.text for c in candidates]
    assert second["translation"] == candidates[1].text
    assert (first["rows"], first["columns"]) == (0, -1)  # no heatmap, and why
    assert first["note"] == "The ONNX engine gives no attention weights: no heatmap to show."

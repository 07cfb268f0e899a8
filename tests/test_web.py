"""The browser page of an export (translate/export/web.py and web/): the folder it writes, its
SentencePiece pieces against Python's, and its translations against the torch-free engine's,
in a real headless Chromium over the DevTools protocol, served by a loopback static server."""

from __future__ import annotations

import asyncio
import functools
import gzip
import http.server
import itertools
import json
import os
import shutil
import threading
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import pytest

from tests.test_serve import DevTools, chromium, chromium_executable
from translate.data.vocab import Vocab, train_vocab
from translate.export import web
from translate.export.web import (
    NPM_PACKAGES,
    WebError,
    npm_tarball,
    prepare_web,
    write_runtime,
    write_web,
)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"  # beside the clone, here and in CI
DEV_SETS = ("multi30k/val", "tatoeba/valid")
# what SentencePiece normalises (NFKC, whitespace) or cannot piece (unknown characters, NUL)
ODD_LINES = [
    "  Ein  Mann\tläuft  ",
    "ﬁnden Ｆｕｌｌ ①② ｶﾀｶﾅ",
    "Café café e\u0301",
    "😀 Hund 🐕‍🦺",
    "a\u200bb \u00a0nbsp\u00a0",
    "Straße STRASSE ẞ",
    "‚Zitat‘ „Zitat“ »x«",
    "\x00nul",
    "",
    " ",
]


def required(why: str) -> None:
    """Skip with the reason; under TRANSLATE_CI=1 (set by .ci/run) fail instead, so that CI
    cannot pass without having run the page's tests."""
    if os.environ.get("TRANSLATE_CI") == "1":
        pytest.fail(f"{why}; TRANSLATE_CI=1, so it must run here")
    pytest.skip(why)


def dev_lines(side: str) -> list[str]:
    """Every line of the Multi30k and Tatoeba dev sets of one side (de or en)."""
    lines = []
    for name in DEV_SETS:
        path = DATA / f"{name}.{side}.gz"
        if not path.is_file():
            required(f"the tokenisation test needs {path} (shared/data beside the clone)")
        with gzip.open(path, "rb") as file:
            lines += [line.decode("utf-8").rstrip("\n") for line in file]
    return lines


@pytest.fixture(scope="session")
def runtime_dir(tmp_path_factory) -> Path:
    """The page's files and the two npm runtimes, without a model."""
    cached = all((web.npm_cache() / p.tarball).is_file() for p in NPM_PACKAGES)
    if not cached and shutil.which("npm") is None:
        required(
            "the page needs npm to fetch ONNX Runtime Web and SentencePiece (apt-get install npm)"
        )
    folder = tmp_path_factory.mktemp("runtime")
    write_runtime(folder)
    return folder


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Python's own static file server (``python -m http.server``), without its log lines."""

    def log_message(self, format, *args) -> None:  # noqa: A002 - the base class's name
        pass


@contextmanager
def static_server(folder: Path):
    """``folder`` over HTTP on a free loopback port; yields the base URL."""
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


async def run_in_page(page: DevTools, expression: str):
    """The value of an async JavaScript expression in the page; its exception as a failure."""
    result = await page.send(
        "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
    )
    assert "exceptionDetails" not in result, result["exceptionDetails"]
    return result["result"].get("value")


@contextmanager
def browser_page(tmp_path: Path):
    """A started headless Chromium; yields an async function that opens a URL and runs a
    coroutine function on its page."""
    executable = chromium_executable()
    with chromium(executable, tmp_path / "profile") as devtools_port:

        async def on_page(url: str, use):
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://127.0.0.1:{devtools_port}/json/list") as answer:
                    targets = await answer.json()
                target = next(t for t in targets if t["type"] == "page")
                address = target["webSocketDebuggerUrl"]
                async with session.ws_connect(address, max_msg_size=0) as websocket:
                    page = DevTools(websocket)
                    await page.send("Page.navigate", url=url)
                    await page.wait_for("document.readyState === 'complete'")
                    return await use(page)

        yield lambda url, use: asyncio.run(on_page(url, use))


# --- the runtimes from npm --------------------------------------------------------------------


def fake_npm(folder: Path, tarball: bytes | None, monkeypatch) -> None:
    """An ``npm`` first on PATH whose ``pack SPEC --pack-destination DIR`` writes ``tarball``
    into DIR under the package's name, or fails as a missing package does (None)."""
    folder.mkdir()
    if tarball is None:
        body = 'echo "npm error 404 Not Found - GET $2" >&2; exit 1'
    else:
        (folder / "tarball").write_bytes(tarball)
        body = f'cp "{folder}/tarball" "$4/{NPM_PACKAGES[1].tarball}"'
    (folder / "npm").write_text(f"#!/bin/sh\n{body}\n")
    (folder / "npm").chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")


def test_without_npm_a_damaged_cache_entry_is_refused(tmp_path, monkeypatch):
    package = NPM_PACKAGES[1]
    (tmp_path / package.tarball).write_bytes(b"not the package")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(WebError, match="needs npm to fetch @agnai/sentencepiece-js@1.1.1"):
        npm_tarball(package, tmp_path)


def test_a_tarball_other_than_the_pinned_one_is_refused_and_not_kept(tmp_path, monkeypatch):
    fake_npm(tmp_path / "bin", b"a tarball of another release", monkeypatch)
    cache = tmp_path / "cache"
    with pytest.raises(WebError, match="is not the pinned tarball"):
        npm_tarball(NPM_PACKAGES[1], cache)
    assert list(cache.iterdir()) == []


def test_npm_failing_is_one_line_naming_the_package(tmp_path, monkeypatch):
    fake_npm(tmp_path / "bin", None, monkeypatch)
    with pytest.raises(WebError, match="npm could not fetch @agnai/sentencepiece-js@1.1.1: .*404"):
        npm_tarball(NPM_PACKAGES[1], tmp_path / "cache")


def test_a_damaged_cache_entry_is_fetched_again(runtime_dir, tmp_path, monkeypatch):
    package = NPM_PACKAGES[1]
    good = (web.npm_cache() / package.tarball).read_bytes()  # checked by runtime_dir
    fake_npm(tmp_path / "bin", good, monkeypatch)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / package.tarball).write_bytes(good[:1000])  # cut short
    assert npm_tarball(package, cache).read_bytes() == good
    monkeypatch.setattr(shutil, "which", lambda name: None)  # now no npm is needed
    assert npm_tarball(package, cache) == cache / package.tarball


def test_runtime_folder_holds_the_pinned_packages(runtime_dir):
    versions = json.loads((runtime_dir / web.RUNTIME).read_text())
    assert versions == {"onnxruntime-web": "1.31.1", "@agnai/sentencepiece-js": "1.1.1"}
    for package in NPM_PACKAGES:
        for target in package.files.values():
            assert (runtime_dir / target).stat().st_size > 0, target
    assert (runtime_dir / "ort/ort-wasm-simd-threaded.wasm").read_bytes()[:4] == b"\0asm"


# --- tokenisation in the page ----------------------------------------------------------------


@pytest.fixture(scope="module", params=["unigram", "bpe"])
def joint_vocab(request, tmp_path_factory) -> Path:
    """A joint de+en SentencePiece model of 2000 pieces on 10,000 Multi30k training pairs."""
    lines = []
    for side in ("de", "en"):
        path = DATA / f"multi30k/train.{side}.gz"
        if not path.is_file():
            required(f"the tokenisation test needs {path} (shared/data beside the clone)")
        with gzip.open(path, "rt", encoding="utf-8") as file:
            lines += [line.rstrip("\n") for line in itertools.islice(file, 10_000)]
    vocab = train_vocab(lines, 2000, model_type=request.param)
    path = tmp_path_factory.mktemp(request.param) / "spm.model"
    path.write_bytes(vocab.model_proto)
    return path


def test_the_page_pieces_every_dev_line_as_sentencepiece_does(joint_vocab, runtime_dir, tmp_path):
    lines = [*ODD_LINES, *dev_lines("de"), *dev_lines("en")]  # a joint model: both sides
    vocab = Vocab.load(joint_vocab)
    shutil.copyfile(joint_vocab, runtime_dir / "spm.model")
    (runtime_dir / "lines.json").write_text(json.dumps(lines), encoding="utf-8")
    script = """(async () => {
      const { loadTokenizer } = await import("/translate.js");
      const tokenizer = await loadTokenizer(new URL("/spm.model", location.href));
      const lines = await (await fetch("/lines.json")).json();
      return lines.map((line) => [tokenizer.encode(line), tokenizer.pieces(line)]);
    })()"""
    with static_server(runtime_dir) as url, browser_page(tmp_path) as open_page:
        got = open_page(url + "runtime.json", lambda page: run_in_page(page, script))
    ids = vocab.encode(lines)
    pieces = vocab.processor.encode(lines, out_type=str)
    assert len(got) == len(lines) > 8800
    for line, (page_ids, page_pieces), want_ids, want_pieces in zip(lines, got, ids, pieces):
        assert (page_ids, page_pieces) == (want_ids, want_pieces), line


# --- translation in the page -------------------------------------------------------------------


@pytest.fixture(scope="module")
def lstm_dir(word_corpus, tmp_path_factory) -> Path:
    """A two-layer LSTM decoder (two state rows per layer) with additive attention."""
    import torch

    from tests.conftest import tiny_config
    from translate.train.loop import train

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("lstm") / "model"
    changes = ["model.cell=lstm", "model.dec_layers=2", "model.attention=additive"]
    cfg = tiny_config(word_corpus, f"out_dir={out}", *changes, "train.max_epochs=4")
    return train(cfg, log=lambda message: None)


@pytest.fixture(scope="module", params=["attention_dir", "trained_dir", "lstm_dir"])
def export_dir(request, tmp_path_factory) -> Path:
    """The export of a toy model: a GRU with general attention, one without attention, a
    two-layer LSTM with additive attention."""
    from translate.export.directory import export_model

    folder = tmp_path_factory.mktemp("web")
    return export_model(request.getfixturevalue(request.param), folder / "export")


@pytest.fixture(scope="module")
def web_folder(export_dir, runtime_dir) -> Path:
    """The page folder of a toy model, as users get it: int8."""
    return write_web(export_dir, export_dir.parent / "web")


def test_the_folder_holds_the_page_the_int8_graphs_and_a_manifest_naming_them(
    web_folder, export_dir
):
    names = {str(p.relative_to(web_folder)) for p in web_folder.rglob("*") if p.is_file()}
    assert names == {
        "index.html",
        "translate.js",
        "runtime.json",
        "manifest.json",
        "encoder.int8.onnx",
        "step.int8.onnx",
        "spm.model",
        *(target for package in NPM_PACKAGES for target in package.files.values()),
    }
    export = export_dir
    manifest = json.loads((web_folder / "manifest.json").read_text())
    assert manifest["graphs"] == {
        "int8": {"encoder": "encoder.int8.onnx", "step": "step.int8.onnx"}
    }
    original = json.loads((export / "manifest.json").read_text())
    assert {**original, "graphs": manifest["graphs"]} == manifest
    for name in ("encoder.int8.onnx", "step.int8.onnx", "spm.model"):
        assert (web_folder / name).read_bytes() == (export / name).read_bytes()


def test_a_folder_in_the_way_or_graphs_not_exported_are_refused(trained_dir, tmp_path):
    from translate.export.directory import export_model
    from translate.export.manifest import ExportError

    fp32_only = export_model(trained_dir, tmp_path / "fp32", int8=False)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(WebError, match="exists and is not an empty folder"):
        prepare_web(busy)  # what a command checks before it exports
    with pytest.raises(WebError, match="exists and is not an empty folder"):
        write_web(fp32_only, busy, precision="fp32")
    assert [p.name for p in busy.iterdir()] == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "fp32"]  # nothing half-written
    with pytest.raises(ExportError, match="has no int8 graphs"):
        write_web(fp32_only, tmp_path / "page")
    with pytest.raises(WebError, match="precision 'fp16': one of fp32, int8"):
        write_web(fp32_only, tmp_path / "page", precision="fp16")
    with pytest.raises(ExportError, match="not an export directory"):
        write_web(trained_dir, tmp_path / "page")
    assert not (tmp_path / "page").exists()


SHOWN = "[...document.querySelectorAll('#output .translation')].map(p => p.textContent)"


async def translate_in_page(
    page: DevTools, text: str, beam: int | None = None, seconds: float = 300
) -> dict:
    """Type ``text`` into the page, press Translate (with ``beam``, else the page's: the
    model's), and read what it shows and measured within ``seconds``."""
    await page.wait_for("!document.getElementById('translate').disabled", seconds=120)
    if beam is not None:
        await page.evaluate(f"document.getElementById('beam').value = {int(beam)}")
    await page.click("#source")
    await page.send("Input.insertText", text=text)
    await page.click("#translate")
    await page.wait_for(
        "document.getElementById('status').textContent.includes('translated')"
        " || document.getElementById('error').textContent !== ''",
        seconds=seconds,
    )
    return {
        "shown": await page.evaluate(SHOWN),
        "error": await page.evaluate("document.getElementById('error').textContent"),
        "warnings": await page.evaluate("document.querySelectorAll('#output .warning').length"),
        "about": await page.evaluate("document.getElementById('about').textContent"),
        "timings": await page.evaluate("window.page.timings"),
    }


NBEST = """(async (lines, searches) => {
  const out = [];
  for (const options of searches) {
    for (const line of lines) {
      const { candidates } = await window.page.translator.translate(line, options);
      out.push(candidates.map((c) => [c.text, c.score, c.logProb]));
    }
  }
  return out;
})"""
SEARCHES = [  # greedy; beam 3, its 3 best, with another length penalty than the model's
    {"beam": 1, "nBest": 1},
    {"beam": 3, "nBest": 3, "lengthPenalty": 0.6},
]


async def translate_and_search(page: DevTools, lines: list[str]) -> dict:
    """What the page shows for ``lines``, then what its translator finds with SEARCHES."""
    shown = await translate_in_page(page, "\n".join(lines))
    searched = await search_in_page(page, lines)
    await page.evaluate("document.getElementById('beam').value = '0'")
    await page.click("#translate")
    refused = await page.wait_for("document.getElementById('error').textContent")
    return {**shown, "searched": searched, "refused": refused}


async def search_in_page(page: DevTools, lines: list[str]) -> list:
    """The candidates [text, score, log_prob] the page's translator finds with SEARCHES."""
    await page.wait_for("window.page.translator !== null", seconds=120)
    return await run_in_page(page, f"{NBEST}({json.dumps(lines)}, {json.dumps(SEARCHES)})")


def toy_lines(word_corpus: Path) -> list[str]:
    lines = (word_corpus / "dev.de").read_text(encoding="utf-8").splitlines()[:20]
    # blank lines (to Python: \x1c is whitespace, U+FEFF is not), an unknown word, a line
    # longer than the model's longest source (200 pieces)
    return [*lines, "", "\x1c\x85 ", "\ufeff", "hund über katze", "haus katze " * 101]


def assert_same_candidates(searched: list, engine, lines: list[str], tolerance: float) -> None:
    """The page's candidates of SEARCHES are the engine's, one line at a time as the page goes
    (int8 activations are quantized per batch), scores within ``tolerance``."""
    from translate.decoding import DecodeOptions

    searched = iter(searched)
    for search in SEARCHES:
        options = DecodeOptions(
            beam=search["beam"],
            n_best=search["nBest"],
            length_penalty=search.get("lengthPenalty", engine.defaults.length_penalty),
        )
        for line in lines:
            wanted = engine.translate_batch([line], options)[0].candidates
            page_candidates = next(searched)
            assert [c[0] for c in page_candidates] == [c.text for c in wanted], (search, line)
            for (_, score, log_prob), candidate in zip(page_candidates, wanted):
                assert score == pytest.approx(candidate.score, abs=tolerance)
                assert log_prob == pytest.approx(candidate.log_prob, abs=tolerance)


def test_the_page_translates_as_the_onnx_engine_does(web_folder, word_corpus, tmp_path):
    from translate.export.engine import OnnxTranslator

    lines = toy_lines(word_corpus)
    with static_server(web_folder) as url, browser_page(tmp_path) as open_page:
        got = open_page(url, lambda page: translate_and_search(page, lines))
    engine = OnnxTranslator.from_dir(web_folder, int8=True, threads=1)
    assert got["error"] == ""
    assert got["shown"] == [engine.translate([line])[0] for line in lines]
    assert got["warnings"] == 1  # the long line was cut, as the engine cuts it
    # int8 activations are quantized as the graphs run: the browser's float kernels (tanh,
    # sigmoid, exp) differ from the CPU's in the last bits, which can move a value by one
    # quantization step; so the same translations, with scores apart by up to ~5e-3 (the
    # LSTM). The fp32 test below holds the search itself to float rounding.
    assert_same_candidates(got["searched"], engine, lines, tolerance=2e-2)
    assert got["refused"] == "beam 0: an integer >= 1"
    assert "int8, ONNX Runtime Web 1.31.1" in got["about"]
    timings = got["timings"]
    assert len(timings["sentences"]) == len(lines) - 1
    per_sentence = sorted(timings["sentences"])[len(lines) // 2]
    print(
        f"\n{web_folder.parent.name}: load {timings['load']:.0f} ms, first translation "
        f"{timings['first']:.0f} ms, median per sentence {per_sentence:.1f} ms (beam 5)"
    )


def test_in_fp32_the_page_finds_the_engines_candidates_and_scores(
    export_dir, runtime_dir, word_corpus, tmp_path
):
    from translate.export.engine import OnnxTranslator

    folder = write_web(export_dir, tmp_path / "fp32", precision="fp32")
    lines = toy_lines(word_corpus)
    with static_server(folder) as url, browser_page(tmp_path) as open_page:
        searched = open_page(url, lambda page: search_in_page(page, lines))
    engine = OnnxTranslator.from_dir(folder, threads=1)
    assert_same_candidates(searched, engine, lines, tolerance=1e-4)

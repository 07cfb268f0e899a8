"""``translate export`` and ``translate translate --engine onnx`` from the command line: what
they write and say, the same output as the PyTorch engine, the flags the ONNX engine cannot
honour refused in one line, and translation in a process where torch cannot be imported."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_cli import cli

pytest.importorskip("onnxruntime")

from translate.export import web  # noqa: E402
from translate.export.web import NPM_PACKAGES  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def export_dir(attention_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli-export") / "onnx"
    result = cli("export", "-m", attention_dir, "-o", out)
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith(f"wrote {out}: fp32 and int8 ONNX graphs, ")
    return out


@pytest.fixture(scope="module")
def source(word_corpus) -> Path:
    return word_corpus / "dev.de"


def test_export_writes_the_graphs_it_names(export_dir, attention_dir, tmp_path):
    names = sorted(p.name for p in export_dir.iterdir())
    assert names == [
        "encoder.int8.onnx",
        "encoder.onnx",
        "manifest.json",
        "spm.model",
        "step.int8.onnx",
        "step.onnx",
    ]
    fp32_only = cli("export", "-m", attention_dir, "-o", tmp_path / "fp32", "--no-int8")
    assert fp32_only.returncode == 0, fp32_only.stderr
    assert "fp32 ONNX graphs" in fp32_only.stderr and "int8" not in fp32_only.stderr
    assert not list((tmp_path / "fp32").glob("*.int8.onnx"))
    refused = cli("translate", "--engine", "onnx", "--quantize", "int8", "-m", tmp_path / "fp32")
    assert refused.returncode == 1
    assert (
        refused.stderr
        == f"translate: error: {tmp_path / 'fp32'} has no int8 graphs (exported with: fp32)\n"
    )


@pytest.mark.parametrize(
    "flags",
    [["--beam", "1"], ["--beam", "4", "--n-best", "2", "--length-penalty", "0.6"], ["--scores"]],
)
def test_the_onnx_engine_writes_what_the_torch_engine_writes(
    flags, export_dir, attention_dir, source, tmp_path
):
    torch_out, onnx_out = tmp_path / "torch.en", tmp_path / "onnx.en"
    torch_run = cli("translate", "-m", attention_dir, "-i", source, "-o", torch_out, *flags)
    onnx_run = cli(
        "translate", "--engine", "onnx", "-m", export_dir, "-i", source, "-o", onnx_out, *flags
    )
    assert torch_run.returncode == 0 and onnx_run.returncode == 0, onnx_run.stderr
    assert onnx_run.stderr == torch_run.stderr.replace(str(torch_out), str(onnx_out))
    torch_rows = torch_out.read_text(encoding="utf-8").splitlines()
    onnx_rows = onnx_out.read_text(encoding="utf-8").splitlines()
    assert len(torch_rows) == len(onnx_rows) > 10
    for theirs, ours in zip(torch_rows, onnx_rows):
        if " ||| " not in theirs:
            assert ours == theirs
            continue
        *text, score = theirs.split(" ||| ")
        *our_text, our_score = ours.split(" ||| ")
        assert our_text == text and float(our_score) == pytest.approx(float(score), abs=2e-4)


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--sample"], "the ONNX engine does not sample; use the PyTorch engine for --sample"),
        (
            ["--alignment"],
            "the ONNX engine gives no alignment; use the PyTorch engine for --alignment",
        ),
        (["--device", "cuda"], "--engine onnx runs on the CPU; --device cuda needs --engine torch"),
        (
            ["--dtype", "bf16"],
            "--engine onnx runs fp32 graphs, or int8 ones with --quantize int8; --dtype bf16 "
            "needs --engine torch",
        ),
    ],
)
def test_what_the_onnx_engine_cannot_do_is_refused_in_one_line(
    flags, message, export_dir, tmp_path
):
    out = tmp_path / "out.en"
    result = cli(
        "translate", "--engine", "onnx", "-m", export_dir, "-o", out, *flags, stdin="hund\n"
    )
    assert (result.returncode, result.stderr) == (1, f"translate: error: {message}\n")
    assert not out.exists() and not list(tmp_path.iterdir())


def test_a_folder_given_to_the_other_engine_is_refused_with_what_to_do(export_dir, attention_dir):
    ensemble = cli("translate", "--engine", "onnx", "-m", export_dir, "-m", export_dir, stdin="")
    assert ensemble.stderr == (
        "translate: error: --engine onnx translates with one export (-m once); ensembles: "
        "--engine torch\n"
    )
    model = cli("translate", "--engine", "onnx", "-m", attention_dir, stdin="hund\n")
    assert model.returncode == 1
    assert model.stderr == (
        f"translate: error: {attention_dir} is a model directory, not an export: translate "
        f"export -m {attention_dir} -o OUT writes one, for --engine onnx -m OUT\n"
    )
    export = cli("translate", "-m", export_dir, stdin="hund\n")
    assert export.returncode == 1
    assert export.stderr == (
        f"translate: error: {export_dir} is an ONNX export: translate it with --engine onnx\n"
    )


def test_export_refusals_are_one_line_and_write_nothing(attention_dir, tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    taken = cli("export", "-m", attention_dir, "-o", tmp_path / "notes")
    assert taken.returncode == 1
    assert taken.stderr == (
        f"translate: error: {tmp_path / 'notes'} is not empty and holds no export "
        "(manifest.json); give a new or empty folder\n"
    )
    assert [p.name for p in (tmp_path / "notes").iterdir()] == ["keep.txt"]
    same = cli("export", "-m", attention_dir, "-o", tmp_path / "x", "--web", tmp_path / "x")
    assert (
        same.stderr == "translate: error: --web needs a folder of its own, not the export's (-o)\n"
    )
    missing = cli("export", "-m", tmp_path / "nothing", "-o", tmp_path / "y")
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes"]


def test_the_onnx_engine_translates_where_torch_cannot_be_imported(export_dir, source, tmp_path):
    """A service without PyTorch: torch made unimportable, the command still translates (as
    the PyTorch engine does) and no module of torch was loaded."""
    expected = cli("translate", "--engine", "onnx", "-m", export_dir, "-i", source).stdout
    program = (
        "import sys; sys.modules['torch'] = None\n"
        "from translate.cli import main\n"
        "code = main(sys.argv[1:])\n"
        "assert not [m for m in sys.modules if m.startswith('torch') and sys.modules[m]]\n"
        "sys.exit(code)\n"
    )
    args = ["translate", "--engine", "onnx", "--quantize", "int8", "-m", export_dir, "-i", source]
    int8 = subprocess.run(
        [sys.executable, "-c", program, *map(str, args)], capture_output=True, text=True, cwd=ROOT
    )
    assert int8.returncode == 0, int8.stderr
    assert len(int8.stdout.splitlines()) == len(expected.splitlines())
    args.remove("--quantize"), args.remove("int8")
    fp32 = subprocess.run(
        [sys.executable, "-c", program, *map(str, args)], capture_output=True, text=True, cwd=ROOT
    )
    assert (fp32.returncode, fp32.stdout) == (0, expected), fp32.stderr


def test_export_web_writes_a_page_folder(attention_dir, tmp_path):
    cached = all((web.npm_cache() / p.tarball).is_file() for p in NPM_PACKAGES)
    if not cached and shutil.which("npm") is None:
        why = "export --web needs npm to fetch ONNX Runtime Web (apt-get install npm)"
        if os.environ.get("TRANSLATE_CI") == "1":
            pytest.fail(f"{why}; TRANSLATE_CI=1, so it must run here")
        pytest.skip(why)
    out, page = tmp_path / "onnx", tmp_path / "page"
    result = cli("export", "-m", attention_dir, "-o", out, "--web", page)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 2 and lines[1].startswith(f"wrote {page}: a page that translates")
    assert lines[1].endswith(f"serve it as static files, e.g. python -m http.server -d {page}")
    files = {p.name for p in page.iterdir()}
    assert {"index.html", "manifest.json", "encoder.int8.onnx", "step.int8.onnx"} <= files
    assert "encoder.onnx" not in files

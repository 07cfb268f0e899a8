"""Scores a researcher relies on: significance and BLEU by source length, from the CLI too."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from translate.cli import main
from translate.score import (
    bleu_by_length,
    format_length_table,
    format_scores,
    paired_bootstrap,
    score,
)

REFS = ["the dog runs in the park .", "a cat sleeps on the mat .", "two men play football ."] * 15
GOOD = ["the dog runs in a park .", "a cat sleeps on the mat .", "two men play soccer ."] * 15
BAD = ["dog runs .", "the cat .", "men play ."] * 15
SOURCES = ["ein Satz ."] * 30 + [" ".join(["lang"] * 12)] * 15  # two length buckets


def test_paired_bootstrap_against_itself_gives_p_one():
    result = paired_bootstrap(REFS, GOOD, list(GOOD), samples=200)
    assert result["bleu_p_value"] == 1.0 and result["chrf_p_value"] == 1.0
    assert result["baseline_bleu"] == result["system_bleu"]


def test_paired_bootstrap_separates_a_much_better_system():
    result = paired_bootstrap(REFS, BAD, GOOD, samples=200)
    assert result["system_bleu"] > result["baseline_bleu"] + 20
    assert result["bleu_p_value"] < 0.01


def test_bleu_by_length_buckets():
    sources = ["kurz ."] * 3 + [" ".join(["lang"] * 30)] * 3
    refs = ["a short one for the test ."] * 3 + ["a long sentence here for the test ."] * 3
    other = ["a short one for the test ."] * 3 + ["x"] * 3
    table = bleu_by_length(sources, refs, {"a": refs, "b": other})
    assert table["buckets"] == ["1-10", "11-15", "16-20", "21-25", ">25"]
    assert table["sentences"] == [3, 0, 0, 0, 3]
    assert table["a"][0] == table["a"][4] == 100.0 and table["a"][1] is None
    assert table["b"][4] == 0.0


def test_score_cli_with_significance_buckets_and_plot(tmp_path):
    for name, lines in (("ref", REFS), ("good", GOOD), ("bad", BAD)):
        (tmp_path / name).write_text("\n".join(lines) + "\n")
    (tmp_path / "src").write_text("\n".join(["ein Satz"] * len(REFS)) + "\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "translate",
            "score",
            "-r",
            tmp_path / "ref",
            tmp_path / "bad",
            tmp_path / "good",
            "--paired-bs",
            "100",
            "--src",
            tmp_path / "src",
            "-o",
            tmp_path / "buckets.png",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result[str(tmp_path / "good")]["paired_bs"]["bleu_p_value"] < 0.05
    assert (tmp_path / "buckets.png").read_bytes()[:4] == b"\x89PNG"
    assert done.stderr == f"wrote {tmp_path / 'buckets.png'}\n"


def score_cli(capsys, *args, said: str = "") -> str:
    """``translate score ARGS`` in this process: what it prints (on stderr: ``said``)."""
    assert main(["score", *map(str, args)]) == 0
    out, err = capsys.readouterr()
    assert err == said
    return out


@pytest.fixture
def files(tmp_path) -> dict[str, Path]:
    paths = {}
    for name, lines in (("ref", REFS), ("good", GOOD), ("bad", BAD), ("src", SOURCES)):
        paths[name] = tmp_path / name
        paths[name].write_text("\n".join(lines) + "\n")
    return paths


def test_score_prints_each_systems_scores(files, capsys):
    good = score(GOOD, REFS)
    out = score_cli(capsys, "-r", files["ref"], files["good"])
    assert out == (
        f"BLEU = {good['bleu']:6.2f}  ({good['bleu_signature']})\n"
        f"CHRF = {good['chrf']:6.2f}  ({good['chrf_signature']})\n"
    )
    bad = score(BAD, REFS)
    both = score_cli(capsys, "-r", files["ref"], files["good"], files["bad"])
    assert both == f"== {files['good']}\n{out}== {files['bad']}\n" + format_scores(bad) + "\n"
    assert bad["bleu"] < good["bleu"]


def test_ter_adds_ter(files, capsys):
    plain = score_cli(capsys, "-r", files["ref"], files["good"])
    ter = score(GOOD, REFS, ter=True)
    with_ter = score_cli(capsys, "-r", files["ref"], files["good"], "--ter")
    assert with_ter == plain + f"TER  = {ter['ter']:6.2f}  ({ter['ter_signature']})\n"
    assert "TER" not in plain


def test_json_prints_the_scores_as_one_object(files, capsys):
    out = score_cli(capsys, "-r", files["ref"], files["good"], "--json")
    assert out.count("\n") == 1 and json.loads(out) == score(GOOD, REFS)
    both = json.loads(score_cli(capsys, "-r", files["ref"], files["bad"], files["good"], "--json"))
    assert both == {str(files["bad"]): score(BAD, REFS), str(files["good"]): score(GOOD, REFS)}


def test_paired_bs_compares_each_system_with_the_first(files, capsys):
    args = ("-r", files["ref"], files["bad"], files["good"], "--json")
    assert all(
        "paired_bs" not in system for system in json.loads(score_cli(capsys, *args)).values()
    )
    result = json.loads(score_cli(capsys, *args, "--paired-bs", "50"))
    compared = result[str(files["good"])]["paired_bs"]
    assert compared == paired_bootstrap(REFS, BAD, GOOD, samples=50)
    assert compared["bleu_p_value"] < 0.05 and "paired_bs" not in result[str(files["bad"])]
    text = score_cli(capsys, "-r", files["ref"], files["bad"], files["good"], "--paired-bs", "50")
    assert f"paired bootstrap vs {files['bad']}: BLEU {compared['baseline_bleu']} -> " in text


def test_src_adds_bleu_by_source_length_and_plot_draws_it(files, capsys, tmp_path):
    plain = score_cli(capsys, "-r", files["ref"], files["good"])
    table = bleu_by_length(SOURCES, REFS, {str(files["good"]): GOOD})
    out = score_cli(capsys, "-r", files["ref"], files["good"], "--src", files["src"])
    assert out == plain + format_length_table(table) + "\n"
    for flag in "-o", "--output", "--plot":  # --plot: its earlier name
        png = tmp_path / f"buckets{flag}.png"
        drawn = score_cli(
            capsys,
            "-r",
            files["ref"],
            files["good"],
            "--src",
            files["src"],
            flag,
            png,
            said=f"wrote {png}\n",
        )
        assert drawn == out and png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "args, message",
    [
        (
            [],
            "-o draws BLEU by source length as a PNG: give --src too (the scores are printed; > FILE "
            "keeps them)",
        ),
        (["--src", "{src}"], "{out}: plots are written as PNG; give a file name ending in .png"),
    ],
)
def test_o_without_src_or_png_is_one_line_and_draws_nothing(files, tmp_path, capsys, args, message):
    out = tmp_path / "report.txt"
    named = [a.format(src=files["src"]) for a in args]
    assert main(["score", "-r", str(files["ref"]), str(files["good"]), *named, "-o", str(out)]) == 1
    assert capsys.readouterr() == ("", f"translate: error: {message.format(out=out)}\n")
    assert not out.exists()


def test_empty_files_are_one_line(tmp_path, capsys):
    (tmp_path / "ref").write_text("", encoding="utf-8")
    (tmp_path / "hyp").write_text("", encoding="utf-8")
    assert main(["score", "-r", str(tmp_path / "ref"), str(tmp_path / "hyp")]) == 1
    assert capsys.readouterr().err == (
        "translate: error: nothing to score: the files have no lines\n"
    )

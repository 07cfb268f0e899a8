"""Scores a researcher relies on: significance and BLEU by source length, from the CLI too."""

import json
import subprocess
import sys

from translate.score import bleu_by_length, paired_bootstrap

REFS = ["the dog runs in the park .", "a cat sleeps on the mat .", "two men play football ."] * 15
GOOD = ["the dog runs in a park .", "a cat sleeps on the mat .", "two men play soccer ."] * 15
BAD = ["dog runs .", "the cat .", "men play ."] * 15


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
            "--plot",
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

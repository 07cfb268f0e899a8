"""The command line: end to end on a cut-down embedded corpus, and the paths a user walks at its
edges: one-line errors and exit statuses, closed pipes and streams, a full disk, numbers out of
range, output formats, and commands that start without torch."""

import json
import os
import random
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import torch
import yaml

import translate.output
from tests.conftest import GERMAN
from translate.cli import EXIT_BROKEN_PIPE, main
from translate.decoding import DecodeOptions
from translate.translator import Translator

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = [
    "prepare",
    "train",
    "translate",
    "tune",
    "average",
    "score",
    "plot",
    "serve",
    "attention",
]
# Sentences longer than the training ones: the tiny models are unsure there, so that decoding
# settings show in the translations.
_rng = random.Random(0)
LONG = [" ".join(_rng.choice(GERMAN) for _ in range(_rng.randint(10, 16))) for _ in range(60)]


def cli(*args, stdin=None, timeout=300, **streams) -> subprocess.CompletedProcess:
    """``python -m translate ARGS`` in a process of its own, waited for ``timeout`` seconds at
    most; ``streams`` may give its stdin or stdout (else both are captured, with stderr)."""
    return shell("", *args, stdin=stdin, timeout=timeout, **streams)


def shell(redirect: str, *args, stdin=None, timeout=300, **streams):
    """As :func:`cli`, with a shell ``redirect`` of the program's streams (e.g. ``<&-``)."""
    command = ["sh", "-c", f'exec "$0" "$@" {redirect}', sys.executable, "-m", "translate"]
    if stdin is not None:
        streams["input"] = stdin
    streams.setdefault("stdout", subprocess.PIPE)
    return subprocess.run(
        [*command, *map(str, args)],
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        timeout=timeout,
        **streams,
    )


@pytest.fixture(autouse=True)
def keep_threads():
    """main() sets torch's threads for the process; leave them as they were."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def cut_corpus(folder: Path, split: str, n: int, max_words: int) -> None:
    """The first n pairs of the embedded corpus whose German side has at most max_words words."""
    de = (ROOT / f"data/toy/{split}.de").read_text(encoding="utf-8").splitlines()
    en = (ROOT / f"data/toy/{split}.en").read_text(encoding="utf-8").splitlines()
    pairs = [(d, e) for d, e in zip(de, en) if len(d.split()) <= max_words][:n]
    (folder / f"{split}.de").write_text("".join(d + "\n" for d, _ in pairs), encoding="utf-8")
    (folder / f"{split}.en").write_text("".join(e + "\n" for _, e in pairs), encoding="utf-8")


def test_train_translate_score_end_to_end(tmp_path):
    for split, n in (("train", 3000), ("dev", 100), ("test", 100)):
        cut_corpus(tmp_path, split, n, max_words=8)
    model = tmp_path / "model"
    done = cli(
        "train",
        ROOT / "recipes/toy/config.yaml",
        f"out_dir={model}",
        f"data.train={tmp_path / 'train'}",
        f"data.dev={tmp_path / 'dev'}",
        "train.max_minutes=0",
        "train.max_epochs=10",
        "train.threads=2",
        timeout=1200,
    )
    assert done.returncode == 0, done.stderr
    assert "kept" in done.stderr and "dropped" in done.stderr
    assert {"config.yaml", "spm.model", "model.safetensors", "metrics.jsonl"} <= {
        p.name for p in model.iterdir()
    }
    log = [json.loads(line) for line in (model / "metrics.jsonl").read_text().splitlines()]
    assert any("dev_bleu" in entry for entry in log)
    assert all(0.0 <= entry["clipped"] <= 1.0 for entry in log if "clipped" in entry)

    hyp = tmp_path / "test.hyp"
    done = cli("translate", "-m", model, "-i", tmp_path / "test.de", "-o", hyp, "--beam", 4)
    assert done.returncode == 0, done.stderr
    assert len(hyp.read_text().splitlines()) == 100
    assert done.stderr.endswith(f"wrote 100 lines to {hyp}\n")
    done = cli("score", "-r", tmp_path / "test.en", hyp, "--json")
    assert done.returncode == 0, done.stderr
    scores = json.loads(done.stdout)
    assert scores["bleu"] > 40, scores  # chance level is below 5
    assert "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp" in scores["bleu_signature"]

    # stdin -> stdout keeps blank lines
    done = cli("translate", "-m", model, "--beam", 1, stdin="Der Hund schläft.\n\nDie Katze.\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n") == 3 and done.stdout.split("\n")[1] == ""


def test_user_mistakes_are_one_line_errors(trained_dir, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("model: {hiden_dim: 3}\n")
    for args, message in [
        (("train", config), "unknown config key 'model.hiden_dim'. Did you mean"),
        (("prepare", tmp_path / "none.yaml"), f"config file not found: {tmp_path}/none.yaml"),
        (("translate", "-m", tmp_path / "nothing"), "model directory not found"),
        (("serve", "-m", tmp_path / "nothing"), "model directory not found"),
        (("score", "-r", tmp_path / "r.txt", tmp_path / "h.txt"), "file not found"),
        (("translate", "-m", trained_dir, "--device", "tpu"), "device 'tpu' is not a torch"),
        (("translate", "-m", trained_dir, "-i", tmp_path / "no.de"), "input file not found"),
        (("translate", "-m", trained_dir, "--resume"), "--resume continues an output file"),
    ]:
        assert main([str(a) for a in args]) == 1, args
        out, err = capsys.readouterr()
        assert err.startswith("translate: error: ") and err.count("\n") == 1, err
        assert message in err and out == ""


def test_version_names_translate_torch_and_python(capsys):
    with pytest.raises(SystemExit) as ended:
        main(["--version"])
    assert ended.value.code == 0
    python = ".".join(map(str, sys.version_info[:3]))
    assert capsys.readouterr().out == (
        f"translate {version('translate')} (torch {torch.__version__}, Python {python})\n"
    )


def test_help_explains_each_command(capsys):
    for command in COMMANDS:
        with pytest.raises(SystemExit) as ended:
            main([command, "--help"])
        assert ended.value.code == 0
        assert capsys.readouterr().out.startswith("usage: translate " + command)


def test_commands_that_load_no_model_start_without_torch(tmp_path):
    """--help, each command's --help and score run without importing torch (seconds saved at
    every start); checked after each, in one process."""
    (tmp_path / "ref").write_text("the dog runs .\n")
    script = (
        "import sys\n"
        "from translate.cli import main\n"
        "for argv in sys.argv[1:]:\n"
        "    try:\n"
        "        main(argv.split('|'))\n"
        "    except SystemExit:\n"
        "        pass\n"
        "    if 'torch' in sys.modules:\n"
        "        sys.exit('torch imported by: ' + argv)\n"
    )
    runs = [
        "--help",
        "--version",
        *(f"{c}|--help" for c in COMMANDS),
        f"score|-r|{tmp_path}/ref|{tmp_path}/ref",
    ]
    done = subprocess.run(
        [sys.executable, "-c", script, *runs], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("usage: translate") == 1 + len(COMMANDS)
    assert "BLEU = 100.00" in done.stdout and "(torch " in done.stdout


def test_a_closed_pipe_ends_quietly_with_141(trained_dir, tmp_path):
    """translate ... | head -1: the reader has gone when the lines come; no traceback, no
    message, the status a shell gives a writer SIGPIPE ended."""
    source = tmp_path / "in.de"
    source.write_text("hund katze\n" * 50)
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = cli("translate", "-m", trained_dir, "-i", source, "--beam", 1, stdout=write_end)
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (EXIT_BROKEN_PIPE, "")
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = cli("score", "-r", source, source, stdout=write_end)
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (EXIT_BROKEN_PIPE, "")


def test_closed_streams_and_a_full_disk_are_one_line_errors(trained_dir, tmp_path):
    source = tmp_path / "in.de"
    source.write_text("hund katze\n")
    translate = ("translate", "-m", trained_dir, "--beam", "1")
    for redirect, args, message in [
        ("<&-", translate, "cannot read stdin: it is closed"),
        (">&-", (*translate, "-i", source), "cannot write stdout: it is closed"),
        (">/dev/full", (*translate, "-i", source), "cannot write stdout: No space left on device"),
        (">/dev/full", ("score", "-r", source, source), "cannot write stdout: No space left on "),
        (
            "",
            (*translate, "-i", source, "-o", "/dev/full"),
            "cannot write /dev/full: No space left",
        ),
    ]:
        done = shell(redirect, *args, stdin=None if "<" in redirect else "")
        assert done.returncode == 1, (redirect, args, done.stderr)
        assert done.stderr.startswith("translate: error: " + message), done.stderr
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_an_output_that_is_a_directory_is_one_line_and_leaves_nothing(trained_dir, tmp_path):
    source = tmp_path / "in.de"
    source.write_text("hund\n")
    (tmp_path / "out").mkdir()
    done = cli("translate", "-m", trained_dir, "-i", source, "-o", tmp_path / "out")
    assert done.returncode == 1
    assert done.stderr == f"translate: error: cannot write {tmp_path}/out: it is a directory\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.de", "out"]
    done = cli("translate", "-m", trained_dir, "-i", source, "-o", tmp_path / "nowhere/out.en")
    assert done.returncode == 1
    assert done.stderr == (
        f"translate: error: cannot write {tmp_path}/nowhere/out.en: the folder "
        f"{tmp_path}/nowhere does not exist\n"
    )


def test_a_usage_error_is_status_2_without_a_traceback():
    """Numbers are checked as they are parsed (each flag's cases: test_decoding.py)."""
    done = cli("translate", "-m", "m", "--threads", "-1", timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("usage: translate translate")
    last = "translate translate: error: argument --threads: must be an integer >= 0, got -1"
    assert done.stderr.splitlines()[-1] == last and "Traceback" not in done.stderr


def test_an_override_that_is_not_yaml_is_one_line_naming_it():
    done = cli("prepare", ROOT / "recipes/toy/config.yaml", "train.lr=[1", timeout=120)
    assert done.returncode == 1
    assert done.stderr == (
        "translate: error: override 'train.lr=[1': the value is not valid YAML (expected ',' "
        "or ']', but got '<stream end>' at line 1, column 3)\n"
    )


def test_threads_sets_the_threads_of_the_search(trained_dir, tmp_path, capsys):
    source = tmp_path / "in.de"
    source.write_text("hund\n")
    for threads in (1, 2):
        assert (
            main(
                ["translate", "-m", str(trained_dir), "-i", str(source), "--threads", str(threads)]
            )
            == 0
        )
        assert torch.get_num_threads() == threads
    assert capsys.readouterr().out == "dog\n" * 2


def test_bad_utf8_in_translation_input(trained_dir, tmp_path):
    source = tmp_path / "in.txt"
    source.write_bytes(b"hund\nkatze \xff\xfe\nbaum\n")
    done = cli("translate", "-m", trained_dir, "-i", source, "--threads", 1)
    assert done.returncode == 1
    assert "line 2 is not valid UTF-8" in done.stderr and "Traceback" not in done.stderr
    done = cli("translate", "-m", trained_dir, "-i", source, "--replace-bad-utf8")
    assert done.returncode == 0 and done.stdout.splitlines()[0] == "dog"
    assert len(done.stdout.splitlines()) == 3


def test_resume_a_partly_written_output(trained_dir, tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("".join(f"{w}\n" for w in ["hund", "katze", "baum", "auto", "haus"] * 3))
    out = tmp_path / "out.txt"
    full = cli("translate", "-m", trained_dir, "-i", source, "-o", tmp_path / "full.txt")
    assert full.returncode == 0, full.stderr
    expected = (tmp_path / "full.txt").read_text()
    # an interrupted run left 4 whole lines and half of the fifth
    lines = expected.splitlines(keepends=True)
    (tmp_path / "out.txt.tmp").write_text("".join(lines[:4]) + lines[4][:2])
    done = cli("translate", "-m", trained_dir, "-i", source, "-o", out, "--resume")
    assert done.returncode == 0, done.stderr
    assert "resuming after the 4 input line(s) already translated" in done.stderr
    assert out.read_text() == expected and not (tmp_path / "out.txt.tmp").exists()


@pytest.fixture(scope="module")
def greedy_attention_dir(attention_dir, tmp_path_factory) -> Path:
    """The attention model with greedy search as its default (decode.beam 1)."""
    model_dir = tmp_path_factory.mktemp("greedy") / "model"
    shutil.copytree(attention_dir, model_dir)
    config = yaml.safe_load((model_dir / "config.yaml").read_text())
    config["decode"]["beam"] = 1
    (model_dir / "config.yaml").write_text(yaml.safe_dump(config))
    return model_dir


def test_beam_scores_and_alignments(greedy_attention_dir, tmp_path, capsys):
    """--beam 3 gives what a beam of 3 gives, on sentences where the model's own search (greedy)
    gives other translations; each line's score and alignment are those of its candidate."""
    translator = Translator.from_dir(greedy_attention_dir)
    lines = [*LONG, "", "baum"]
    greedy = [t.text for t in translator.translate_batch(lines)]
    best = translator.translate_batch(lines, translator.defaults.override(beam=3, attention=True))
    assert greedy != [t.text for t in best]  # dropping --beam would show
    source = tmp_path / "in.txt"
    source.write_text("".join(line + "\n" for line in lines))
    flags = ["-i", str(source), "--beam", "3", "--scores", "--alignment", "--threads", "1"]
    assert main(["translate", "-m", str(greedy_attention_dir), *flags]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(lines) and out[len(LONG)] == f"{len(LONG)} |||  ||| 0.0000 ||| "
    for number, (line, translation) in enumerate(zip(out, best)):
        line_number, text, score, pairs = line.split(" ||| ")
        candidate = translation.candidates[0]
        assert line_number == str(number)
        assert text == candidate.text and score == f"{candidate.score:.4f}"
        expected = [f"{s}-{t}" for t, s in enumerate((candidate.alignment or [])[:-1])]
        assert pairs.split() == expected


def test_n_best_lines_are_numbered_from_0_with_the_n_best_of_each_line(
    trained_dir, tmp_path, capsys
):
    translator = Translator.from_dir(trained_dir)
    lines = ["hund katze", "", "baum auto"]
    nbest = translator.translate_batch(lines, DecodeOptions(beam=4, n_best=3))
    expected = [
        f"{number} ||| {c.text} ||| {c.score:.4f}"
        for number, translation in enumerate(nbest)
        for c in translation.candidates
    ]
    del expected[4:6]  # a blank line gives one row
    assert expected[3] == "1 |||  ||| 0.0000" and len(set(expected[:3])) == 3
    source = tmp_path / "in.txt"
    source.write_text("".join(line + "\n" for line in lines))
    flags = ["-i", str(source), "--beam", "4", "--n-best", "3", "--threads", "1"]
    assert main(["translate", "-m", str(trained_dir), *flags]) == 0
    assert capsys.readouterr().out == "".join(line + "\n" for line in expected)


def test_greedy_scores_follow_the_length_penalty(attention_dir, tmp_path, capsys):
    """--scores means one thing: greedy's score is the log-probability over the penalty too."""
    source = tmp_path / "in.txt"
    source.write_text(LONG[0] + "\n")
    translator = Translator.from_dir(attention_dir)
    (found,) = translator.translate_batch([LONG[0]], DecodeOptions(beam=1, attention=True))
    log_prob, length = found.candidates[0].log_prob, len(found.candidates[0].pieces)  # with EOS

    def run(alpha: str) -> str:
        flags = ["-i", str(source), "--beam", "1", "--scores", "--length-penalty", alpha]
        assert main(["translate", "-m", str(attention_dir), *flags, "--threads", "1"]) == 0
        line, text, score = capsys.readouterr().out.rstrip("\n").split(" ||| ")
        assert line == "0"
        assert text == found.text
        return float(score)

    assert run("0") == pytest.approx(log_prob, abs=1e-4)
    divided = log_prob / ((5 + length) / 6) ** 2
    assert run("2") == pytest.approx(divided, abs=1e-4) and abs(divided - log_prob) > 1e-3


def test_sampling_follows_seed_and_temperature_each_alone(attention_dir, tmp_path, capsys):
    source = tmp_path / "in.txt"
    source.write_text("".join(line + "\n" for line in LONG[:20]))

    def sample(*flags: str) -> str:
        argv = ["translate", "-m", str(attention_dir), "-i", str(source), "--sample", *flags]
        assert main([*argv, "--n-best", "3", "--threads", "1"]) == 0
        return capsys.readouterr().out

    first = sample("--seed", "7", "--temperature", "2")
    assert len(first.splitlines()) == 60 and sample("--seed", "7", "--temperature", "2") == first
    assert sample("--seed", "8", "--temperature", "2") != first  # the seed alone
    assert sample("--seed", "7", "--temperature", "0.5") != first  # the temperature alone


def format_flags() -> list[list[str]]:
    """Every combination of the flags that shape translate's output."""
    return [
        [*scores, *alignment, *n_best, *sample]
        for scores in ([], ["--scores"])
        for alignment in ([], ["--alignment"])
        for n_best in ([], ["--n-best", "1"], ["--n-best", "3"])
        for sample in ([], ["--sample", "--temperature", "3"])
    ]


@pytest.mark.parametrize("flags", format_flags(), ids=lambda flags: " ".join(flags) or "plain")
def test_each_flag_combination_writes_fixed_columns_the_same_on_every_path(
    flags, attention_dir, tmp_path, capsys, monkeypatch
):
    """Plain text, one line per line, unless --scores, --alignment or --n-best is given; then
    rows LINE ||| TEXT ||| SCORE, ||| ALIGNMENT added by --alignment: the columns never move,
    N rows per line with --n-best N (1 too) and one for a blank line. stdout, -o and an -o
    resumed after an interruption hold the same bytes (sampled ones too: chunks of 3 here)."""
    monkeypatch.setattr(translate.output, "CHUNK_LINES", 3)
    lines = ["hund katze baum", "", *LONG[:4], "auto"]
    source = tmp_path / "in.de"
    source.write_text("".join(line + "\n" for line in lines))
    command = ["translate", "-m", str(attention_dir), "-i", str(source), "--threads", "1", *flags]
    assert main(command) == 0
    written = capsys.readouterr().out

    rows = {"--scores", "--alignment", "--n-best"} & set(flags)
    n_best = int(flags[flags.index("--n-best") + 1]) if "--n-best" in flags else 1
    fields = [row.split(" ||| ") for row in written.splitlines()]
    if not rows:
        assert [len(row) for row in fields] == [1] * len(lines) and fields[1] == [""]
    else:
        assert {len(row) for row in fields} == {4 if "--alignment" in flags else 3}
        numbers = [int(row[0]) for row in fields]
        assert numbers == [n for n, line in enumerate(lines) for _ in range(n_best if line else 1)]
        assert fields[numbers.index(1)][1:3] == ["", "0.0000"]  # the blank line's one row
    if "--sample" not in flags:  # the search's own candidates, column by column
        translator = Translator.from_dir(attention_dir)
        options = translator.defaults.override(n_best=n_best, attention=True)
        found = [
            candidate
            for line, translation in zip(lines, translator.translate_batch(lines, options))
            for candidate in (translation.candidates if line else translation.candidates[:1])
        ]
        assert [row[1 if rows else 0] for row in fields] == [c.text for c in found]
        if rows:  # to the 4 decimals printed: batches of other sizes round a little apart
            scores = [float(row[2]) for row in fields]
            assert scores == pytest.approx([c.score for c in found], abs=1e-4)
        if "--alignment" in flags:
            pairs = [[f"{s}-{t}" for t, s in enumerate((c.alignment or [])[:-1])] for c in found]
            assert [row[3].split() for row in fields] == pairs

    out = tmp_path / "out.txt"
    assert main([*command, "-o", str(out)]) == 0
    what = f"the rows of {len(lines)} input lines" if rows else f"{len(lines)} lines"
    assert capsys.readouterr().err == f"wrote {what} to {out}\n"
    assert out.read_text() == written
    # interrupted in the middle of line 5 (in a chunk, for sampling: resumed where it starts)
    cut = written.index("\n5 ||| " if rows else "\n", len("".join(written.splitlines(True)[:4])))
    resumed = tmp_path / "resumed.txt"
    (tmp_path / "resumed.txt.tmp").write_text(written[: cut + 4])
    assert main([*command, "-o", str(resumed), "--resume"]) == 0
    assert resumed.read_text() == written

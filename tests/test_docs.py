"""The documents hold: docs/config.md is what its generator writes and every config key has a
meaning; every command of README.md's bash blocks parses, names files that exist, and the quick
ones run.

Which README lines run, in README order, in a copy of the repository: those whose commands are
all quick (the toy recipe, ``translate`` train/prepare of the toy config, translate, score,
tune, average, plot, attention, export, the config reference, and text tools) and whose input files
exist by then. Installing (``python3 -m venv``, ``. .venv/bin/activate``, ``pip install``) is
a no-op there: the test runs in the installed environment. There ``translate train`` and
``prepare`` get TINY appended and data/toy is cut to TOY_LINES: the runs check that the
commands work (each loads torch, so each costs seconds), not what the model learns. Every other
line is checked without running: ``translate`` arguments by the real parser, overrides by the
config loader, and the files named; a ``bash recipes/...`` script must answer ``--help`` and
know each flag given to it. Placeholders in capitals (DIR, MODEL_DIR/test.de) name no file.
"""

from __future__ import annotations

import argparse
import fnmatch
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field, fields
from pathlib import Path

import pytest
import yaml

from translate.cli.parser import build_parser
from translate.cli.reference import COMMAND, field_comments, reference, sections
from translate.config import ConfigError, TrainConfig, load_config

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
NOT_IN_A_CLONE = (  # names of files and folders a clone has not: .git and what git ignores
    ".git",
    *(Path(p.rstrip("/")).name for p in (ROOT / ".gitignore").read_text().split() if p[0] != "#"),
)
SEPARATORS = {"&&", "||", "|", ";", "&", "(", ")"}
REDIRECTS = {">", ">>", "<", ">&", "&>", ">|"}
TEXT_TOOLS = {"echo", "printf", "cat", "head", "tail", "cut", "paste", "wc", "sort", "diff", "ls"}
QUICK_SUBCOMMANDS = {"translate", "score", "tune", "average", "plot", "attention", "export"}
TOY_CONFIG = "recipes/toy/config.yaml"
QUICK_RECIPES = {"recipes/toy/run.sh"}
TOY_LINES = {"train": 600, "dev": 40, "test": 40}
TINY = [  # what `translate train` and `prepare` get appended in the runs: seconds on 2 cores
    "data.vocab_size=200",
    "model.emb_dim=16",
    "model.hidden_dim=32",
    "model.enc_hidden_dim=16",
    "train.max_steps=20",
    "train.max_minutes=0",
    "train.valid_every=10",
    "train.valid_bleu_sentences=20",
    "train.threads=1",
    "decode.max_len_a=0",  # an untrained model's translations stop at 5 pieces
    "decode.max_len_b=5",
]
INPUTS = ("config", "model", "input", "ref", "src", "hyp")  # argparse dests naming read files
OUTPUTS = ("output", "plot")


# --- the config reference -----------------------------------------------------------------------


def test_docs_config_md_is_the_generated_reference():
    written = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    if written != reference():
        new = reference().splitlines()
        old = written.splitlines()
        first = next(
            (i for i, (a, b) in enumerate(zip(old, new)) if a != b), min(len(old), len(new))
        )
        pytest.fail(
            f"docs/config.md is out of date (from line {first + 1}: "
            f"{(old + [''])[first]!r} vs {(new + [''])[first]!r}); regenerate it: {COMMAND}"
        )


def test_every_config_key_has_a_meaning():
    missing = [key.name for section in sections() for key in section.keys if not key.meaning]
    assert not missing, (
        "config keys without a meaning (a trailing '# comment' on the field's line in "
        f"translate/config.py): {', '.join(missing)}"
    )


@dataclass
class Commented:
    """A dataclass whose comments are laid out every way the reader must understand."""

    # the comment above a field that has none of its own
    above: int = 1
    trailing: str = "x"  # its own comment,
    # continued below it
    bare: float = 0.5
    listed: list[str] = field(  # a field over
        default_factory=list
    )


def test_field_comments_are_read_from_above_beside_and_below():
    assert field_comments(Commented) == {
        "above": "the comment above a field that has none of its own",
        "trailing": "its own comment, continued below it",
        "bare": "",
        "listed": "a field over",
    }


def test_the_reference_states_types_defaults_choices_and_ranges():
    keys = {key.name: key for section in sections() for key in section.keys}
    assert keys["train.lr"].kind == "float" and keys["train.lr"].allowed == "> 0"
    assert keys["model.dropout"].allowed == "in [0, 1)"
    assert keys["model.cell"].allowed == "`rnn`, `gru`, `lstm`"
    assert keys["model.bidirectional"].default == "true"
    assert keys["data.dev"].default == '""'
    assert "needs `model.tie_embeddings`" in keys["model.tie_source_embedding"].allowed
    assert keys["data.train[i].weight"].kind == "float"
    assert "| `train.max_steps` | int | `0` |" in reference()


# --- README commands ------------------------------------------------------------------------


@dataclass
class Line:
    """One command line of a README bash block (continuation lines joined)."""

    number: int  # of its first line in README.md
    text: str
    commands: list[list[str]]  # the words of each simple command
    read: list[str]  # files redirected from (<)
    written: list[str]  # files redirected to (>)

    def __str__(self) -> str:
        return f"README.md line {self.number}: {self.text.strip()}"


def split_line(number: int, text: str) -> Line:
    """The simple commands of a shell line, and its redirections."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    tokens = list(lexer)
    line, words, skip = Line(number, text, [], [], []), [], False
    for i, token in enumerate(tokens):
        if skip:
            skip = False
        elif token in SEPARATORS:
            line.commands.append(words)
            words = []
        elif token in REDIRECTS:
            target = tokens[i + 1] if i + 1 < len(tokens) else ""
            if not target.isdigit():
                (line.read if token == "<" else line.written).append(target)
            skip = True
        elif not (token.isdigit() and i + 1 < len(tokens) and tokens[i + 1] in REDIRECTS):
            words.append(token)
    line.commands = [c for c in [*line.commands, words] if c]
    return line


def readme_lines(text: str) -> list[Line]:
    """Every command line in the ```bash and ```sh blocks of a markdown text."""
    found, in_block, pending, start = [], False, "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        fence = raw.strip()
        if fence.startswith("```"):
            in_block = not in_block and fence[3:].strip() in ("bash", "sh")
            continue
        if not in_block:
            continue
        if not pending:
            start = number
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        pending += raw
        if pending.strip() and not pending.strip().startswith("#"):
            found.append(split_line(start, pending))
        pending = ""
    return found


def without_assignments(words: list[str]) -> list[str]:
    """The words after any leading VAR=value."""
    i = 0
    while i < len(words) and re.fullmatch(r"[A-Za-z_]\w*=.*", words[i]):
        i += 1
    return words[i:]


def translate_argv(words: list[str]) -> list[str] | None:
    """The arguments of a `translate ...`, `python -m translate ...` or `torchrun ... -m
    translate ...` command; None for other commands."""
    words = without_assignments(words)
    if words[:1] == ["translate"]:
        return words[1:]
    for i in range(len(words) - 1):
        if words[i] == "-m" and words[i + 1] == "translate":
            return words[i + 2 :]
    return None


def recipe_script(words: list[str]) -> tuple[str, list[str]] | None:
    """(script, arguments) of `bash recipes/...`; None for other commands."""
    words = without_assignments(words)
    if words[:1] in (["bash"], ["sh"]) and len(words) > 1 and "recipes/" in words[1]:
        return words[1].removeprefix("./"), words[2:]
    if words and words[0].removeprefix("./").startswith("recipes/"):
        return words[0].removeprefix("./"), words[1:]
    return None


def is_setup(words: list[str]) -> bool:
    """Making and entering the virtual environment and installing into it."""
    words = without_assignments(words)
    python = bool(words) and re.fullmatch(r"python[\d.]*", words[0]) is not None
    return (bool(words) and words[0] in (".", "source", "pip", "pip3")) or (
        python and words[1:3] in (["-m", "venv"], ["-m", "pip"])
    )


def is_placeholder(path: str) -> bool:
    """DIR, MODEL_DIR/test.de, $OUT/x: a name the reader fills in, not a file."""
    return "$" in path or any(re.fullmatch(r"[A-Z][A-Z0-9_]*", part) for part in path.split("/"))


def in_repository(path: str) -> bool:
    """Whether a clone holds ``path`` (not only this working tree's ignored files)."""
    parts = Path(path).parts
    if any(fnmatch.fnmatch(part, pattern) for part in parts for pattern in NOT_IN_A_CLONE):
        return False
    return (ROOT / path).exists()


def parse_translate(argv: list[str]) -> tuple[argparse.Namespace | None, str]:
    """The namespace of `translate ARGV` (None for --help and the like), or the parser's
    complaint."""
    said = io.StringIO()
    try:
        with redirect_stderr(said), redirect_stdout(io.StringIO()):
            return build_parser().parse_args(argv), ""
    except SystemExit as exit:
        lines = said.getvalue().strip().splitlines()
        return None, (lines[-1] if lines else f"exit status {exit.code}") if exit.code else ""


def config_problem(config: str | None, overrides: list[str]) -> str:
    """What the config loader says about a config file with these overrides ("" if nothing);
    an override whose value is a placeholder is checked for its key alone."""
    keys = {key.name for section in sections() for key in section.keys}
    real = []
    for item in overrides:
        key, _, value = item.partition("=")
        if is_placeholder(value) and key in keys:
            continue
        if key == "train.init_from":  # the loader reads the parent, made by an earlier line:
            continue  # the run of the quick lines checks that it exists and fits
        real.append(item)
    if config is not None and (is_placeholder(config) or not in_repository(config)):
        config = None  # a missing file is reported by the file check
    try:
        load_config(config, real)
    except ConfigError as err:
        return str(err)
    return ""


def made_by(line: Line) -> list[str]:
    """The files and folders a line writes (a trailing * stands for any ending)."""
    made = list(line.written)
    for words in line.commands:
        argv, recipe = translate_argv(words), recipe_script(words)
        if argv is not None:
            args, _ = parse_translate(argv)
            made += [v for d in OUTPUTS if isinstance(v := getattr(args, d, None), str)]
            if args is not None and args.command in ("train", "prepare"):
                given = [o.split("=", 1)[1] for o in args.overrides if o.startswith("out_dir=")]
                config = ROOT / args.config
                values = yaml.safe_load(config.read_text()) if config.is_file() else {}
                made.append((given or [(values or {}).get("out_dir", "experiments/default")])[-1])
        elif recipe is not None:
            script, args = recipe
            outs = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--out"]
            made += outs or [f"experiments/{Path(script).parent.name}*"]
    return made


def is_made(path: str, made: list[str]) -> bool:
    """Whether ``path`` is, or is inside, one of the outputs ``made`` (see :func:`made_by`)."""
    for out in made:
        if out.endswith("*") and path.startswith(out[:-1]):
            return True
        if path == out or path.startswith(out.rstrip("/") + "/"):
            return True
    return False


def inputs_of(line: Line) -> list[str]:
    """The files a line reads: those its `translate` commands name as inputs, and redirections."""
    paths = list(line.read)
    for words in line.commands:
        argv = translate_argv(words)
        args = parse_translate(argv)[0] if argv is not None else None
        for dest in INPUTS:
            value = getattr(args, dest, None)
            paths += [value] if isinstance(value, str) else list(value or [])
        recipe = recipe_script(words)
        if recipe is not None:
            script, given = recipe
            paths.append(script)
            paths += [
                given[i + 1] for i, a in enumerate(given[:-1]) if a in ("--config", "--data-dir")
            ]
    return [p for p in paths if p != "-"]


def line_problems(lines: list[Line], index: int, sandbox: Path) -> list[str]:
    """What is wrong with README line ``lines[index]``, each quoting the line: a `translate`
    command the parser or the config loader refuses, a recipe flag the script does not know,
    a file that neither the repository nor a line above holds, a path outside the repository."""
    line, problems = lines[index], []
    made = [out for earlier in lines[:index] for out in made_by(earlier)]
    for words in line.commands:
        argv, recipe = translate_argv(words), recipe_script(words)
        if argv is not None:
            args, complaint = parse_translate(argv)
            if complaint:
                problems.append(f"translate {shlex.join(argv)}: {complaint}")
            elif args is not None and args.command in ("train", "prepare"):
                problems.append(config_problem(args.config, args.overrides))
        problems += [f"{w} is outside the repository" for w in words if w.startswith("../")]
        if recipe is not None:
            problems += recipe_problems(*recipe, sandbox)
    for path in inputs_of(line):
        if not (
            path.startswith("../")
            or is_placeholder(path)
            or in_repository(path)
            or is_made(path, made)
        ):
            problems.append(
                f"names {path}, which the repository does not hold and no line above makes"
            )
    return [f"{line}\n  {problem}" for problem in problems if problem]


def recipe_problems(script: str, args: list[str], sandbox: Path) -> list[str]:
    """A recipe's script answers --help and knows each flag given; its overrides fit its
    config. (The quick recipe is run instead, by test_the_quick_readme_commands_run.)"""
    if script in QUICK_RECIPES or not in_repository(script):  # a missing one: see inputs_of
        return []
    shown = subprocess.run(
        ["bash", script, "--help"],
        cwd=sandbox / "repo",
        env=sandbox_env(sandbox),
        capture_output=True,
        text=True,
        timeout=60,
    )
    usage = shown.stdout + shown.stderr
    if shown.returncode != 0 or "usage" not in usage.lower():
        return [f"bash {script} --help: status {shown.returncode}, {usage.strip()[-300:]!r}"]
    problems = [
        f"{flag} is not among the options of bash {script} --help"
        for flag in args
        if flag.startswith("-") and not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", usage)
    ]
    given = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--config"]
    config = given[-1] if given else str(Path(script).parent / "config.yaml")
    overrides = [a for a in args if "=" in a and not a.startswith("-")]
    return [*problems, config_problem(config, overrides)]


LINES = readme_lines(README.read_text(encoding="utf-8")) if README.is_file() else []


def test_the_readme_shows_translate_commands_and_a_recipe():
    assert any(any(translate_argv(w) for w in line.commands) for line in LINES), LINES
    assert any(any(recipe_script(w) for w in line.commands) for line in LINES), LINES


@pytest.mark.parametrize("index", range(len(LINES)), ids=[f"README.md:{x.number}" for x in LINES])
def test_readme_command_parses_and_names_files_that_exist(index, sandbox):
    problems = line_problems(LINES, index, sandbox)
    assert not problems, "\n".join(problems)


def test_a_readme_command_that_does_not_parse_fails_with_its_line_quoted(sandbox):
    lines = readme_lines(
        "```bash\n"
        "bash recipes/toy/run.sh\n"
        "echo hi | translate translate -m experiments/toy --beem 5\n"
        "translate train recipes/toy/config.yaml train.max_step=3 data.train=DIR/train\n"
        "translate train CONFIG train.max_steps=N data.train=DIR/train\n"
        "translate score -r data/toy/test.en experiments/toy/hyp.en experiments/other.en\n"
        "bash recipes/multi30k/run.sh --data-dir ../data --epochs 3 train.lr=-1\n"
        "```\n"
    )
    assert [line_problems(lines, i, sandbox) for i in range(4)] == [
        [],
        [
            "README.md line 3: echo hi | translate translate -m experiments/toy --beem 5\n"
            "  translate translate -m experiments/toy --beem 5: "
            "translate: error: unrecognized arguments: --beem 5"
        ],
        [
            "README.md line 4: translate train recipes/toy/config.yaml train.max_step=3 "
            "data.train=DIR/train\n  unknown config key 'train.max_step'. Did you mean "
            "'train.max_steps'? Valid keys: " + ", ".join(f.name for f in fields(TrainConfig))
        ],
        [],  # placeholders
    ]
    (named,) = line_problems(lines, 4, sandbox)
    assert named.endswith(
        "  names experiments/other.en, which the repository does not hold and no line above makes"
    )
    assert [p.split("\n  ")[1] for p in line_problems(lines, 5, sandbox)] == [
        "../data is outside the repository",
        "--epochs is not among the options of bash recipes/multi30k/run.sh --help",
        "'train.lr' must be > 0, got -1.0",
    ]


# --- running the quick ones ---------------------------------------------------------------


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> Path:
    """A copy of the repository as a clone has it (repo/) but with data/toy cut short, and
    stand-ins (bin/): `translate` appends TINY to train and prepare; pip and `python -m venv`
    do nothing."""
    folder = tmp_path_factory.mktemp("readme")
    shutil.copytree(ROOT, folder / "repo", ignore=shutil.ignore_patterns(*NOT_IN_A_CLONE))
    shims = folder / "bin"
    shims.mkdir()
    python = shlex.quote(sys.executable)
    tiny = " ".join(TINY)
    scripts = {
        "translate": f'case "$1" in train|prepare) set -- "$@" {tiny} ;; esac\n'
        f'exec {python} -m translate "$@"',
        "python": f'case "$1 $2" in "-m venv"|"-m pip") exit 0 ;; esac\nexec {python} "$@"',
        "pip": "exit 0",
    }
    scripts.update(python3=scripts["python"], pip3="exit 0")
    for name, body in scripts.items():
        (shims / name).write_text(f"#!/usr/bin/env bash\n{body}\n")
        (shims / name).chmod(0o755)
    for path in (folder / "repo" / "data" / "toy").iterdir():
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        path.write_text("".join(lines[: TOY_LINES[path.stem]]), encoding="utf-8")
    activate = folder / "repo" / ".venv" / "bin" / "activate"
    activate.parent.mkdir(parents=True)
    activate.write_text("# the test's environment is already active\n")
    return folder


def sandbox_env(sandbox: Path) -> dict:
    env = {**os.environ, "PATH": f"{sandbox / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    for name in ("MULTI30K_DIR", "TATOEBA_DIR", "VIRTUAL_ENV"):
        env.pop(name, None)
    return env


def is_quick(words: list[str]) -> bool:
    argv, recipe = translate_argv(words), recipe_script(words)
    if argv is not None:
        command = argv[0] if argv else ""
        toy = command in ("train", "prepare") and argv[1:2] == [TOY_CONFIG]
        return command in QUICK_SUBCOMMANDS or toy or command.startswith("-")
    if recipe is not None:
        return recipe[0] in QUICK_RECIPES
    words = without_assignments(words)
    return words[:3] == ["python", "-m", "translate.cli.reference"] or words[:1] in [
        [tool] for tool in TEXT_TOOLS
    ]


def runs(line: Line, repo: Path) -> bool:
    """Whether the test runs a line: all its commands quick, a `translate` or recipe among
    them, and every file it reads there already (made by a line above, or in the repository)."""
    commands = [words for words in line.commands if not is_setup(words)]
    ours = any(translate_argv(w) is not None or recipe_script(w) for w in commands)
    if not ours or not all(is_quick(words) for words in commands):
        return False
    return all(not is_placeholder(p) and (repo / p).exists() for p in inputs_of(line))


def test_the_quick_readme_commands_run(sandbox):
    ran = []
    for line in LINES:
        if not runs(line, sandbox / "repo"):
            continue
        done = subprocess.run(
            ["bash", "-o", "pipefail", "-c", line.text],
            cwd=sandbox / "repo",
            env=sandbox_env(sandbox),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, (
            f"{line}\n  failed with status {done.returncode}:\n{(done.stdout + done.stderr)[-2000:]}"
        )
        ran.append(line)
    trains = [line for line in ran if any(is_made(p, made_by(line)) for p in ["experiments/toy"])]
    assert trains, "no README line trained the quick-start model; ran: " + "; ".join(map(str, ran))
    assert len(ran) >= 2, "only the training ran: " + "; ".join(map(str, ran))


def test_the_readme_parser_sees_pipelines_redirections_and_placeholders():
    line = split_line(
        7,
        'A=1 echo "Ein Hund." | translate translate -m experiments/toy > out.txt 2>&1 && '
        "python -m translate score -r data/toy/test.en out.txt < in.txt # a comment",
    )
    assert line.commands == [
        ["A=1", "echo", "Ein Hund."],
        ["translate", "translate", "-m", "experiments/toy"],
        ["python", "-m", "translate", "score", "-r", "data/toy/test.en", "out.txt"],
    ]
    assert (line.read, line.written) == (["in.txt"], ["out.txt"])
    assert inputs_of(line) == ["in.txt", "experiments/toy", "data/toy/test.en", "out.txt"]
    assert is_placeholder("DIR/test.de") and is_placeholder("$out/x")
    assert not is_placeholder("data/toy/test.de")
    text = (
        "```bash\nbash recipes/multi30k/run.sh --out \\\n  experiments/m DIR\n```\n```text\nx\n```"
    )
    (found,) = readme_lines(text)
    assert (found.number, found.commands) == (
        2,
        [["bash", "recipes/multi30k/run.sh", "--out", "experiments/m", "DIR"]],
    )
    assert made_by(found) == ["experiments/m"]


def test_ci_runs_the_readme_test_command_with_chromium_required():
    tests = [line.text.strip() for line in LINES if "pytest" in line.text]
    assert tests, "README.md shows no test command"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert tests[0] in ci, f"{ROOT / '.ci/run'} does not run the README's {tests[0]!r}"
    assert "export TRANSLATE_CI=1" in ci[: ci.index(tests[0])]

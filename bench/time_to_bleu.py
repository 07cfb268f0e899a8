"""Time to quality: training wall time until a checkpoint reaches a dev BLEU (beam 5), ours
against OpenNMT-py, on the same machine, the same corpus and, with ``--spm``, the same pieces.

Both sides read the train and dev splits of ``--corpus`` (Multi30k: train, val; Tatoeba:
train, valid) in ``--data-dir``. OpenNMT-py trains each set-up named by ``--setup``
(bench/peer_setups.py's SETUPS; default: the sweep's winner, then ``bench``; a row is
``opennmt`` for ``bench``, else ``opennmt-NAME``) for ``--minutes`` of its training loop and
keeps a checkpoint every ``--opennmt-save-every`` steps. Ours trains ``--config`` (default:
the corpus's attention recipe) with the ``key=value`` overrides and keeps its weights every
``--valid-every`` steps (dev loss only, no dev BLEU, during training). ``--spm FILE`` (e.g.
our experiment's ``spm.model``) gives both the same SentencePiece model; without it the peer
trains an 8k one and ours its config's. Each clock is the toolkit's own training loop:
start-up before it is not counted, and checkpoint saving and our dev-loss passes are.
Afterwards each checkpoint (with ``--score-every N`` only every N-th and the last), oldest
first, translates the dev split with beam 5 (length penalty 1.0) and is scored with cased
sacreBLEU, until one reaches ``--target`` (``--all``: every one). The table lists every scored
checkpoint, then when each system first reached the target, or the best it reached (a
fixed-budget comparison: the same ``--minutes`` and ``train.max_minutes``, with ``--all``).

A system's checkpoints and scores are kept in ``DIR/SYSTEM.json``: a later run with the same
``--workdir`` does not train it again and scores only checkpoints not yet scored; it refuses
a file made with other settings. When an OpenNMT-py row falls short of the target,
``--opennmt-more-minutes`` trains it on from its last checkpoint (optimiser state included;
its data order starts over), once.

``--sweep`` trains OpenNMT-py for ``--minutes`` with each set-up of ``--setup`` (default:
peer_setups.SWEEP, one change each from ``bench``: batch size in sentences or tokens, learning
rate, dropout, label smoothing) and prints the dev BLEU of each one's last checkpoint, best
first: the sweep at equal wall-clock whose winner the time-to-quality rows then use.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import cache, partial
from pathlib import Path

import sacrebleu

from . import ROOT, opennmt
from .peer_data import CORPORA, Corpus, PeerData, file_digest, prepare_data, read_corpus_lines
from .peer_setups import SETUPS, SWEEP, TIME_TO_QUALITY, PeerSetup, changes, shared_vocab_size

BEAM = 5
LENGTH_PENALTY = 1.0
DEFAULT_CONFIGS = {
    "multi30k": ROOT / "recipes/multi30k/attention.yaml",
    "tatoeba": ROOT / "recipes/tatoeba/config.yaml",
}
DATA_KEYS = ("data.train", "data.dev", "out_dir")  # set from --data-dir, --corpus, --workdir


@dataclass
class System:
    """One system of the table: its name, the settings its results depend on, how it trains
    (its checkpoints ``{"step", "seconds", "path"}``, oldest first) and how a checkpoint
    scores (dev BLEU and sacreBLEU's signature); ``more`` trains on from a checkpoint."""

    name: str
    recipe: dict
    train: Callable[[], list[dict]]
    score: Callable[[dict], tuple[float, str]]
    more: Callable[[dict], list[dict]] | None = None


def first_reaching(points: list[dict], target: float) -> dict | None:
    """The earliest checkpoint whose dev BLEU is at least ``target``."""
    return next((p for p in points if p["bleu"] >= target), None)


def best_point(points: list[dict]) -> dict | None:
    """The checkpoint with the highest dev BLEU (the earliest of equals): what a system reached
    when it did not reach the target."""
    return max(points, key=lambda p: p["bleu"], default=None)


def every_nth(checkpoints: list[dict], n: int) -> list[dict]:
    """Every ``n``-th checkpoint and the last one: fewer to score over a long run."""
    last = len(checkpoints) - 1
    return [c for i, c in enumerate(checkpoints) if (i + 1) % n == 0 or i == last]


def last_only(checkpoints: list[dict]) -> list[dict]:
    """The last checkpoint: a sweep compares where each set-up got in the same time."""
    return checkpoints[-1:]


def comparable(recipe: dict) -> dict:
    """``recipe`` as it reads back from JSON (tuples as lists), for comparing with a saved one."""
    return json.loads(json.dumps(recipe))


def save(path: Path, result: dict) -> None:
    """Write a system's results, so an interrupted run loses no training or scoring."""
    path.write_text(json.dumps(result, indent=1))


def curve(
    system: System,
    workdir: Path,
    chosen: Callable[[list[dict]], list[dict]],
    target: float,
    score_all: bool = False,
) -> dict:
    """Train ``system`` unless ``workdir/NAME.json`` says it was, then score the ``chosen`` of
    its checkpoints up to the first at ``target`` (``score_all``: all of them); once more,
    after training on, when none reached it."""
    path = workdir / f"{system.name}.json"
    recipe = comparable(system.recipe)
    if path.is_file():
        result = json.loads(path.read_text())
        if result.get("recipe") != recipe:
            raise SystemExit(
                f"{path} was made with other settings than {recipe}: delete it or use another"
                " --workdir"
            )
    else:
        result = {"recipe": recipe, "checkpoints": system.train(), "points": [], "signature": ""}
        save(path, result)
    score = partial(score_checkpoints, system, result, target=target, all_=score_all, path=path)
    score(chosen(result["checkpoints"]))
    if system.more and not result.get("continued") and not first_reaching(result["points"], target):
        result["checkpoints"] += system.more(result["checkpoints"][-1])
        result["continued"] = True
        save(path, result)
        score(chosen(result["checkpoints"]))
    return result


def score_checkpoints(
    system: System, result: dict, checkpoints: list[dict], *, target: float, all_: bool, path: Path
) -> None:
    """Score ``checkpoints`` in order, those not scored before, into ``result["points"]``
    (saved to ``path`` after each), until one reaches ``target`` unless ``all_``."""
    scored = {point["step"]: point for point in result["points"]}
    for checkpoint in checkpoints:
        point = scored.get(checkpoint["step"])
        if point is None:
            bleu, result["signature"] = system.score(checkpoint)
            point = {"step": checkpoint["step"], "seconds": checkpoint["seconds"], "bleu": bleu}
            result["points"] = sorted([*result["points"], point], key=lambda p: p["step"])
            save(path, result)
            print(
                f"{system.name}: step {point['step']} at {point['seconds']:.0f} s:"
                f" dev BLEU {bleu:.2f}",
                flush=True,
            )
        if point["bleu"] >= target and not all_:
            return


# --- OpenNMT-py -----------------------------------------------------------------------------


def opennmt_name(setup: str, sweep: bool = False) -> str:
    """The row and folder of an OpenNMT-py set-up: ``opennmt`` for the bench's (where
    bench.py's ``--opennmt-trained`` looks), ``opennmt-NAME`` or, in a sweep, ``sweep-NAME``."""
    if sweep:
        return f"sweep-{setup}"
    return "opennmt" if setup == "bench" else f"opennmt-{setup}"


def opennmt_checkpoints(trained: dict, offset: float = 0.0) -> list[dict]:
    """The checkpoints of a :func:`bench.opennmt.train_opennmt` result, their clock started at
    ``offset`` seconds (a run that went on from an earlier one)."""
    return [
        {"step": int(Path(path).stem.rsplit("_", 1)[1]), "seconds": offset + seconds, "path": path}
        for path, seconds in trained["checkpoints"]
    ]


def opennmt_system(
    args: argparse.Namespace,
    workdir: Path,
    data: Callable[[], PeerData],
    setup_name: str,
    sweep: bool,
) -> System:
    """OpenNMT-py with the set-up ``setup_name``, trained for ``--minutes`` on the pieces
    ``data()`` prepares (called only when they are needed, so after :func:`curve` has checked
    the saved results); outside a sweep it keeps every checkpoint and can train on for
    ``--opennmt-more-minutes``."""
    setup = SETUPS[setup_name]
    name = opennmt_name(setup_name, sweep)

    def train(folder: Path, minutes: float, train_from: Path | None = None) -> dict:
        return opennmt.train_opennmt(
            folder,
            data(),
            minutes,
            threads=args.threads,
            setup=setup,
            save_every=args.opennmt_save_every,
            keep_all=not sweep,
            train_from=train_from,
        )

    def first() -> list[dict]:
        return opennmt_checkpoints(train(workdir / name, args.minutes))

    def more(last: dict) -> list[dict]:
        folder = workdir / f"{name}-from-{last['step']}"
        trained = train(folder, args.opennmt_more_minutes, train_from=Path(last["path"]))
        return opennmt_checkpoints(trained, offset=last["seconds"])

    def score(checkpoint: dict) -> tuple[float, str]:
        row = opennmt.translate_opennmt(
            Path(checkpoint["path"]),
            data().val.with_suffix(".de"),
            BEAM,
            args.threads,
            ref_file=data().val_ref,
            setup=setup,
        )
        return row["bleu"], row["signature"]

    recipe = {
        "system": "OpenNMT-py",
        "setup": asdict(setup),
        "minutes": args.minutes,
        "save_every": args.opennmt_save_every,
        **run_recipe(args),
    }
    go_on = args.opennmt_more_minutes and not sweep
    return System(name, recipe, first, score, more if go_on else None)


# --- ours -----------------------------------------------------------------------------------


def ours_name(config: Path, corpus: str, overrides: list[str]) -> str:
    """Our run's folder and results name: ``ours``, then the config when it is not the
    corpus's default (``multi30k-config`` for recipes/multi30k/config.yaml) and the
    overrides."""
    parts = ["ours"]
    if config.resolve() != DEFAULT_CONFIGS[corpus].resolve():
        parts.append(f"{config.parent.name}-{config.stem}")
    return "_".join([*parts, *overrides]).replace("/", "-")


def ours_command(
    config: Path,
    out: Path,
    data_dir: Path,
    corpus: Corpus,
    valid_every: int,
    threads: int,
    overrides: list[str],
) -> list[str]:
    """``translate train`` on ``corpus``'s train and dev splits in ``data_dir``, keeping its
    weights every ``valid_every`` steps; overrides may not move the data or the output."""
    for override in overrides:
        if override.split("=", 1)[0] in DATA_KEYS:
            raise ValueError(f"{override}: set by --data-dir, --corpus and --workdir")
    command = [sys.executable, "-m", "translate", "train", str(config), f"out_dir={out}"]
    command += [f"data.train={data_dir}/{corpus.train}", f"data.dev={data_dir}/{corpus.dev}"]
    command += [f"train.valid_every={valid_every}", "train.valid_bleu_sentences=0"]
    command += ["train.keep_checkpoints=1000000", f"train.threads={threads}"]
    return command + overrides


def ours_checkpoints(out: Path) -> list[dict]:
    """The weights our run kept, oldest first, each with the training-loop seconds that its
    dev-loss line in ``metrics.jsonl`` logged."""
    seconds = {}
    for line in (out / "metrics.jsonl").read_text().splitlines():
        entry = json.loads(line)
        if "dev_loss" in entry:
            seconds[entry["step"]] = entry["elapsed"]
    checkpoints = []
    for path in (out / "checkpoints").glob("step-*.safetensors"):
        step = int(path.stem.split("-")[1])
        checkpoints.append({"step": step, "seconds": seconds[step], "path": str(path)})
    return sorted(checkpoints, key=lambda c: c["step"])


def use_spm(spm_model: Path, out: Path, config: Path, overrides: list[str]) -> None:
    """Put ``spm_model`` where our training looks for its SentencePiece model, so it trains on
    those pieces instead of its own (a joint vocabulary only: one model for both sides)."""
    from translate.config import load_config

    if not load_config(config, overrides).data.joint_vocab:
        raise SystemExit("--spm gives one SentencePiece model: our config needs joint_vocab")
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(spm_model, out / "spm.model")


def ours_system(args: argparse.Namespace, workdir: Path) -> System:
    """Our recipe, trained once with every validation's weights kept, each scored in-process."""
    config = Path(args.config or DEFAULT_CONFIGS[args.corpus]).resolve()
    name = ours_name(config, args.corpus, args.overrides)
    out = workdir / name
    corpus = CORPORA[args.corpus]
    data_dir = Path(args.data_dir).resolve()
    command = ours_command(
        config, out, data_dir, corpus, args.valid_every, args.threads, args.overrides
    )

    def train() -> list[dict]:
        if args.spm:
            use_spm(Path(args.spm), out, config, args.overrides)
        print("ours: " + " ".join(command), flush=True)
        subprocess.run(command, check=True, cwd=ROOT)
        return ours_checkpoints(out)

    loaded: dict = {}

    def score(checkpoint: dict) -> tuple[float, str]:
        from translate.modeldir import load_weights
        from translate.runtime import set_threads
        from translate.translator import Translator

        if not loaded:
            set_threads(args.threads)
            loaded["translator"] = Translator.from_dir(out)
            loaded["sources"] = read_corpus_lines(data_dir, f"{corpus.dev}.de")
            loaded["refs"] = read_corpus_lines(data_dir, f"{corpus.dev}.en")
        translator = loaded["translator"]
        translator.model.load_state_dict(load_weights(Path(checkpoint["path"])))
        hyps = translator.translate(loaded["sources"], beam=BEAM, length_penalty=LENGTH_PENALTY)
        bleu = sacrebleu.BLEU()
        return bleu.corpus_score(hyps, [loaded["refs"]]).score, str(bleu.get_signature())

    recipe = {
        "system": "ours",
        "config": str(config),
        "overrides": args.overrides,
        "valid_every": args.valid_every,
        **run_recipe(args),
    }
    return System(name, recipe, train, score)


def run_recipe(args: argparse.Namespace) -> dict:
    """What every system's results depend on: the data, the pieces and the threads."""
    return {
        "data_dir": str(Path(args.data_dir).resolve()),
        "corpus": args.corpus,
        "spm": file_digest(Path(args.spm)) if args.spm else None,
        "threads": args.threads,
    }


# --- tables ---------------------------------------------------------------------------------


def print_table(results: dict[str, dict], target: float) -> None:
    """Each system's scored checkpoints, then when each first reached ``target`` (or the best
    it reached) and the ratios of our times to the others'."""
    width = max([8, *map(len, results)])
    print(f"\ndev BLEU, beam {BEAM}, by training-loop seconds")
    print(f"{'system':{width}s} {'step':>6} {'seconds':>8} {'BLEU':>6}")
    for name, result in results.items():
        for p in result["points"]:
            print(f"{name:{width}s} {p['step']:6d} {p['seconds']:8.0f} {p['bleu']:6.2f}")
    print(f"\nfirst checkpoint at or above {target} (else the best one):")
    for name, result in results.items():
        print(f"  {name:{width}s} {reached_text(result['points'], target)}")
    ours = [name for name in results if name.startswith("ours")]
    for mine in ours:
        reached = first_reaching(results[mine]["points"], target)
        for other in (name for name in results if name not in ours):
            if reached and (line := ratio_text(reached, results[other]["points"], target)):
                print(f"time to {target}: {mine} / {other} {line}")
    for signature in sorted({r["signature"] for r in results.values() if r["signature"]}):
        print(f"BLEU: {signature}")


def reached_text(points: list[dict], target: float) -> str:
    """``N s (step S, BLEU B)`` for the first checkpoint at ``target``, else the best one."""
    point = first_reaching(points, target)
    if point:
        return f"{point['seconds']:.0f} s (step {point['step']}, BLEU {point['bleu']:.2f})"
    best = best_point(points)
    if best is None:
        return "no checkpoint scored"
    return f"not reached; best {best['bleu']:.2f} at {best['seconds']:.0f} s (step {best['step']})"


def ratio_text(ours: dict, other: list[dict], target: float) -> str | None:
    """Our time to ``target`` over the other system's: ``= R``, or ``< R`` when the other got
    there, if at all, after its last scored checkpoint; None when it has none."""
    reached = first_reaching(other, target)
    if reached:
        return f"= {ours['seconds'] / reached['seconds']:.2f}"
    if other:
        return f"< {ours['seconds'] / other[-1]['seconds']:.2f}"
    return None


def print_sweep(results: dict[str, dict], setups: dict[str, PeerSetup]) -> None:
    """The sweep's rows, best dev BLEU first: each set-up's last checkpoint and how the set-up
    differs from the bench's."""
    width = max([8, *map(len, results)])
    rows = sorted(results.items(), key=lambda item: -item[1]["points"][-1]["bleu"])
    print(f"\nOpenNMT-py sweep: dev BLEU (beam {BEAM}) of the last checkpoint, best first")
    print(f"{'system':{width}s} {'step':>6} {'seconds':>8} {'BLEU':>6}  changes from bench")
    for name, result in rows:
        p = result["points"][-1]
        line = f"{name:{width}s} {p['step']:6d} {p['seconds']:8.0f} {p['bleu']:6.2f}"
        print(f"{line}  {changes(setups[name])}")
    for signature in sorted({r["signature"] for r in results.values() if r["signature"]}):
        print(f"BLEU: {signature}")


# --- command line ---------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.time_to_bleu",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data-dir", required=True, help="folder with the corpus's .gz files")
    parser.add_argument("--corpus", choices=list(CORPORA), default="multi30k")
    parser.add_argument("--workdir", help="models, logs and results (default: a new temp dir)")
    parser.add_argument("--target", type=float, default=38.0, help="dev BLEU to reach")
    parser.add_argument("--minutes", type=float, default=20.0, help="OpenNMT-py's training time")
    parser.add_argument(
        "--setup",
        help="OpenNMT-py set-ups from bench/peer_setups.py's SETUPS, comma-separated, one row"
        " each (default: TIME_TO_QUALITY, the sweep's winner and bench; with --sweep: SWEEP)",
    )
    parser.add_argument(
        "--spm", help="a joint SentencePiece model both sides use (default: each trains its own)"
    )
    parser.add_argument("--opennmt-save-every", type=int, default=40, help="its checkpoint steps")
    parser.add_argument(
        "--opennmt-more-minutes",
        type=float,
        help="when an OpenNMT-py row falls short of --target, train it on from its last"
        " checkpoint for this long",
    )
    parser.add_argument(
        "--config", help="our training config (default: the corpus's attention recipe)"
    )
    parser.add_argument("--valid-every", type=int, default=50, help="our checkpoint steps")
    parser.add_argument("--systems", default="opennmt,ours", help="which to run, in order")
    parser.add_argument("--all", action="store_true", help="score past the target too")
    parser.add_argument(
        "--score-every", type=int, default=1, help="score every N-th checkpoint (and the last)"
    )
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="only OpenNMT-py, each set-up for --minutes, its last checkpoint scored",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("overrides", nargs="*", help="our config overrides, key=value")
    args = parser.parse_args(argv)
    args.setups = (
        args.setup.split(",") if args.setup else (SWEEP if args.sweep else TIME_TO_QUALITY)
    )
    unknown = [name for name in args.setups if name not in SETUPS]
    if unknown:
        parser.error(f"unknown set-up {', '.join(unknown)}; known: {', '.join(SETUPS)}")
    args.systems = ["opennmt"] if args.sweep else args.systems.split(",")
    if not set(args.systems) <= {"opennmt", "ours"}:
        parser.error("--systems takes opennmt and ours")
    if args.score_every < 1:
        parser.error("--score-every must be at least 1")
    return args


def main() -> None:
    args = parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="time-to-bleu-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"work directory: {workdir}", flush=True)
    data = cache(
        partial(
            prepare_data,
            Path(args.data_dir),
            workdir,
            threads=args.threads,
            corpus=CORPORA[args.corpus],
            spm_model=Path(args.spm) if args.spm else None,
            vocab_size=shared_vocab_size([SETUPS[s] for s in args.setups]),
        )
    )
    systems = []
    for kind in args.systems:
        if kind == "ours":
            systems.append(ours_system(args, workdir))
        else:
            systems += [opennmt_system(args, workdir, data, s, args.sweep) for s in args.setups]
    chosen = last_only if args.sweep else partial(every_nth, n=args.score_every)
    results = {s.name: curve(s, workdir, chosen, args.target, args.all) for s in systems}
    if args.sweep:
        names = {opennmt_name(s, sweep=True): SETUPS[s] for s in args.setups}
        print_sweep(results, names)
    else:
        print_table(results, args.target)


if __name__ == "__main__":
    main()

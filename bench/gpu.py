"""Training speed on one GPU of the Multi30k attention recipe's model in bf16 against OpenNMT-py
3.0.4 at the same sizes and batch (peer_setups' ``recipe``), and the minutes of training until
a checkpoint of ours reaches 41 BLEU on test_2016_flickr (beam 5, cased sacreBLEU). Targets: at
least 3x OpenNMT-py's training target tokens/s, 41 BLEU in at most 3 minutes.

Tokens/s: each toolkit's logged windows, the first and those holding a save left out (see
:func:`window_rates`). Minutes: our training loop's clock at the first checkpoint at the target
(see :func:`first_at_target`). Stages run in turn (ours trains, OpenNMT-py trains, ours scored,
OpenNMT-py scored), each stopped early when it would eat the next ones' share of ``--deadline``;
one that fails becomes a row with its error, and gpu.json is rewritten after each.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

from . import ROOT, opennmt
from .peer_data import prepare_data, read_corpus_lines
from .peer_runs import DEFAULT_CACHE, PeerError
from .peer_setups import SETUPS, PeerSetup

RECIPE = ROOT / "recipes/multi30k/attention.yaml"
DATA_DIRS = [ROOT / ".data/multi30k", ROOT.parent / "shared/data/multi30k"]
TEST = "test_2016_flickr"
BEAM = 5
LENGTH_PENALTY = 1.0
TARGET_RATIO = 3.0
TARGET_MINUTES = 3.0
OPENNMT_DECODE_RESERVE_S = 45  # OpenNMT-py scores its checkpoint only with this much left
STARTUP_S = 150  # a training process's allowance for start-up, beyond its training minutes
SCORING_S = 45  # what the trainings leave our scoring before the deadline, at least
# OpenNMT-py's report line: "Step 60/1000000000; acc: ...; 41234/ 40321 tok/s; 12 sec;"
OPENNMT_WINDOW = re.compile(r"Step (\d+)/\s*\d+;.*?\d+/\s*(\d+) tok/s")
OPENNMT_SAVED = re.compile(r"Saving checkpoint \S+_step_(\d+)\.pt")


class OutOfTime(Exception):
    """The call's deadline came before a stage finished."""


def say(message: str) -> None:
    print(f"[gpu {time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- throughput -----------------------------------------------------------------------------


def window_rates(windows: list[tuple[int, float]], saves: list[int]) -> dict:
    """Target tokens/s from per-window rates ``(last step, rate)``, oldest first: the first
    window (start-up) dropped unless it is the only one, the rest combined as tokens / time
    (their harmonic mean: token batches give the windows nearly equal tokens).
    ``tgt_tok_s`` also leaves out each window that holds a save made after step S (both
    toolkits log a window before saving, so that is the first window ending after S), unless
    none is left; ``tgt_tok_s_all`` keeps them."""
    ends = [step for step, _ in windows]
    holding = {
        min(end for end in ends if end > save) for save in saves if save < max(ends, default=0)
    }
    later = [(step, rate) for step, rate in (windows[1:] or windows) if rate > 0]
    clean = [(step, rate) for step, rate in later if step not in holding]

    def combined(rows: list[tuple[int, float]]) -> float | None:
        return len(rows) / sum(1 / rate for _, rate in rows) if rows else None

    return {
        "tgt_tok_s": combined(clean) or combined(later),
        "tgt_tok_s_all": combined(later),
        "windows": len(later),
        "windows_without_saves": len(clean),
    }


def ours_rates(metrics: Path) -> dict:
    """:func:`window_rates` of our metrics.jsonl: log windows, validations as the saves."""
    entries = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    windows = [(e["step"], float(e["tgt_tok_s"])) for e in entries if "tgt_tok_s" in e]
    saves = [e["step"] for e in entries if "dev_loss" in e]
    last = max((e.get("elapsed", 0.0) for e in entries), default=0.0)
    steps = max((e["step"] for e in entries if "step" in e), default=0)
    return {**window_rates(windows, saves), "steps": steps, "train_s": last}


def opennmt_rates(log: str) -> dict:
    """:func:`window_rates` of an OpenNMT-py training log: report windows, checkpoint saves."""
    windows = [(int(step), float(rate)) for step, rate in OPENNMT_WINDOW.findall(log)]
    saves = [int(step) for step in OPENNMT_SAVED.findall(log)]
    return {**window_rates(windows, saves), "steps": max((s for s, _ in windows), default=0)}


# --- finding the first checkpoint at the target ---------------------------------------------


def first_at_target(
    count: int, every: int, score: Callable[[int], float], target: float, margin: float = 1.0
) -> int | None:
    """Index of the first of ``count`` checkpoints whose ``score`` reaches ``target``, or None.
    Every ``every``-th is scored backwards from the last, until a miss below a hit or a miss
    more than ``margin`` under the target; then, in order, the ones skipped since that miss: up
    to the earliest hit, or to the end when there was none but a near miss (a hit may lie
    between near misses). Early checkpoints, far from the target and slow to decode (their
    outputs run to the length limit), are not scored; a hit before a far miss would be missed,
    which BLEU rising with training makes rare."""
    hit = near = None
    for index in range(count - 1, -1, -every):
        bleu = score(index)
        if bleu >= target:
            hit = index
        elif hit is not None or bleu < target - margin:
            break
        else:
            near = index
    lowest = hit if hit is not None else near
    if lowest is None:
        return None
    skipped = range(max(lowest - every + 1, 0), count if hit is None else hit)
    return next((j for j in skipped if score(j) >= target), hit)


# --- ours -----------------------------------------------------------------------------------


def ours_command(args: argparse.Namespace, out: Path, data_dir: Path) -> list[str]:
    """``translate train`` on the attention recipe with the bench's settings and overrides."""
    command = [sys.executable, "-m", "translate", "train", str(RECIPE), f"out_dir={out}"]
    command += [f"data.train={data_dir}/train", f"data.dev={data_dir}/val"]
    command += [f"train.dtype={args.dtype}", f"train.batch_tokens={args.batch_tokens}"]
    command += [f"train.max_minutes={args.minutes}", f"train.valid_every={args.valid_every}"]
    command += [f"train.log_every={args.log_every}", "train.valid_bleu_sentences=0"]
    command += ["train.keep_checkpoints=1000000", f"train.threads={args.threads}"]
    return command + args.overrides


def run_training(command: list[str], log_path: Path, metrics: Path, limit_s: float) -> dict:
    """Run our training with its output in ``log_path``, printing its latest metrics line every
    15 s; SIGTERM (it saves and stops) after ``limit_s`` seconds, SIGKILL a minute later."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=log, cwd=ROOT, env=env)
        stopped = None
        while proc.poll() is None:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
            elapsed = time.perf_counter() - start
            if metrics.is_file() and (lines := metrics.read_text().splitlines()):
                entry = json.loads(lines[-1])
                shown = ("step", "elapsed", "tgt_tok_s", "train_loss", "dev_loss")
                say("ours: " + ", ".join(f"{k} {entry[k]}" for k in shown if k in entry))
            if stopped is None and elapsed > limit_s:
                say(f"ours: past {limit_s:.0f} s, stopping it (SIGTERM)")
                proc.send_signal(signal.SIGTERM)
                stopped = elapsed
            elif stopped is not None and elapsed - stopped > 60:
                proc.kill()
    wall = time.perf_counter() - start
    if proc.returncode not in (0, 130):  # 130: stopped by a signal, checkpoint saved
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
        raise RuntimeError(f"translate train exited with {proc.returncode}:\n{tail}")
    return {"process_s": round(wall, 1), "stopped_by_limit": stopped is not None}


def train_ours(args: argparse.Namespace, work: Path, data_dir: Path) -> dict:
    out = work / "ours"
    command = ours_command(args, out, data_dir)
    say("ours: " + " ".join(command))
    # leave OpenNMT-py its minutes and ~50 s of start-up and stopping, and our scoring 45 s
    reserve = SCORING_S + (0 if args.no_opennmt else 60 * args.opennmt_minutes + 50)
    limit = max(60, min(args.minutes * 60 + STARTUP_S, args.deadline_at - time.time() - reserve))
    run = run_training(command, work / "ours_train.log", out / "metrics.jsonl", limit)
    row = {**ours_rates(out / "metrics.jsonl"), **run, "dtype": args.dtype}
    say(f"ours: {row['steps']} steps, {row['tgt_tok_s'] or 0:.0f} target tokens/s")
    return row


def ours_checkpoints(out: Path) -> list[dict]:
    """The weights our run kept, oldest first, with the training-loop seconds of their dev
    entries in metrics.jsonl (a file without one, from a run killed while saving, is left
    out)."""
    entries = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    seconds = {e["step"]: e["elapsed"] for e in entries if "dev_loss" in e}
    checkpoints = []
    for path in (out / "checkpoints").glob("step-*.safetensors"):
        step = int(path.stem.split("-")[1])
        if step in seconds:
            checkpoints.append({"step": step, "seconds": seconds[step], "path": str(path)})
    return sorted(checkpoints, key=lambda c: c["step"])


def score_ours(args: argparse.Namespace, work: Path, data_dir: Path) -> dict:
    """Translate the test set from our checkpoints (see :func:`first_at_target`) until the
    first at ``--target`` is known; stops at the deadline."""
    import sacrebleu

    from translate.modeldir import load_weights
    from translate.translator import Translator

    out = work / "ours"
    checkpoints = ours_checkpoints(out)
    if not checkpoints:
        raise RuntimeError(f"no checkpoints in {out / 'checkpoints'}")
    translator = Translator.from_dir(out, dtype=args.dtype)
    translator.cfg.decode.batch_size = args.decode_batch
    sources = read_corpus_lines(data_dir, f"{TEST}.de")[: args.test_sentences]
    refs = read_corpus_lines(data_dir, f"{TEST}.en")[: args.test_sentences]
    scores: dict[int, dict] = {}
    signature = ""

    def score(index: int) -> float:
        nonlocal signature
        if index in scores:
            return scores[index]["bleu"]
        if time.time() > args.deadline_at:
            raise OutOfTime
        checkpoint = checkpoints[index]
        translator.model.load_state_dict(load_weights(Path(checkpoint["path"])))
        start = time.perf_counter()
        hyps = translator.translate(sources, beam=BEAM, length_penalty=LENGTH_PENALTY)
        seconds = time.perf_counter() - start
        bleu = sacrebleu.BLEU()
        value = bleu.corpus_score(hyps, [refs]).score
        signature = str(bleu.get_signature())
        scores[index] = {
            "step": checkpoint["step"],
            "minutes": round(checkpoint["seconds"] / 60, 3),
            "bleu": value,
            "decode_s": round(seconds, 2),
        }
        say(
            f"ours: step {checkpoint['step']} at {checkpoint['seconds']:.0f} s: test BLEU"
            f" {value:.2f} ({len(sources) / seconds:.0f} sentences/s)"
        )
        return value

    row: dict = {"checkpoints": len(checkpoints), "test_sentences": len(sources)}
    try:
        found = first_at_target(len(checkpoints), args.score_every, score, args.target)
        row["target"] = scores[found] if found is not None else None
    except OutOfTime:
        row["out_of_time"] = True
        say("ours: the deadline came before scoring finished")
    points = sorted(scores.values(), key=lambda p: p["step"])
    row.update(points=points, signature=signature)
    row["best"] = max(points, key=lambda p: p["bleu"], default=None)
    last = points[-1] if points and points[-1]["step"] == checkpoints[-1]["step"] else None
    row["last"] = last
    return row


# --- OpenNMT-py -----------------------------------------------------------------------------


def opennmt_python(args: argparse.Namespace) -> Path | None:
    """The interpreter that runs OpenNMT-py: ``--opennmt-python``, else this one when it
    imports ``onmt`` (the GPU machine, with the carried wheels), else bench/opennmt.py's
    virtual environment when installed; None when there is none."""
    if args.opennmt_python:
        return Path(args.opennmt_python)
    if importlib.util.find_spec("onmt") is not None:
        return Path(sys.executable)
    venv = DEFAULT_CACHE / "opennmt"
    if (venv / "installed.txt").is_file():
        return venv / "bin" / "python"
    return None


def opennmt_setup(args: argparse.Namespace) -> PeerSetup:
    setup = replace(SETUPS["recipe"], batch_size=args.batch_tokens)
    if args.smoke:
        setup = replace(setup, emb_dim=64, enc_dir_dim=32, hidden_dim=64)
    return setup


def train_opennmt(args: argparse.Namespace, work: Path, data_dir: Path, state: dict) -> dict:
    python = opennmt_python(args)
    if python is None:
        raise RuntimeError("no OpenNMT-py: not importable here and no bench/.cache/opennmt")
    gpu = state["cuda"]
    dtype = args.opennmt_dtype if gpu else "fp32"
    setup = opennmt_setup(args)
    spm_model = work / "ours" / "spm.model"
    data = prepare_data(
        data_dir,
        work / "opennmt-data",
        args.test_sentences,
        args.threads,
        spm_model=spm_model if spm_model.is_file() else None,
    )
    state["opennmt_data"] = data
    folder = work / "opennmt"
    limit = min(args.opennmt_minutes * 60 + STARTUP_S, args.deadline_at - time.time() - SCORING_S)
    say(f"OpenNMT-py: training {args.opennmt_minutes} min on {'GPU' if gpu else 'CPU'} ({dtype})")
    row = {"dtype": dtype, "gpu": gpu, "python": str(python), "setup": asdict(setup)}
    try:
        trained = opennmt.train_opennmt(
            folder,
            data,
            args.opennmt_minutes,
            threads=args.threads,
            setup=setup,
            save_every=args.opennmt_save_every,
            python=python,
            gpu=gpu,
            model_dtype=dtype,
            limit_s=max(limit, 60),
        )
        state["opennmt_model"] = trained["model"]
        row.update(wall_s=trained["wall_s"], checkpoint_steps=trained["steps"])
    except (PeerError, subprocess.CalledProcessError, OSError) as err:
        row["error"] = str(err)
    log = folder / "train.log"
    if log.is_file() and OPENNMT_WINDOW.search(log.read_text(errors="replace")):
        row.update(opennmt_rates(log.read_text(errors="replace")))
    say(f"OpenNMT-py: {row.get('steps', 0)} steps, {row.get('tgt_tok_s') or 0:.0f} target tokens/s")
    return row


def score_opennmt(args: argparse.Namespace, state: dict) -> dict:
    if "opennmt_model" not in state:
        return {"skipped": "no OpenNMT-py checkpoint"}
    left = args.deadline_at - time.time()
    if left < OPENNMT_DECODE_RESERVE_S:
        return {"skipped": f"{left:.0f} s left before the deadline"}
    data = state["opennmt_data"]
    return opennmt.translate_opennmt(
        state["opennmt_model"],
        data.test_src,
        BEAM,
        args.threads,
        setup=opennmt_setup(args),
        python=opennmt_python(args),
        gpu=state["cuda"],
    )


# --- the call -------------------------------------------------------------------------------


def preflight() -> dict:
    """GPU, torch and the package versions the rows depend on."""
    import torch

    info: dict = {"python": platform.python_version(), "torch": torch.__version__}
    info["cuda"] = torch.cuda.is_available()
    if info["cuda"]:
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda_version"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
    else:
        info["gpu"] = None
    for name in ("datasets", "pyarrow", "fsspec", "OpenNMT-py", "sentencepiece", "sacrebleu"):
        try:
            info[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            info[name] = None
    return info


def smoke_data(data_dir: Path, folder: Path) -> Path:
    """The first 3000 training, 200 dev and 20 test pairs of ``data_dir``, gzipped, in
    ``folder``: the smoke run's corpus."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", 3000), ("val", 200), (TEST, 20)):
        for lang in ("de", "en"):
            lines = read_corpus_lines(data_dir, f"{split}.{lang}")[:count]
            with gzip.open(folder / f"{split}.{lang}.gz", "wt", encoding="utf-8") as file:
                file.write("".join(f"{line}\n" for line in lines))
    return folder


def publish(results: dict, work: Path, out: Path) -> None:
    """gpu.json and the logs worth keeping, under ``out`` (at most 7 files: the device tool
    brings back 8, and gpu.sh writes gpu.log)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu.json").write_text(json.dumps(results, indent=1, default=str))
    copies = {
        "ours_metrics.jsonl": work / "ours" / "metrics.jsonl",
        "ours_train.log": work / "ours_train.log",
        "ours_config.yaml": work / "ours" / "config.yaml",
        "opennmt_train.log": work / "opennmt" / "train.log",
        "opennmt_train.yaml": work / "opennmt" / "train.yaml",
    }
    for name, path in copies.items():
        if path.is_file():
            shutil.copyfile(path, out / name)


def stage(results: dict, name: str, run: Callable[[], dict], work: Path, out: Path) -> None:
    """``results[name] = run()``, or its error; then everything so far is published."""
    say(f"stage {name}")
    try:
        results[name] = run()
    except Exception as err:  # a stage's failure is a row; the others still run
        traceback.print_exc()
        results[name] = {"error": f"{type(err).__name__}: {err}"}
    publish(results, work, out)


def fmt(value: float | None, spec: str) -> str:
    """``value`` formatted, or a dash as wide."""
    width = re.match(r"\d*", spec).group()
    return format("-" if value is None else value, f">{width}" if value is None else spec)


def summary(results: dict, args: argparse.Namespace) -> dict:
    """The two numbers of the issue, and whether each meets its target."""
    ours, peer = results.get("ours_train", {}), results.get("opennmt_train", {})
    ratio = None
    if ours.get("tgt_tok_s") and peer.get("tgt_tok_s"):
        ratio = ours["tgt_tok_s"] / peer["tgt_tok_s"]
    reached = results.get("ours_bleu", {}).get("target")
    minutes = reached["minutes"] if reached else None
    return {
        "ratio": ratio,
        "ratio_all": (
            ours["tgt_tok_s_all"] / peer["tgt_tok_s_all"]
            if ours.get("tgt_tok_s_all") and peer.get("tgt_tok_s_all")
            else None
        ),
        "ratio_met": ratio is not None and ratio >= TARGET_RATIO,
        "minutes_to_target": minutes,
        "minutes_met": minutes is not None and minutes <= TARGET_MINUTES,
    }


def print_table(results: dict, args: argparse.Namespace) -> None:
    """The issue's table: one row per system, then the two numbers against their targets."""
    info, total = results["preflight"], results["summary"]
    ours, peer = results.get("ours_train", {}), results.get("opennmt_train", {})
    ours_bleu, peer_bleu = results.get("ours_bleu", {}), results.get("opennmt_bleu", {})
    print(f"\nGPU: {info.get('gpu')}; torch {info.get('torch')} (CUDA {info.get('cuda_version')})")
    print(f"batch {args.batch_tokens} tokens; target {args.target} BLEU on {TEST}, beam {BEAM}")
    head = f"{'system':24s} {'dtype':5s} {'tgt tok/s':>10s} {'ratio':>6s} {'min to target':>13s}"
    print(f"{head}  BLEU reached")
    peer_rate = peer.get("tgt_tok_s")
    peer_name = f"OpenNMT-py {info.get('OpenNMT-py') or '3.0.4'}"
    for name, train, scored in (("ours", ours, ours_bleu), (peer_name, peer, peer_bleu)):
        rate = train.get("tgt_tok_s")
        ratio = rate / peer_rate if rate and peer_rate else None
        minutes = reached = None
        if name == "ours":
            target = scored.get("target")
            minutes = target["minutes"] if target else None
            best, last = scored.get("best"), scored.get("last")
            if target:
                reached = f"{target['bleu']:.2f} at step {target['step']}"
            elif best:
                why = (
                    "deadline before the scan ended" if scored.get("out_of_time") else "not reached"
                )
                reached = f"{why}; best {best['bleu']:.2f} at step {best['step']}"
            if last:
                reached = f"{reached}; {last['bleu']:.2f} at the end ({last['minutes']:.2f} min)"
        elif "bleu" in scored:
            reached = f"{scored['bleu']:.2f} after {args.opennmt_minutes} min"
        line = f"{name:24s} {train.get('dtype', '-'):5s} {fmt(rate, '10.0f')} {fmt(ratio, '6.2f')}"
        print(f"{line} {fmt(minutes, '13.2f')}  {reached or '-'}")
        for part in (train, scored):
            for key in ("error", "skipped"):
                if key in part:
                    print(f"  {name} {key}: {str(part[key])[-600:]}")
    print(
        f"ratio {fmt(total['ratio'], '.2f')} (target >= {TARGET_RATIO}: "
        f"{'met' if total['ratio_met'] else 'not met'}); with save windows "
        f"{fmt(total['ratio_all'], '.2f')}; minutes to {args.target}: "
        f"{fmt(total['minutes_to_target'], '.2f')} (target <= {TARGET_MINUTES}: "
        f"{'met' if total['minutes_met'] else 'not met'})"
    )
    for signature in {ours_bleu.get("signature"), peer_bleu.get("signature")} - {None, ""}:
        print(f"BLEU: {signature}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.gpu",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data-dir", help="the six Multi30k .gz files (default: .data/multi30k)")
    parser.add_argument("--workdir", help="models and logs (default: a new temp dir)")
    parser.add_argument(
        "--out", help="where gpu.json and the logs go (default: $OUT, else workdir)"
    )
    # the recipe's 4000-token batch would not fill a large GPU: each step would be bound by
    # kernel launches and the recurrences' sequential steps
    parser.add_argument("--batch-tokens", type=int, default=16000, help="both systems' batch")
    parser.add_argument("--minutes", type=float, default=3.0, help="our training budget")
    parser.add_argument("--dtype", default="bf16", help="our training and decoding dtype")
    parser.add_argument("--valid-every", type=int, default=25, help="our checkpoint steps")
    parser.add_argument("--log-every", type=int, default=10, help="our throughput window")
    parser.add_argument("--target", type=float, help="test BLEU to reach (41; smoke: 0)")
    parser.add_argument("--score-every", type=int, default=4, help="scan every N-th first")
    parser.add_argument("--decode-batch", type=int, default=250, help="sentences a batch")
    parser.add_argument("--test-sentences", type=int, help="the first N test sentences")
    parser.add_argument("--opennmt-minutes", type=float, default=1.0)
    parser.add_argument("--opennmt-save-every", type=int, default=50)
    parser.add_argument(
        "--opennmt-dtype",
        choices=["fp16", "fp32"],
        default="fp16",
        help="OpenNMT-py's (3.0.4 has no bf16; fp16 is autocast with loss scaling)",
    )
    parser.add_argument("--opennmt-python", help="a python that imports onmt")
    parser.add_argument("--no-opennmt", action="store_true", help="ours only")
    parser.add_argument("--threads", type=int, default=8, help="CPU threads of each system")
    parser.add_argument(
        "--deadline", type=float, default=7.0, help="minutes from the start to stop scoring"
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="the plumbing on a CPU: 3000 pairs, a 64-wide model, 30 steps, 20 test sentences",
    )
    parser.add_argument("overrides", nargs="*", help="our config overrides, key=value")
    args = parser.parse_args(argv)
    if args.smoke:
        args.batch_tokens, args.minutes, args.valid_every, args.log_every = 1000, 1.0, 10, 5
        args.threads, args.decode_batch, args.opennmt_minutes = 1, 64, 1.2
        args.opennmt_save_every, args.deadline = 5, 4.0
        args.overrides = [
            "data.vocab_size=1000",
            "model.emb_dim=64",
            "model.hidden_dim=64",
            "train.max_steps=30",
            *args.overrides,
        ]
    if args.target is None:
        args.target = 0.0 if args.smoke else 41.0
    if args.score_every < 1:
        parser.error("--score-every must be at least 1")
    return args


def main() -> None:
    args = parse_args()
    args.deadline_at = time.time() + 60 * args.deadline
    work = Path(args.workdir or tempfile.mkdtemp(prefix="gpu-bench-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    out = Path(args.out or os.environ.get("OUT") or work / "out").resolve()
    data_dir = (
        Path(args.data_dir)
        if args.data_dir
        else next((d for d in DATA_DIRS if (d / "train.de.gz").is_file()), DATA_DIRS[0])
    )
    if args.smoke:
        data_dir = smoke_data(data_dir, work / "smoke-data")
    say(f"work directory {work}, results in {out}, data {data_dir}")
    results: dict = {"args": {k: v for k, v in vars(args).items()}}
    results["preflight"] = preflight()
    say("preflight: " + json.dumps(results["preflight"]))
    state = {"cuda": results["preflight"]["cuda"]}
    stage(results, "ours_train", lambda: train_ours(args, work, data_dir), work, out)
    if not args.no_opennmt:
        train = lambda: train_opennmt(args, work, data_dir, state)  # noqa: E731
        stage(results, "opennmt_train", train, work, out)
    stage(results, "ours_bleu", lambda: score_ours(args, work, data_dir), work, out)
    if not args.no_opennmt:
        stage(results, "opennmt_bleu", lambda: score_opennmt(args, state), work, out)
    results["summary"] = summary(results, args)
    publish(results, work, out)
    print_table(results, args)
    say(f"done; results in {out / 'gpu.json'}")


if __name__ == "__main__":
    main()

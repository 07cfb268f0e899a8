"""Time to quality: training wall time until a checkpoint reaches a dev BLEU (val, beam 5),
ours against OpenNMT-py, on the same machine and the same Multi30k files.

    python bench/time_to_bleu.py --data-dir ../shared/data/multi30k [--target 38]
        [--minutes 20] [--workdir DIR] [--systems opennmt,ours] [key=value ...]

OpenNMT-py trains with bench/peers.py's set-up for ``--minutes`` of its training loop and
keeps a checkpoint every ``--opennmt-save-every`` steps; ours trains the attention recipe
(``--config``, as it is unless ``key=value`` overrides say otherwise) and keeps its weights
every ``--valid-every`` steps (dev loss only, no dev BLEU, during training). Each clock is
the toolkit's own training loop: start-up before it is not counted, and checkpoint saving
and our dev-loss passes are. Afterwards each checkpoint, oldest first, translates val with
beam 5 (length penalty 1.0) and is scored with cased sacreBLEU, until one reaches
``--target`` (``--all`` decodes every one). A finished system's results are kept in
``DIR/SYSTEM.json`` and reused by a later run with the same ``--workdir``; when OpenNMT-py's
fall short of the target, ``--opennmt-more-minutes`` trains it on from its last checkpoint
(optimiser state included; its data order starts over).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import sacrebleu

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import peers  # noqa: E402

BEAM = 5
LENGTH_PENALTY = 1.0


def first_reaching(points: list[dict], target: float) -> dict | None:
    """The earliest checkpoint whose dev BLEU is at least ``target``."""
    return next((p for p in points if p["bleu"] >= target), None)


def opennmt_curve(args, workdir: Path, earlier: dict | None = None) -> dict:
    """Train OpenNMT-py against the clock, then score its checkpoints on val. With the
    ``earlier`` results of a run that fell short of the target, go on from its last
    checkpoint for ``--opennmt-more-minutes`` instead, its clock continuing from there."""
    data = peers.prepare_data(Path(args.data_dir), workdir, threads=args.threads)
    points, offset, folder, resume = [], 0.0, workdir / "opennmt", None
    if earlier:
        points, last = earlier["points"], earlier["points"][-1]
        resume = Path(last.get("path") or folder / f"model_step_{last['step']}.pt")
        offset, folder = last["seconds"], workdir / f"opennmt-from-{last['step']}"
    trained = peers.train_opennmt(
        folder,
        data,
        minutes=args.opennmt_more_minutes if earlier else args.minutes,
        threads=args.threads,
        save_every=args.opennmt_save_every,
        keep_all=True,
        train_from=resume,
    )
    signature = earlier["signature"] if earlier else ""
    for path, seconds in trained["checkpoints"]:
        row = peers.translate_opennmt(
            Path(path), data.folder / "val.de", BEAM, args.threads, ref_file=data.val_ref
        )
        step, seconds = int(Path(path).stem.rsplit("_", 1)[1]), offset + seconds
        points.append({"step": step, "seconds": seconds, "bleu": row["bleu"], "path": path})
        signature = row["signature"]
        print(f"opennmt: step {step} at {seconds:.0f} s: dev BLEU {row['bleu']:.2f}", flush=True)
        if row["bleu"] >= args.target and not args.all:
            break
    return {"points": points, "signature": signature}


def ours_curve(args, workdir: Path) -> dict:
    """Train our recipe with a checkpoint every ``--valid-every`` steps, then score them."""
    from translate.modeldir import load_tensors
    from translate.runtime import set_threads
    from translate.translator import Translator

    out = workdir / ours_name(args)
    data_dir = Path(args.data_dir).resolve()
    command = [sys.executable, "-m", "translate", "train", str(args.config)]
    command += [f"out_dir={out}", f"data.train={data_dir}/train", f"data.dev={data_dir}/val"]
    command += [f"train.valid_every={args.valid_every}", "train.valid_bleu_sentences=0"]
    command += ["train.keep_checkpoints=1000000", f"train.threads={args.threads}"]
    command += args.overrides
    print("ours: " + " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=ROOT)
    seconds = {}
    for line in (out / "metrics.jsonl").read_text().splitlines():
        entry = json.loads(line)
        if "dev_loss" in entry:
            seconds[entry["step"]] = entry["elapsed"]
    set_threads(args.threads)
    translator = Translator.from_dir(out)
    sources = peers.read_lines(data_dir, "val.de")
    refs = peers.read_lines(data_dir, "val.en")
    points, bleu = [], sacrebleu.BLEU()
    for path in sorted((out / "checkpoints").glob("step-*.pt")):
        step = int(path.stem.split("-")[1])
        translator.model.load_state_dict(load_tensors(path))
        hyps = translator.translate(sources, beam=BEAM, length_penalty=LENGTH_PENALTY)
        score = bleu.corpus_score(hyps, [refs]).score
        points.append({"step": step, "seconds": seconds[step], "bleu": score})
        print(f"ours: step {step} at {seconds[step]:.0f} s: dev BLEU {score:.2f}", flush=True)
        if score >= args.target and not args.all:
            break
    return {"points": points, "signature": str(bleu.get_signature())}


def ours_name(args) -> str:
    """Our run's folder and results name: ``ours``, plus the overrides when there are any."""
    return "_".join(["ours", *args.overrides]).replace("/", "-")


CURVES = {"opennmt": opennmt_curve, "ours": ours_curve}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", required=True, help="folder with the Multi30k .gz files")
    parser.add_argument("--workdir", help="models, logs and results (default: a new temp dir)")
    parser.add_argument("--target", type=float, default=38.0, help="dev BLEU to reach")
    parser.add_argument("--minutes", type=float, default=20.0, help="OpenNMT-py's training time")
    parser.add_argument("--opennmt-save-every", type=int, default=40, help="its checkpoint steps")
    parser.add_argument(
        "--opennmt-more-minutes",
        type=float,
        help="when OpenNMT-py's results so far fall short of --target, train it on from its "
        "last checkpoint for this long",
    )
    parser.add_argument(
        "--config",
        default=str(ROOT / "recipes/multi30k/attention.yaml"),
        help="our training config (default: the Multi30k attention recipe)",
    )
    parser.add_argument("--valid-every", type=int, default=50, help="our checkpoint steps")
    parser.add_argument("--systems", default="opennmt,ours", help="which to run, in order")
    parser.add_argument("--all", action="store_true", help="decode every checkpoint")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("overrides", nargs="*", help="our config overrides, key=value")
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="time-to-bleu-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"work directory: {workdir}", flush=True)
    results = {}
    for name in args.systems.split(","):
        saved = workdir / f"{ours_name(args) if name == 'ours' else name}.json"
        if not saved.is_file():
            saved.write_text(json.dumps(CURVES[name](args, workdir), indent=1))
        results[name] = json.loads(saved.read_text())
        short = not first_reaching(results[name]["points"], args.target)
        if name == "opennmt" and short and args.opennmt_more_minutes:
            results[name] = opennmt_curve(args, workdir, earlier=results[name])
            saved.write_text(json.dumps(results[name], indent=1))
    print_table(results, args.target)


def print_table(results: dict[str, dict], target: float) -> None:
    """Each system's decoded checkpoints, then the first to reach the target and the ratio."""
    print(f"\ndev (val) BLEU, beam {BEAM}, by training-loop seconds")
    print(f"{'system':8s} {'step':>6} {'seconds':>8} {'BLEU':>6}")
    for name, result in results.items():
        for point in result["points"]:
            print(f"{name:8s} {point['step']:6d} {point['seconds']:8.0f} {point['bleu']:6.2f}")
    reached = {name: first_reaching(r["points"], target) for name, r in results.items()}
    print(f"\nfirst checkpoint at or above {target}:")
    for name, point in reached.items():
        print(f"  {name:8s} " + (f"{point['seconds']:.0f} s" if point else "not reached"))
    ours, opennmt = reached.get("ours"), reached.get("opennmt")
    if ours and opennmt:
        ratio = ours["seconds"] / opennmt["seconds"]
        print(f"time to {target}: ours / OpenNMT-py = {ratio:.2f}  (target <= 0.33)")
    elif ours and results.get("opennmt", {}).get("points"):
        # OpenNMT-py got there, if at all, after its last checkpoint: a bound on the ratio
        last = results["opennmt"]["points"][-1]["seconds"]
        bound = ours["seconds"] / last
        print(f"time to {target}: ours / OpenNMT-py < {bound:.2f}  (target <= 0.33)")
    for signature in {r["signature"] for r in results.values() if r["signature"]}:
        print(f"BLEU: {signature}")


if __name__ == "__main__":
    main()

"""bench/transformer.py and fairseq's Transformer set-ups, without training a peer: the fairseq
options each set-up gives (and the LSTM's, unchanged), the sweep's one change each, the FLOPs
count, the rows kept between runs, our decoding row and the table."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from bench import fairseq, transformer
from bench.fairseq import fairseq_args, fairseq_flops_per_target_token, keep
from bench.peer_runs import run_child
from bench.peer_setups import SETUPS, TRANSFORMER_SWEEP, PeerSetup, changes
from translate.score import score
from translate.translator import Translator


def option(args: list[str], name: str) -> str | None:
    """The value after ``name`` in ``args``; None when it is not there."""
    return args[args.index(name) + 1] if name in args else None


# --- set-ups and fairseq's options ------------------------------------------------------------


@pytest.mark.parametrize(
    "name, width, layers, ffn",
    [("transformer_iwslt", 512, 6, 1024), ("transformer_small", 256, 3, 1024)]
    + [("transformer_tiny", 256, 2, 512)],
)
def test_transformer_set_ups_give_fairseq_explicit_sizes_and_the_iwslt_schedule(
    name, width, layers, ffn
):
    args = fairseq_args(Path("bin"), Path("save"), None, SETUPS[name])
    assert option(args, "--arch") == "transformer"
    for side in ("encoder", "decoder"):
        assert option(args, f"--{side}-embed-dim") == str(width)
        assert option(args, f"--{side}-layers") == str(layers)
        assert option(args, f"--{side}-ffn-embed-dim") == str(ffn)
        assert option(args, f"--{side}-attention-heads") == "4"
    assert "--share-all-embeddings" in args  # joint pieces: one table
    assert "--encoder-bidirectional" not in args and "--encoder-hidden-size" not in args
    assert option(args, "--adam-betas") == "(0.9, 0.98)"
    assert option(args, "--lr") == "0.0005" and option(args, "--weight-decay") == "0.0001"
    assert option(args, "--lr-scheduler") == "inverse_sqrt"
    assert option(args, "--warmup-updates") == "4000"
    assert option(args, "--warmup-init-lr") == "1e-07"
    assert option(args, "--clip-norm") == "0.0" and option(args, "--dropout") == "0.3"
    assert option(args, "--max-tokens") == "4000" and option(args, "--label-smoothing") == "0.1"


def test_the_lstm_options_are_unchanged():
    bench = fairseq_args(Path("bin"), Path("save"), None, SETUPS["bench"])
    assert bench == [
        *("bin --source-lang de --target-lang en --task translation --arch lstm".split()),
        *("--encoder-embed-dim 256 --encoder-hidden-size 256 --encoder-layers 1".split()),
        *("--decoder-embed-dim 256 --decoder-hidden-size 512 --decoder-layers 1".split()),
        *("--decoder-out-embed-dim 512 --decoder-attention 1 --dropout 0.3".split()),
        *("--criterion label_smoothed_cross_entropy --label-smoothing 0.1".split()),
        *("--optimizer adam --lr 0.002 --lr-scheduler fixed --clip-norm 1.0".split()),
        *("--max-tokens 4000 --required-batch-size-multiple 1".split()),
        *("--max-source-positions 81 --max-target-positions 81 --max-update 0".split()),
        *("--seed 1234 --num-workers 0 --log-format json --log-interval 10".split()),
        *("--save-dir save --save-interval-updates 20 --keep-interval-updates 2".split()),
        *("--encoder-bidirectional --cpu --disable-validation".split()),
        *("--no-epoch-checkpoints --no-last-checkpoints".split()),
    ]


def test_sweep_variants_change_exactly_the_named_field():
    expected = {
        "lr1e-3": "learning_rate=0.001",
        "warmup1000": "warmup_updates=1000",
        "warmup400": "warmup_updates=400",
        "dropout0.1": "dropout=0.1",
        "batch8000": "batch_size=8000",
    }
    for base in ("transformer_small", "transformer_tiny"):
        for change, diff in expected.items():
            assert changes(SETUPS[f"{base}_{change}"], SETUPS[base]) == diff
    assert changes(SETUPS["transformer_tiny"], SETUPS["transformer_small"]) == (
        "layers=2 ffn_dim=512"
    )
    for base in ("transformer_small_warmup400", "transformer_tiny_warmup400"):
        assert changes(SETUPS[f"{base}_lr1e-3"], SETUPS[base]) == "learning_rate=0.001"
        assert changes(SETUPS[f"{base}_batch2000"], SETUPS[base]) == "batch_size=2000"
    assert set(TRANSFORMER_SWEEP) <= set(SETUPS)
    assert all(SETUPS[name].arch == "transformer" for name in TRANSFORMER_SWEEP)


def test_set_ups_refuse_fields_their_model_does_not_read():
    with pytest.raises(ValueError, match="warmup_updates is the Transformer's"):
        PeerSetup(warmup_updates=1000)  # an LSTM: OpenNMT-py and JoeyNMT would ignore it
    with pytest.raises(ValueError, match="adam_betas"):
        PeerSetup(adam_betas=(0.9, 0.98))
    with pytest.raises(ValueError, match="arch"):
        PeerSetup(arch="gru")
    with pytest.raises(ValueError, match="heads"):
        PeerSetup(arch="transformer")
    with pytest.raises(ValueError, match="multiple of heads"):
        PeerSetup(arch="transformer", emb_dim=250, layers=2, ffn_dim=512, heads=4)
    with pytest.raises(ValueError, match="warmup_updates"):
        PeerSetup(arch="transformer", layers=2, ffn_dim=512, heads=4, lr_schedule="inverse_sqrt")


def test_transformer_flops_count_every_weight_matrix_three_times_twice():
    # with no attention span, forward is 2 FLOPs per weight a token meets: encoder layers
    # 4d^2 + 2df, decoder layers 8d^2 + 2df (the memory's keys and values once per source
    # token), the output layer dV; forward + backward 3x
    for name in ("transformer_iwslt", "transformer_small", "transformer_tiny"):
        setup = SETUPS[name]
        d, f, layers = setup.emb_dim, setup.ffn_dim, setup.layers
        weights = layers * (4 * d * d + 2 * d * f) + layers * (8 * d * d + 2 * d * f) + d * 8001
        assert fairseq_flops_per_target_token(8001, 1.0, 0.0, setup) == 6 * weights
    # fairseq_args' docstrings: Multi30k's 1.035 source tokens per target, 17.7 a sentence
    figures = [
        fairseq_flops_per_target_token(8001, 1.035, 17.7, SETUPS[n]) for n in TRANSFORMER_SWEEP[:3]
    ]
    assert [round(x / 1e6, 1) for x in figures] == [218.3, 46.3, 28.6]


# --- bench/transformer.py -----------------------------------------------------------------------


def test_parse_args_takes_names_and_refuses_unknown_ones(capsys):
    args = transformer.parse_args(["--data-dir", "d", "--minutes", "10", "--ours", "small4k"])
    assert args.setups == transformer.DEFAULT_SETUPS and args.ours == ["small4k"]
    assert args.split == "test_2016_flickr"
    args = transformer.parse_args(["--data-dir", "d", "--minutes", "1", "--setups", ""])
    assert args.setups == [] and args.ours == ["attention", "small4k"]
    args = transformer.parse_args(["--data-dir", "d", "--minutes", "10", "--sweep"])
    assert args.setups == TRANSFORMER_SWEEP and args.ours == [] and args.split == "val"
    args = transformer.parse_args(
        ["--data-dir", "d", "--minutes", "1", "--sweep", "--ours", "attention"]
    )
    assert args.setups == TRANSFORMER_SWEEP and args.ours == ["attention"]
    wrongs = [["--setups", "transformer_huge"], ["--ours", "big"], ["--minutes", "0"]]
    for wrong in [*wrongs, ["--sweep", "--test-sentences", "50"]]:
        with pytest.raises(SystemExit):
            transformer.parse_args(["--data-dir", "d", "--minutes", "1", *wrong])
    with pytest.raises(SystemExit):
        transformer.parse_args(["--data-dir", "d", "--minutes", "1", "--setups", "", "--ours", ""])
    assert "unknown set-up transformer_huge" in capsys.readouterr().err


def test_ours_command_trains_the_attention_recipe_for_the_budget(tmp_path):
    command = transformer.ours_command(tmp_path / "o", Path("/d"), 10.0, 2, ["a.b=1"], False)
    assert command[2:5] == ["translate", "train", str(transformer.RECIPE)]
    assert transformer.RECIPE.name == "attention.yaml"
    assert command[5:] == [
        f"out_dir={tmp_path / 'o'}",
        "data.train=/d/train",
        "data.dev=/d/val",
        "train.max_minutes=10",
        "train.threads=2",
        "train.max_epochs=1000",
        "a.b=1",
    ]
    kept = transformer.ours_command(tmp_path / "o", Path("/d"), 10.0, 2, [], True)
    assert kept[-1] == "train.keep_checkpoints=1000"


def test_keep_every_keeps_fairseq_checkpoints_at_its_multiples():
    args = fairseq_args(Path("bin"), Path("save"), None, SETUPS["bench"], 5, 250)
    assert args[args.index("--keep-interval-updates-pattern") + 1] == "250"
    assert "--keep-interval-updates-pattern" not in fairseq_args(Path("b"), Path("s"), None)
    assert transformer.parse_args(["--data-dir", "d", "--minutes", "1"]).keep_every == 0
    for wrong in (["--keep-every", "7", "--save-every", "5"], ["--keep-every", "-5"]):
        with pytest.raises(SystemExit):
            transformer.parse_args(["--data-dir", "d", "--minutes", "1", *wrong])


def test_kept_rows_are_reused_refused_or_measured_again(tmp_path):
    path, calls = tmp_path / "row.json", []

    def measure(row):
        calls.append(row)
        return row

    assert transformer.kept_row(path, {"minutes": 10}, lambda: measure({"bleu": 1.0})) == {
        "bleu": 1.0
    }
    assert transformer.kept_row(path, {"minutes": 10}, lambda: measure({"bleu": 2.0})) == {
        "bleu": 1.0
    }
    assert len(calls) == 1  # kept: not measured again
    with pytest.raises(SystemExit, match="other settings"):
        transformer.kept_row(path, {"minutes": 30}, lambda: measure({}))

    def failing():
        raise transformer.PeerError("fairseq-generate exited with 1")

    failed = tmp_path / "failed.json"
    assert transformer.kept_row(failed, {}, failing) == {"error": "fairseq-generate exited with 1"}
    assert transformer.kept_row(failed, {}, lambda: measure({"bleu": 3.0})) == {"bleu": 3.0}


def test_ours_trained_reads_the_last_and_the_best_validation(tmp_path):
    records = [
        {"step": 50, "elapsed": 20.0, "loss": 5.0},
        {"step": 250, "elapsed": 100.5, "dev_loss": 3.0, "best": True},
        {"step": 500, "elapsed": 201.0, "dev_loss": 2.5, "best": True},
        {"step": 540, "elapsed": 217.0, "loss": 2.0},
        {"step": 555, "elapsed": 240.2, "dev_loss": 2.6, "best": False},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    log = "model: gru seq2seq, 1.0M parameters, device cpu, dtype bf16 (auto)\n"
    assert transformer.ours_trained(tmp_path, log) == {
        "steps": 555,
        "train_s": 240.2,
        "best_step": 500,
        "dtype": "bf16",
    }


def test_decode_ours_scores_what_the_model_translates(trained_dir, word_corpus):
    sources = (word_corpus / "dev.de").read_text().splitlines()[:30]
    refs = (word_corpus / "dev.en").read_text().splitlines()[:30]
    row = transformer.decode_ours(trained_dir, sources, refs, 1, 5)
    translator = Translator.from_dir(trained_dir, device="cpu")
    expected = score(translator.translate(sources, beam=5), refs)
    assert (row["bleu"], row["chrf"]) == (expected["bleu"], expected["chrf"])
    assert row["parameters"] == sum(p.numel() for p in translator.model.parameters())
    assert row["sentences_per_s"] > 0 and row["single_sentences_per_s"] > 0
    assert "single_sentences_per_s" not in transformer.decode_ours(trained_dir, sources, refs, 1, 0)


def test_format_table_rows_errors_and_signatures():
    rows = [
        {
            "system": "ours",
            "setup": "attention",
            "pieces": "8000 (its own)",
            "dtype": "bf16",
            "steps": 1234,
            "train_s": 600.4,
            "bleu": 38.123,
            "chrf": 60.0,
            "sentences_per_s": 55.25,
            "single_sentences_per_s": 12.04,
            "parameters": 21_500_000,
            "bleu_signature": "nrefs:1|bleu",
            "chrf_signature": "nrefs:1|chrf",
        },
        {
            "system": "fairseq",
            "setup": "transformer_tiny",
            "pieces": "8000 (ours attention)",
            "dtype": "fp32",
            "steps": 40,
            "train_s": 31.0,
            "bleu": 0.5,
            "chrf": 10.0,
            "sentences_per_s": 20.0,
            "parameters": 5_000_000,
            "bleu_signature": "nrefs:1|bleu",
        },
        {"system": "fairseq", "setup": "transformer_iwslt", "error": "fairseq exited\nTraceback"},
    ]
    table = transformer.format_table(rows, "Some CPU, 2 cores", 10.0, 2, "test_2016_flickr", 1000)
    assert table.splitlines() == [
        "10 minutes of training each, 2 thread(s), Multi30k test_2016_flickr (1000 sentences),"
        " beam 5; Some CPU, 2 cores",
        "",
        "| system | set-up | pieces | dtype | steps | train s | BLEU | chrF | sent/s | sent/s one"
        " | params | MB fp32 |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        "| ours | attention | 8000 (its own) | bf16 | 1234 | 600 | 38.12 | 60.00 | 55.2 | 12.0"
        " | 21.5M | 86.0 |",
        "| fairseq | transformer_tiny | 8000 (ours attention) | fp32 | 40 | 31 | 0.50 | 10.00"
        " | 20.0 | - | 5.0M | 20.0 |",
        "| fairseq | transformer_iwslt | error: fairseq exited |",
        "",
        "nrefs:1|bleu",
        "nrefs:1|chrf",
    ]


def test_the_budget_checkpoint_outlives_fairseq_rotating_it_away(tmp_path):
    saved, kept = tmp_path / "checkpoint_5_1140.pt", tmp_path / "checkpoint_budget.pt"
    saved.write_bytes(b"weights")
    assert keep(saved, kept)
    saved.unlink()  # --keep-interval-updates removing it
    assert kept.read_bytes() == b"weights"
    assert not keep(saved, kept) and not kept.exists()  # gone before it could be kept


def test_a_child_that_ignores_the_interrupt_is_killed_after_kill_after(tmp_path):
    ignores = "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(60)"
    start = time.perf_counter()
    run = run_child(
        [sys.executable, "-c", ignores],
        tmp_path / "log",
        1,
        should_stop=lambda elapsed, log: elapsed > 0.5,
        kill_after=1.0,
    )
    assert run.interrupted and run.returncode == -9
    assert time.perf_counter() - start < 10


FAKE_FAIRSEQ = """
import signal, sys, time
from pathlib import Path

signal.signal(signal.SIGINT, signal.SIG_IGN)  # as fairseq once did: it trained on for minutes
save_dir = Path(sys.argv[sys.argv.index("--save-dir") + 1])


def log(what, source="fairseq.trainer"):
    print(time.strftime("%Y-%m-%d %H:%M:%S") + f" | INFO | {source} | " + what, flush=True)


log("num. shared model params: 1,234 (num. trained: 1,234)")
log("Start iterating over samples")
for updates in range(5, 100000, 5):
    time.sleep(0.1)
    log('{"epoch": 1, "wps": "1000.0", "num_updates": "%d"}' % updates, "train_inner")
    path = save_dir / f"checkpoint_1_{updates}.pt"
    path.write_text(str(updates))
    log(f"Saved checkpoint {path} (epoch 1 @ {updates} updates, score None)")
    (save_dir / f"checkpoint_1_{updates - 10}.pt").unlink(missing_ok=True)  # keeps the last 2
"""


def test_train_fairseq_keeps_the_budget_model_when_fairseq_trains_on_past_the_interrupt(
    tmp_path, monkeypatch
):
    script = tmp_path / "fake_fairseq.py"
    script.write_text(FAKE_FAIRSEQ)
    python = tmp_path / "python"  # called as: python -m fairseq_cli.train OPTIONS
    python.write_text(f'#!/bin/sh\nshift 2\nexec "{sys.executable}" "{script}" "$@"\n')
    python.chmod(0o755)
    data_bin = tmp_path / "bin"
    data_bin.mkdir()
    (data_bin / "dict.txt").write_text("a 1\n")
    monkeypatch.setattr(fairseq, "setup_fairseq", lambda cache: python)
    monkeypatch.setattr(fairseq, "fairseq_data", lambda python, data, threads: data_bin)
    monkeypatch.setattr(fairseq, "FAIRSEQ_KILL_AFTER", 1.5)
    start = time.perf_counter()
    trained = fairseq.train_fairseq(tmp_path / "run", None, minutes=0.02, threads=1)
    assert time.perf_counter() - start < 20  # killed 1.5 s after the ignored interrupt
    model = trained["model"]
    assert model == tmp_path / "run/model/checkpoint_budget.pt"
    assert model.read_text() == str(trained["steps"])  # the checkpoint of the budget, ...
    assert not (tmp_path / f"run/model/checkpoint_1_{trained['steps']}.pt").exists()  # rotated
    assert dict(trained["checkpoints"])[str(model)] <= 3  # its seconds, for bench.transformer
    assert trained["parameters"] == 1234 and trained["tgt_tokens_per_s"] == pytest.approx(1000)

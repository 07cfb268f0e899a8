"""The benchmark scripts' own logic, without the peers' virtual environments: the named
set-ups and the configs built from them, the shared data preparation for both corpora'
split names, and time_to_bleu.py's checkpoint choice, caching and tables."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from functools import partial
from pathlib import Path

import pytest
import sentencepiece as spm
import yaml

from bench import ROOT, peers
from bench import time_to_bleu as ttb
from bench.fairseq import fairseq_args, fairseq_flops_per_target_token
from bench.joeynmt import joeynmt_config
from bench.opennmt import opennmt_config
from bench.peer_data import CORPORA, PeerData, detokenize, prepare_data
from bench.peer_setups import (
    BENCH,
    SETUPS,
    SWEEP,
    SWEEP_WINNER,
    PeerSetup,
    changes,
    shared_vocab_size,
)

WORDS = "der die das hund katze haus ein eine the a dog cat house runs sleeps big small".split()


# --- set-ups and the configs built from them -------------------------------------------------


def test_default_setup_is_the_bench_set_up():
    bench = SETUPS["bench"]
    assert bench == PeerSetup() == BENCH
    assert (bench.emb_dim, bench.enc_dir_dim, bench.hidden_dim) == (256, 256, 512)
    assert (bench.batch_size, bench.batch_type, bench.learning_rate) == (4000, "tokens", 0.002)
    assert (bench.dropout, bench.label_smoothing, bench.max_len, bench.beam) == (0.3, 0.1, 80, 5)
    assert bench.attention
    assert not SETUPS["bench_noattn"].attention
    assert replace(SETUPS["bench_noattn"], attention=True) == bench
    assert replace(SETUPS["sents64_noattn"], attention=True) == SETUPS["sents64"]
    assert changes(SETUPS["tatoeba_sents64"], SETUPS["tatoeba"]) == (
        "batch_size=64 batch_type=sents"
    )
    with pytest.raises(ValueError, match="batch_type"):
        PeerSetup(batch_type="sentences")


def test_sweep_set_ups_change_one_thing_each():
    assert set(SWEEP) <= set(SETUPS)
    assert changes(BENCH) == "-"
    assert changes(SETUPS["sents64"]) == "batch_size=64 batch_type=sents"
    assert changes(SETUPS["lr0.001"]) == "learning_rate=0.001"
    for name in SWEEP:
        setup = SETUPS[name]
        assert setup.attention and setup.hidden_dim == 512 and setup.vocab_size == 8000
    assert shared_vocab_size([SETUPS[name] for name in SWEEP]) == 8000
    assert SWEEP_WINNER in SWEEP  # time_to_bleu.py's first OpenNMT-py row
    with pytest.raises(ValueError, match="vocab_size"):
        shared_vocab_size([BENCH, replace(BENCH, vocab_size=16000)])


def test_every_peer_row_names_a_toolkit_and_a_set_up():
    for toolkit, setup in peers.PEERS.values():
        assert toolkit in peers.TOOLKITS and setup in SETUPS
    assert peers.PEERS["opennmt_noattn"] == ("opennmt", "bench_noattn")
    assert peers.PEERS["fairseq_noattn"] == ("fairseq", "bench_noattn")
    assert ("joeynmt", "bench_noattn") not in peers.PEERS.values()
    assert set(peers.DEFAULT_PEERS) <= set(peers.PEERS)


def test_opennmt_config_with_and_without_attention(tmp_path):
    data = PeerData(tmp_path / "data")
    bench = opennmt_config(tmp_path, data, None, SETUPS["bench"])
    assert (bench["global_attention"], bench["input_feed"]) == ("mlp", 1)
    assert (bench["batch_type"], bench["batch_size"]) == ("tokens", 4000)
    assert (bench["enc_hid_size"], bench["dec_hid_size"], bench["word_vec_size"]) == (512, 512, 256)
    assert (bench["learning_rate"], bench["dropout"], bench["label_smoothing"]) == (
        0.002,
        [0.3],
        0.1,
    )
    assert bench["src_seq_length"] == bench["tgt_seq_length"] == 80
    assert bench["data"]["corpus_1"]["path_src"] == f"{data.train}.de"
    noattn = opennmt_config(tmp_path, data, None, SETUPS["bench_noattn"])
    # input feeding stays: OpenNMT-py 3.0.4 fails to train its decoder without (input_feed 0)
    assert (noattn["global_attention"], noattn["input_feed"]) == ("none", 1)
    assert {**noattn, "global_attention": "mlp"} == bench
    # OpenNMT-py reads the YAML: "none" must stay the string its option takes, not null
    assert yaml.safe_load(yaml.safe_dump(noattn))["global_attention"] == "none"
    sents = opennmt_config(tmp_path, data, 20, SETUPS["sents64"])
    assert (sents["batch_type"], sents["batch_size"], sents["train_steps"]) == ("sents", 64, 20)


def test_joeynmt_config_follows_the_set_up(tmp_path):
    data = PeerData(tmp_path / "data")
    config = joeynmt_config(tmp_path / "model", data, None, SETUPS["bench"])
    assert config["model"]["decoder"]["attention"] == "bahdanau"
    assert (config["training"]["batch_type"], config["training"]["batch_size"]) == ("token", 4000)
    assert config["model"]["encoder"]["hidden_size"] == 256
    sents = joeynmt_config(tmp_path / "model", data, None, SETUPS["sents128"])
    assert (sents["training"]["batch_type"], sents["training"]["batch_size"]) == ("sentence", 128)
    with pytest.raises(ValueError, match="attends"):
        joeynmt_config(tmp_path / "model", data, None, SETUPS["bench_noattn"])


def fairseq_options(setup: PeerSetup) -> dict[str, str]:
    """fairseq_args as option -> value ("" for a flag)."""
    args = fairseq_args(Path("bin"), Path("save"), None, setup)[1:]
    options, i = {}, 0
    while i < len(args):
        value = args[i + 1] if i + 1 < len(args) and not args[i + 1].startswith("--") else ""
        options[args[i]] = value
        i += 2 if value else 1
    return options


def test_fairseq_args_follow_the_set_up():
    bench = fairseq_options(SETUPS["bench"])
    assert (bench["--decoder-attention"], bench["--max-tokens"]) == ("1", "4000")
    assert bench["--max-source-positions"] == "81" and "--batch-size" not in bench
    noattn = fairseq_options(SETUPS["bench_noattn"])
    assert noattn["--decoder-attention"] == "0"
    sents = fairseq_options(SETUPS["sents64"])
    assert sents["--batch-size"] == "64" and "--max-tokens" not in sents
    # the figures fairseq_args' docstring gives for Multi30k (8001 types)
    flops = fairseq_flops_per_target_token(8001, 1.035, 17.7)
    plain = fairseq_flops_per_target_token(8001, 1.035, 17.7, SETUPS["bench_noattn"])
    assert round(flops / 1e6, 1) == 51.6 and round(plain / 1e6, 1) == 46.8


# --- shared data ------------------------------------------------------------------------------


def write_corpus(folder: Path, splits: dict[str, int]) -> dict[str, list[str]]:
    """Plain files ``{split}.de`` / ``{split}.en`` of short word sentences; their lines."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = {}
    for split, n in splits.items():
        for lang in ("de", "en"):
            text = [
                " ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(1 + i % 5))
                for i in range(n)
            ]
            (folder / f"{split}.{lang}").write_text("\n".join(text) + "\n", encoding="utf-8")
            lines[f"{split}.{lang}"] = text
    return lines


@pytest.fixture(scope="module")
def small_spm(tmp_path_factory) -> Path:
    """A 40-piece SentencePiece model of the word list."""
    folder = tmp_path_factory.mktemp("spm")
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(WORDS * 20),
        model_prefix=str(folder / "small"),
        vocab_size=40,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    return folder / "small.model"


def test_prepare_data_multi30k_names_with_a_given_model(tmp_path, small_spm):
    raw = write_corpus(tmp_path / "m30k", {"train": 30, "val": 6, "test_2016_flickr": 5})
    data = prepare_data(tmp_path / "m30k", tmp_path / "work", 3, 1, spm_model=small_spm)
    assert data.spm_model.read_bytes() == small_spm.read_bytes()
    for name, source in (("train", "train"), ("val", "val")):
        for lang in ("de", "en"):
            pieces = (data.folder / f"{name}.{lang}").read_text(encoding="utf-8").splitlines()
            assert [detokenize(line) for line in pieces] == raw[f"{source}.{lang}"]
    assert len(data.test_src.read_text().splitlines()) == 3  # test_sentences
    assert data.test_ref.read_text().splitlines() == raw["test_2016_flickr.en"][:3]
    assert data.val_ref.read_text().splitlines() == raw["val.en"]
    processor = spm.SentencePieceProcessor(model_file=str(small_spm))
    vocab = data.vocab.read_text(encoding="utf-8").splitlines()
    assert "<unk>" not in vocab and "</s>" not in vocab
    assert len(vocab) == processor.get_piece_size() - 3  # <unk>, <s>, </s>
    marker = (data.folder / "prepared.json").read_text()
    prepare_data(tmp_path / "m30k", tmp_path / "work", 3, 1, spm_model=small_spm)
    assert (data.folder / "prepared.json").read_text() == marker  # the same: kept


def test_prepare_data_tatoeba_names_and_its_own_model(tmp_path):
    raw = write_corpus(tmp_path / "tatoeba", {"train": 40, "valid": 4})
    data = prepare_data(
        tmp_path / "tatoeba",
        tmp_path / "work",
        threads=1,
        corpus=CORPORA["tatoeba"],
        vocab_size=30,
    )
    assert data.spm_model.is_file()
    assert spm.SentencePieceProcessor(model_file=str(data.spm_model)).get_piece_size() <= 30
    valid = (data.folder / "val.de").read_text(encoding="utf-8").splitlines()
    assert [detokenize(line) for line in valid] == raw["valid.de"]
    assert data.val_ref.read_text().splitlines() == raw["valid.en"]
    assert not data.test_src.exists()  # Tatoeba has no test split
    assert json.loads((data.folder / "prepared.json").read_text())["splits"]["dev"] == "valid"


# --- time_to_bleu.py ------------------------------------------------------------------------


def points(*rows: tuple[int, float, float]) -> list[dict]:
    return [{"step": step, "seconds": seconds, "bleu": bleu} for step, seconds, bleu in rows]


def test_first_reaching_best_point_and_every_nth():
    curve = points((40, 100, 20.0), (80, 200, 38.5), (120, 300, 38.5), (160, 400, 39.0))
    assert ttb.first_reaching(curve, 38)["step"] == 80
    assert ttb.first_reaching(curve, 40) is None
    assert ttb.best_point(curve[:3])["step"] == 80  # the earliest of equals
    assert ttb.best_point([]) is None
    checkpoints = [{"step": 10 * i} for i in range(1, 11)]
    assert [c["step"] for c in ttb.every_nth(checkpoints, 3)] == [30, 60, 90, 100]
    assert ttb.every_nth(checkpoints, 1) == checkpoints
    assert ttb.last_only(checkpoints) == checkpoints[-1:]


def test_print_table_times_best_and_ratios(capsys):
    results = {
        "opennmt": {"points": points((40, 100, 10.0), (80, 400, 38.2)), "signature": "sig"},
        "opennmt-sents64": {"points": points((40, 300, 30.0)), "signature": "sig"},
        "ours": {"points": points((50, 40, 30.0), (100, 100, 38.0)), "signature": "sig"},
    }
    ttb.print_table(results, 38.0)
    out = capsys.readouterr().out
    assert "opennmt-sents64     40      300  30.00" in out
    assert "400 s (step 80, BLEU 38.20)" in out
    assert "not reached; best 30.00 at 300 s (step 40)" in out
    assert "time to 38.0: ours / opennmt = 0.25" in out
    assert "time to 38.0: ours / opennmt-sents64 < 0.33" in out
    assert out.count("BLEU: sig") == 1


def test_print_sweep_best_first(capsys):
    results = {
        "sweep-bench": {"points": points((40, 100, 10.0), (80, 600, 30.0)), "signature": ""},
        "sweep-sents64": {"points": points((300, 600, 32.5)), "signature": ""},
    }
    setups = {"sweep-bench": BENCH, "sweep-sents64": SETUPS["sents64"]}
    ttb.print_sweep(results, setups)
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("sweep-")]
    assert rows[0].split()[:4] == ["sweep-sents64", "300", "600", "32.50"]
    assert rows[0].endswith("batch_size=64 batch_type=sents")
    assert rows[1].split()[:4] == ["sweep-bench", "80", "600", "30.00"] and rows[1].endswith("-")


def test_ours_command_reads_the_corpus_splits(tmp_path):
    tatoeba = CORPORA["tatoeba"]
    command = ttb.ours_command(
        Path("c.yaml"), tmp_path / "ours", tmp_path, tatoeba, 40, 1, ["train.max_minutes=60"]
    )
    assert f"data.train={tmp_path}/train" in command
    assert f"data.dev={tmp_path}/valid" in command
    assert "train.keep_checkpoints=1000000" in command and command[-1] == "train.max_minutes=60"
    with pytest.raises(ValueError, match="--data-dir"):
        ttb.ours_command(Path("c.yaml"), tmp_path, tmp_path, tatoeba, 40, 1, ["data.dev=x/valid"])


def test_ours_name_and_checkpoints(tmp_path):
    assert ttb.ours_name(ttb.DEFAULT_CONFIGS["multi30k"], "multi30k", []) == "ours"
    config = ttb.ROOT / "recipes/multi30k/config.yaml"
    name = ttb.ours_name(config, "multi30k", ["train.max_minutes=8"])
    assert name == "ours_multi30k-config_train.max_minutes=8"
    (tmp_path / "checkpoints").mkdir()
    for step in (100, 50):
        (tmp_path / "checkpoints" / f"step-{step:08d}.safetensors").write_bytes(b"")
    metrics = [{"step": 50, "elapsed": 12.5, "dev_loss": 3.0}, {"step": 60, "loss": 2.0}]
    metrics.append({"step": 100, "elapsed": 25.0, "dev_loss": 2.5})
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    found = ttb.ours_checkpoints(tmp_path)
    assert [(c["step"], c["seconds"]) for c in found] == [(50, 12.5), (100, 25.0)]


def test_opennmt_checkpoints_and_names():
    trained = {"checkpoints": [("/w/opennmt/model_step_40.pt", 90.0)]}
    assert ttb.opennmt_checkpoints(trained, offset=1000.0) == [
        {"step": 40, "seconds": 1090.0, "path": "/w/opennmt/model_step_40.pt"}
    ]
    assert ttb.opennmt_name("bench") == "opennmt"  # where bench.py --opennmt-trained looks
    assert ttb.opennmt_name("bench_noattn") == "opennmt-bench_noattn"
    assert ttb.opennmt_name("lr0.001", sweep=True) == "sweep-lr0.001"


class FakeSystem:
    """A System whose training and scoring are counted: BLEU is step / 10."""

    def __init__(self, steps: list[int], more_steps: list[int] | None = None, recipe=None):
        self.trained = self.scored = self.went_on = 0
        self.steps, self.more_steps = steps, more_steps

        def train() -> list[dict]:
            self.trained += 1
            return [{"step": s, "seconds": float(s), "path": f"{s}.pt"} for s in self.steps]

        def score(checkpoint: dict) -> tuple[float, str]:
            self.scored += 1
            return checkpoint["step"] / 10, "sig"

        def more(last: dict) -> list[dict]:
            self.went_on += 1
            return [{"step": s, "seconds": float(s), "path": f"{s}.pt"} for s in self.more_steps]

        self.system = ttb.System(
            "fake", recipe or {"setup": (1, 2)}, train, score, more if more_steps else None
        )


def test_curve_trains_once_and_scores_each_checkpoint_once(tmp_path):
    every = partial(ttb.every_nth, n=1)
    fake = FakeSystem([100, 200, 300, 400])
    result = ttb.curve(fake.system, tmp_path, every, 25.0)
    assert [p["step"] for p in result["points"]] == [100, 200, 300]  # stops at the target
    assert (fake.trained, fake.scored) == (1, 3)
    again = ttb.curve(fake.system, tmp_path, every, 25.0, score_all=True)
    assert [p["bleu"] for p in again["points"]] == [10.0, 20.0, 30.0, 40.0]
    assert (fake.trained, fake.scored) == (1, 4)  # only the new one
    other = FakeSystem([100], recipe={"setup": (1, 3)})
    with pytest.raises(SystemExit, match="other settings"):
        ttb.curve(other.system, tmp_path, every, 25.0)


def test_curve_goes_on_once_when_short_of_the_target(tmp_path):
    fake = FakeSystem([100, 200], more_steps=[300, 400])
    result = ttb.curve(fake.system, tmp_path, ttb.last_only, 35.0)
    assert fake.went_on == 1 and result["continued"]
    assert [p["step"] for p in result["points"]] == [200, 400]
    ttb.curve(fake.system, tmp_path, ttb.last_only, 99.0)
    assert fake.went_on == 1  # not a second time


def test_parse_args_set_ups_and_sweep():
    args = ttb.parse_args(["--data-dir", "d", "--corpus", "tatoeba", "train.max_minutes=60"])
    assert (args.setups, args.systems, args.overrides) == (
        [SWEEP_WINNER, "bench"],
        ["opennmt", "ours"],
        ["train.max_minutes=60"],
    )
    sweep = ttb.parse_args(["--data-dir", "d", "--sweep"])
    assert (sweep.setups, sweep.systems) == (SWEEP, ["opennmt"])
    two = ttb.parse_args(["--data-dir", "d", "--setup", "sents64,bench"])
    assert two.setups == ["sents64", "bench"]
    with pytest.raises(SystemExit):
        ttb.parse_args(["--data-dir", "d", "--setup", "nonesuch"])


def test_the_bench_runs_its_own_rows_at_tiny_sizes(tmp_path):
    """bench.py --smoke: ours in both families and the naive reference train a few steps on
    the embedded corpus, and the table and ratios come out (no peer environments needed)."""
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.bench",
            "--data-dir",
            str(ROOT / "data/toy"),
            "--smoke",
            "--threads",
            "1",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(out.read_text())
    for row in ("ours_context_train_fp32", "ours_attention_train_fp32", "naive_train"):
        assert results[row]["tgt_tokens_per_s"] > 0 and results[row]["rss_mib"] > 0
    assert 0.5 < results["ours_context_train_fp32"]["src_per_tgt"] < 2.0  # source per target
    assert "train context: ours / naive tutorial-style" in done.stdout
    assert results["peak_gflops"]["fp32"] > 0


def test_the_rnn_toolkits_refuse_a_transformer_set_up(tmp_path):
    """OpenNMT-py and JoeyNMT would train their RNN in its place without a word."""
    from bench.joeynmt import joeynmt_config
    from bench.opennmt import opennmt_config
    from bench.peer_setups import SETUPS

    setup = SETUPS["transformer_small"]
    with pytest.raises(ValueError, match="transformer set-ups are fairseq's; OpenNMT-py"):
        opennmt_config(tmp_path, None, 10, setup)
    with pytest.raises(ValueError, match="transformer set-ups are fairseq's; JoeyNMT"):
        joeynmt_config(tmp_path, None, 10, setup)

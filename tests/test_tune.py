"""Choosing beam size and length penalty on dev: tune scores each pair as sacrebleu does, writes
the best into config.yaml (ties: the cheaper search), and refuses mistakes in one line."""

import random
import shutil
from types import SimpleNamespace

import pytest
import sacrebleu
import torch
import yaml

from tests.conftest import ENGLISH, GERMAN
from translate import tune
from translate.cli import main
from translate.config import Config
from translate.decoding import DecodeOptions, DecodingError
from translate.modeldir import read_config, write_config
from translate.translator import Translator
from translate.tune import tune_decoding

REFS = [
    "the cat sat on the mat today",
    "a dog ran in the park with us",
    "we read two books in the old house",
    "the car is red and the tree is green",
]


def cut(words: int) -> list[str]:
    """The references with their last ``words`` words dropped: a worse translation."""
    return [" ".join(ref.split()[: len(ref.split()) - words]) for ref in REFS]


class ScriptedTranslator:
    """Stands in for a model: what each (beam, length penalty) translates to is written in the
    test, so each pair's BLEU is known without tune."""

    def __init__(self, cfg: Config, outputs: dict):
        self.cfg, self.outputs, self.asked = cfg, outputs, []

    def translate_batch(self, sources: list[str], options: DecodeOptions) -> list:
        self.asked.append(options)
        hyps = self.outputs[options.beam, options.length_penalty]  # no other pair was planned
        return [SimpleNamespace(text=hyp) for hyp in hyps]


@pytest.fixture
def scripted(tmp_path, monkeypatch):
    """A model directory whose config has beam 4 and length penalty 0.6 (in no grid below),
    and a function that makes tune translate with a script of outputs there."""
    cfg = Config()
    cfg.decode.beam, cfg.decode.length_penalty = 4, 0.6
    write_config(tmp_path, cfg)

    def script(outputs: dict) -> ScriptedTranslator:
        translator = ScriptedTranslator(read_config(tmp_path / "config.yaml")[0], outputs)
        monkeypatch.setattr(tune.Translator, "from_dirs", lambda paths: translator)
        return translator

    return tmp_path, script


def bleu(hyps: list[str]) -> float:
    return round(sacrebleu.BLEU().corpus_score(hyps, [REFS]).score, 2)


def saved_decode(model_dir) -> tuple:
    decode = yaml.safe_load((model_dir / "config.yaml").read_text())["decode"]
    return decode["beam"], decode["length_penalty"]


def test_tune_picks_the_best_pair_and_the_cheaper_search_of_equals(scripted):
    model_dir, script = scripted
    outputs = {
        (5, 0.0): cut(2),
        (5, 1.0): REFS,  # as good as (3, 1.0), listed first, but a wider search
        (5, 2.0): cut(1),
        (3, 0.0): cut(1),
        (3, 1.0): REFS,
        (3, 2.0): cut(3),
        (1, 0.6): cut(2),  # greedy: tried once, with the penalty it leaves alone
    }
    translator = script(outputs)
    result = tune_decoding(
        model_dir, ["src"] * 4, REFS, [5, 3, 1], [0.0, 1.0, 2.0], progress=lambda line: None
    )
    assert [(o.beam, o.length_penalty) for o in translator.asked] == list(outputs)
    assert result["all"] == [
        {"beam": beam, "length_penalty": alpha, "bleu": bleu(hyps)}
        for (beam, alpha), hyps in outputs.items()
    ]
    assert result["best"] == {"beam": 3, "length_penalty": 1.0, "bleu": 100.0}
    assert saved_decode(model_dir) == (3, 1.0)


def test_when_greedy_ties_it_wins_and_keeps_the_models_penalty(scripted):
    model_dir, script = scripted
    script({(3, 2.0): REFS, (1, 0.6): REFS, (3, 0.0): cut(1)})
    result = tune_decoding(
        model_dir, ["src"] * 4, REFS, [3, 1], [2.0, 0.0], progress=lambda line: None
    )
    assert result["best"] == {"beam": 1, "length_penalty": 0.6, "bleu": 100.0}
    assert saved_decode(model_dir) == (1, 0.6)


def test_equal_pairs_are_tried_once(scripted):
    model_dir, script = scripted
    translator = script({(3, 1.0): cut(1), (1, 0.6): REFS})
    lines = []
    tune_decoding(model_dir, ["src"] * 4, REFS, [3, 1, 3, 1], [1.0, 1.0], progress=lines.append)
    assert [(o.beam, o.length_penalty) for o in translator.asked] == [(3, 1.0), (1, 0.6)]
    assert lines == [
        f"beam  3  length_penalty 1.00  BLEU {bleu(cut(1)):6.2f}",
        "beam  1  length_penalty   -   BLEU 100.00",
    ]


def test_tune_through_the_cli_writes_what_the_model_translates_best(trained_dir, tmp_path, capsys):
    """A real model, with references made of its own beam-3, alpha-2 output: that pair alone
    scores 100, so tune must find it among pairs listed before and after it."""
    model_dir = tmp_path / "m"
    shutil.copytree(trained_dir, model_dir)
    rng = random.Random(0)  # sentences longer than the training ones: the penalty shows there
    sources = [" ".join(rng.choice(GERMAN) for _ in range(rng.randint(7, 12))) for _ in range(30)]
    beams, alphas = [5, 3, 1], [0.0, 5.0, 2.0]
    translator = Translator.from_dir(model_dir)
    outputs = {
        (beam, alpha): [
            t.text
            for t in translator.translate_batch(
                sources, DecodeOptions(beam=beam, length_penalty=alpha)
            )
        ]
        for beam in beams
        for alpha in alphas
    }
    refs = outputs[3, 2.0]
    assert [pair for pair, hyps in outputs.items() if hyps == refs] == [(3, 2.0)]
    (tmp_path / "dev.de").write_text("".join(s + "\n" for s in sources), encoding="utf-8")
    (tmp_path / "dev.en").write_text("".join(r + "\n" for r in refs), encoding="utf-8")
    threads = torch.get_num_threads()
    try:
        command = ["tune", "-m", str(model_dir), "--src", str(tmp_path / "dev.de")]
        assert (
            main(
                [
                    *command,
                    "--ref",
                    str(tmp_path / "dev.en"),
                    "--beams",
                    "5,3,1",
                    "--alphas",
                    "0,5,2",
                ]
            )
            == 0
        )
    finally:
        torch.set_num_threads(threads)
    out, err = capsys.readouterr()
    assert (
        out
        == f"best: beam 3, length_penalty 2.0, BLEU 100.0 (written to {model_dir}/config.yaml)\n"
    )
    assert len(err.splitlines()) == 7  # 3 beams x 3 alphas, greedy once
    assert saved_decode(model_dir) == (3, 2.0)
    assert Translator.from_dir(model_dir).translate(sources) == refs


@pytest.mark.parametrize(
    "flags, dev, message",
    [
        ([], ("hund\nkatze\n", "dog\n"), "line counts differ: {dev}.de has 2, {dev}.en has 1"),
        ([], ("", ""), "the dev set is empty: tune needs sentences to score"),
    ],
    ids=["lengths", "empty"],
)
def test_tune_mistakes_are_one_line_and_leave_the_config(
    flags, dev, message, trained_dir, tmp_path, capsys
):
    model_dir = tmp_path / "m"
    shutil.copytree(trained_dir, model_dir)
    config = (model_dir / "config.yaml").read_bytes()
    stem = tmp_path / "dev"
    for suffix, text in zip((".de", ".en"), dev):
        stem.with_suffix(suffix).write_text(text, encoding="utf-8")
    command = ["tune", "-m", str(model_dir), "--src", f"{stem}.de", "--ref", f"{stem}.en"]
    assert main([*command, *flags]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err == f"translate: error: {message.format(dev=stem)}\n"
    assert (model_dir / "config.yaml").read_bytes() == config


def test_every_choice_is_checked_as_decoding_options_before_any_work(tmp_path):
    nowhere = tmp_path / "no-model"  # refused before the model directory is even read
    with pytest.raises(DecodingError, match=r"^beam must be an integer >= 1, got 0$"):
        tune_decoding(nowhere, ["hund"], ["dog"], beams=[3, 0], alphas=[1.0])
    with pytest.raises(DecodingError, match="^length_penalty must be a number from 0 to 10"):
        tune_decoding(nowhere, ["hund"], ["dog"], beams=[1, 3], alphas=[0.0, -1.0])


def test_translate_applies_the_length_penalty_tune_wrote(trained_dir, tmp_path, capsys):
    model_dir = tmp_path / "m"
    shutil.copytree(trained_dir, model_dir)
    rng = random.Random(0)  # sentences longer than the training ones: the penalty shows there
    sources = [" ".join(rng.choice(GERMAN) for _ in range(rng.randint(7, 12))) for _ in range(30)]
    (model_dir / "dev.de").write_text("".join(s + "\n" for s in sources), encoding="utf-8")
    refs = [" ".join(ENGLISH[word] for word in s.split()) for s in sources]
    threads = torch.get_num_threads()

    def translate(*flags: str) -> str:
        command = ["translate", "-m", str(model_dir), "-i", str(model_dir / "dev.de"), *flags]
        assert main([*command, "--threads", "1"]) == 0
        return capsys.readouterr().out

    before = translate()  # the model's own length penalty
    assert Translator.from_dir(model_dir).cfg.decode.length_penalty == 1.0
    tune_decoding(model_dir, sources, refs, beams=[5], alphas=[5.0], progress=lambda line: None)
    try:
        assert translate() == translate("--beam", "5", "--length-penalty", "5") != before
    finally:
        torch.set_num_threads(threads)


def test_tune_is_refused_while_a_training_run_holds_the_directory(trained_dir, tmp_path, capsys):
    from translate.data.outdir import hold

    model_dir = tmp_path / "m"
    shutil.copytree(trained_dir, model_dir)
    (tmp_path / "src").write_text("hund katze\n", encoding="utf-8")
    (tmp_path / "ref").write_text("dog cat\n", encoding="utf-8")
    before = (model_dir / "config.yaml").read_bytes()
    args = ["tune", "-m", str(model_dir), "--src", str(tmp_path / "src")]
    with hold(model_dir):  # as `translate train` holds it for the run's life
        assert main([*args, "--ref", str(tmp_path / "ref"), "--beams", "1,2"]) == 1
    err = capsys.readouterr().err
    assert f"translate: error: {model_dir} is in use by another translate process" in err
    assert (model_dir / "config.yaml").read_bytes() == before

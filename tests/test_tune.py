import shutil

import pytest
import torch
import yaml

from translate.config import Config
from translate.data import pair_batch
from translate.model import build_model, reverse_padded
from translate.prepare import save_state
from translate.train import batch_loss
from translate.translate import Translator
from translate.tune import average_checkpoints, average_state_dicts, tune_decoding
from translate.vocab import PAD


def test_averaging_identical_checkpoints_is_the_identity(trained_dir, tmp_path):
    model_dir = tmp_path / "m"
    shutil.copytree(trained_dir, model_dir)
    weights = torch.load(model_dir / "model.pt", weights_only=True)
    (model_dir / "checkpoints").mkdir()
    for step in (10, 20, 30):
        save_state(weights, model_dir / "checkpoints" / f"step-{step:08d}.pt")
    used = average_checkpoints(model_dir, last=3)
    assert len(used) == 3
    averaged = torch.load(model_dir / "model.pt", weights_only=True)
    assert all(torch.equal(averaged[k], weights[k]) for k in weights)
    assert (model_dir / "model.single.pt").is_file()


def test_averaging_takes_the_mean(tmp_path):
    for i, value in enumerate((1.0, 2.0, 6.0)):
        save_state({"w": torch.full((2,), value)}, tmp_path / f"{i}.pt")
    mean = average_state_dicts(sorted(tmp_path.glob("*.pt")))
    assert mean["w"].tolist() == [3.0, 3.0]


def test_label_smoothing_zero_is_plain_cross_entropy():
    cfg = Config()
    cfg.model.emb_dim, cfg.model.hidden_dim = 8, 16
    torch.manual_seed(0)
    model = build_model(cfg.model, 20, 20).eval()
    batch = pair_batch([[5, 6, 7], [8]], [[9, 10], [11, 12, 13]])
    logits = model(batch.src_tokens, batch.src_lengths, batch.tgt_in)
    log_probs = logits.log_softmax(-1)
    target = batch.tgt_out
    manual = -log_probs.gather(2, target.unsqueeze(2)).squeeze(2)[target != PAD].sum()
    loss = batch_loss(model, batch, torch.device("cpu"), cfg, smoothing=0.0)
    assert float(loss) == pytest.approx(float(manual), rel=1e-5)
    # with smoothing e: (1 - e) * nll + e * the mean of -log p over the vocabulary
    smoothed = batch_loss(model, batch, torch.device("cpu"), cfg, smoothing=0.1)
    uniform = -log_probs.mean(-1)[target != PAD].sum()
    assert float(smoothed) == pytest.approx(float(0.9 * manual + 0.1 * uniform), rel=1e-5)


def test_reverse_padded_keeps_padding_in_place():
    tokens = torch.tensor([[5, 6, 7, 3], [8, 3, 0, 0]])
    assert reverse_padded(tokens, torch.tensor([4, 2])).tolist() == [[3, 7, 6, 5], [3, 8, 0, 0]]


def test_tune_writes_the_best_choice(trained_dir, tmp_path):
    model_dir = tmp_path / "m"
    shutil.copytree(trained_dir, model_dir)
    sources = ["hund katze", "baum auto buch", "haus", "tisch stuhl hund"]
    refs = ["dog cat", "tree car book", "house", "table chair dog"]
    result = tune_decoding(
        model_dir, sources, refs, beams=[1, 3], alphas=[0.0, 1.0], progress=lambda line: None
    )
    assert [(r["beam"], r["length_penalty"]) for r in result["all"]] == [
        (1, 0.0),
        (3, 0.0),
        (3, 1.0),
    ]
    saved = yaml.safe_load((model_dir / "config.yaml").read_text())["decode"]
    assert (saved["beam"], saved["length_penalty"]) == (
        result["best"]["beam"],
        result["best"]["length_penalty"],
    )
    assert result["best"]["bleu"] == max(r["bleu"] for r in result["all"])
    assert Translator.from_dir(model_dir).cfg.decode.beam == saved["beam"]


def test_n_best_lists(trained_dir):
    translator = Translator.from_dir(trained_dir)
    nbest = translator.translate_nbest(["hund katze", ""], n=3, beam=4)
    assert [len(n) for n in nbest] == [3, 3]
    texts, scores = zip(*nbest[0])
    assert texts[0] == "dog cat" and len(set(texts)) == 3
    assert list(scores) == sorted(scores, reverse=True)
    assert nbest[1] == [("", 0.0)] * 3
    with pytest.raises(Exception, match="between 1 and the beam size"):
        translator.translate_nbest(["hund"], n=5, beam=4)

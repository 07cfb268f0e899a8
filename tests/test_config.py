"""The typed config: YAML and overrides, closest-key suggestions, and checks of values."""

import pytest

from translate.config import Config, ConfigError, config_from_dict, config_to_dict, load_config


def test_defaults_round_trip():
    cfg = Config()
    assert config_from_dict(config_to_dict(cfg)) == cfg


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: {cell: lstm, hidden_dim: 64}\ntrain: {lr: 0.01}\n")
    cfg = load_config(path, ["train.lr=0.5", "model.bidirectional=false", "out_dir=x/y"])
    assert cfg.model.cell == "lstm" and cfg.model.hidden_dim == 64
    assert cfg.train.lr == 0.5 and cfg.model.bidirectional is False and cfg.out_dir == "x/y"
    assert cfg.train.clip_norm == Config().train.clip_norm  # untouched keys keep defaults


def test_unknown_key_suggests_the_closest():
    with pytest.raises(ConfigError, match=r"'model\.hiden_dim'.*Did you mean 'model\.hidden_dim'"):
        config_from_dict({"model": {"hiden_dim": 5}})
    with pytest.raises(ConfigError, match="unknown config key 'modle'"):
        config_from_dict({"modle": {}})


@pytest.mark.parametrize(
    "values, message",
    [
        ({"model": {"hidden_dim": "big"}}, "'model.hidden_dim' must be int"),
        ({"model": {"bidirectional": 1}}, "'model.bidirectional' must be bool"),
        ({"model": {"cell": "transformer"}}, "'model.cell' must be one of rnn, gru, lstm"),
        ({"train": {"lr": -1}}, "'train.lr' must be > 0"),
        ({"model": {"dropout": 1.5}}, r"'model.dropout' must be in \[0, 1\)"),
        ({"train": 3}, "'train' must be a mapping"),
        ({"decode": {"beam": 0}}, "'decode.beam' must be an integer >= 1, got 0"),
        ({"decode": {"length_penalty": -1}}, "'decode.length_penalty' must be a number from 0"),
        ({"decode": {"batch_size": 0}}, "'decode.batch_size' must be > 0"),
        ({"train": {"patience": -1}}, r"'train.patience' must be >= 0, got -1"),
        ({"train": {"threads": -2}}, r"'train.threads' must be >= 0, got -2"),
        ({"train": {"max_minutes": -5}}, r"'train.max_minutes' must be >= 0, got -5"),
        ({"train": {"log_every": 0}}, r"'train.log_every' must be > 0, got 0"),
        ({"train": {"max_epochs": 0}}, r"'train.max_epochs' must be > 0, got 0"),
        ({"train": {"lr_decay": 0}}, r"'train.lr_decay' must be in \(0, 1\], got 0"),
        ({"decode": {"max_len_a": -1}}, r"'decode.max_len_a' must be >= 0, got -1"),
        ({"data": {"character_coverage": 1.5}}, r"'data.character_coverage' must be in \(0, 1\]"),
        (
            {"data": {"train": ["a", {"path": "b", "weight": -1}]}},
            r"'data.train\[1\].weight' must be >= 0, got -1",
        ),
    ],
)
def test_bad_values_name_the_key(values, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(values)


def test_bad_override_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(None, ["train.lr"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_every_recipe_config_loads():
    from pathlib import Path

    configs = sorted(Path(__file__).resolve().parent.parent.glob("recipes/*/*.yaml"))
    assert len(configs) >= 3
    for path in configs:
        load_config(path)  # raises on an unknown key or a wrong value


def test_dot_attention_needs_equal_sizes():
    from translate.config import ConfigError, config_from_dict

    with pytest.raises(ConfigError, match="'general' or a unidirectional encoder"):
        config_from_dict({"model": {"attention": "dot", "bidirectional": True}})


def test_source_tying_needs_a_joint_vocabulary():
    from translate.config import ConfigError, config_from_dict

    with pytest.raises(ConfigError, match="needs 'model.tie_embeddings' and 'data.joint_vocab'"):
        config_from_dict(
            {
                "model": {"tie_embeddings": True, "tie_source_embedding": True},
                "data": {"joint_vocab": False},
            }
        )


def test_sampling_alpha_is_checked():
    from translate.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="sampling_alpha"):
        load_config(None, ["data.sampling_alpha=-1"])
    with pytest.raises(ConfigError, match="unigram"):
        load_config(None, ["data.spm_type=bpe", "data.sampling_alpha=0.1"])


def test_yaml_that_does_not_parse_is_one_line_naming_where(tmp_path):
    with pytest.raises(ConfigError) as refused:
        load_config(None, ["train.lr=[1"])
    assert str(refused.value) == (
        "override 'train.lr=[1': the value is not valid YAML "
        "(expected ',' or ']', but got '<stream end>' at line 1, column 3)"
    )
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: [1\n")
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    assert str(refused.value) == (
        f"{path} is not valid YAML: expected ',' or ']', but got '<stream end>' at line 3, column 1"
    )

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


def test_format_1_model_directories_keep_unscaled_embeddings(tmp_path):
    """Format 1 read tied tables unscaled; its models must translate as they were trained."""
    import yaml

    from translate.config import FORMAT_VERSION, dump_model_config, read_model_config

    path = tmp_path / "config.yaml"
    path.write_bytes(dump_model_config(Config()))
    assert read_model_config(path).model.scale_embeddings is True
    values = yaml.safe_load(path.read_text())
    assert values["format_version"] == FORMAT_VERSION == 2
    values["format_version"] = 1
    del values["model"]["scale_embeddings"]
    path.write_text(yaml.safe_dump(values))
    assert read_model_config(path).model.scale_embeddings is False

"""The model directory: its file names, atomic writes, safe loading and the upgrade of old formats.

A model directory holds what translation needs (``config.yaml``, the SentencePiece model(s),
``model.safetensors``) and, while a run trains, what resuming needs (``checkpoint.pt``, the
encoded data). Weights are safetensors, the format models are shared in: nothing in them can run
and they load memory-mapped. ``checkpoint.pt`` (optimiser and random state, never shared) stays a
torch file, loaded with ``weights_only=True`` so that no code in it runs either.
``config.yaml`` carries the directory's format version; files of an older format are upgraded
when read, and every weight file in the directory is upgraded before a newer config is written
over an older one, so the version always describes all of them.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes

from .config import Config, ConfigError, config_from_dict, config_to_dict, yaml_problem
from .data.vocab import Vocab
from .errors import UserError, is_integer

CONFIG = "config.yaml"
WEIGHTS = "model.safetensors"  # the best weights so far: a state dict
CHECKPOINT = "checkpoint.pt"  # the last training state, to resume
METRICS = "metrics.jsonl"
PREPARED = "prepared"  # the encoded training data: Arrow shards and their manifest
CACHE = "cache.pt"  # what older versions kept the encoded training data in
RECENT = "checkpoints"  # weights of the last validations, for averaging: step-N.safetensors
SINGLE = "model.single.safetensors"  # the weights training chose, once averaging replaced them

FORMAT_VERSION = 4  # bumped when an old reader would misread the directory
# 2: model.scale_embeddings (format 1 had none: its tied tables were read unscaled)
# 3: the decoder's first RNN layer as decoder.rnn.{input,context,hidden}, the rest decoder.upper
# 4: weights in model.safetensors (and .safetensors for the single model and checkpoints)


class ModelDirError(UserError):
    """A model directory that cannot be loaded."""


def vocab_paths(model_dir: str | Path, joint: bool) -> tuple[Path, Path]:
    """Where the source and target SentencePiece models live in a model directory."""
    model_dir = Path(model_dir)
    if joint:
        return model_dir / "spm.model", model_dir / "spm.model"
    return model_dir / "spm.src.model", model_dir / "spm.tgt.model"


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file, flush it to disk, then rename over ``path``.

    A failure (a full disk, say) leaves the previous ``path`` as it was and is reported as a
    :class:`UserError` naming the file.
    """
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise UserError(
            f"cannot write {path} ({err.strerror or err}); the previous file, if any, is intact"
        ) from None


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` through :func:`atomic_write`: never half a file where a good one was."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write(path, buffer.getvalue())


def _torch_name(path: Path) -> Path:
    """Where formats 1-3 kept the weight file ``path``: the same name ending in .pt."""
    return path.with_name(path.name.removesuffix(".safetensors") + ".pt")


def load_tensors(path: Path) -> Any:
    """``torch.load`` onto the CPU without running code from the file; a truncated, planted or
    foreign file is a :class:`ModelDirError` naming it, in one line."""
    try:
        with warnings.catch_warnings():  # torch warns of pickle protocols: the error says it all
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's message advises weights_only=False, which would run the file's code: never
        # pass that on; name what the file asked for instead
        if "Weights only load failed" not in str(err):
            raise ModelDirError(f"{path} cannot be loaded: it is not a weight file") from None
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        what = f" (it refers to {found.group(1)})" if found else ""
        raise ModelDirError(
            f"{path} holds something other than tensors{what} and was not loaded: a weight "
            "file written by translate holds tensors only"
        ) from None
    except OSError as err:
        raise ModelDirError(f"{path} cannot be read ({err.strerror or err})") from None
    except EOFError:
        raise ModelDirError(f"{path} cannot be loaded: it is empty") from None
    except RuntimeError as err:
        if "zip archive" not in str(err):
            raise ModelDirError(f"{path} cannot be loaded: {_first_line(err)}") from None
        raise ModelDirError(
            f"{path} cannot be loaded: it is truncated or damaged (not a complete torch archive)"
        ) from None
    except Exception:  # a foreign format fails inside the unpickler in many ways
        raise ModelDirError(f"{path} cannot be loaded: it is not a weight file") from None


def _first_line(err: Exception) -> str:
    """An exception's message cut to its first line: the CLI prints errors as one line."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


# --- config.yaml ------------------------------------------------------------------------------


def dump_config(cfg: Config) -> bytes:
    """The YAML of a model directory's config.yaml, stamped with the current format version."""
    values = {"format_version": FORMAT_VERSION, **config_to_dict(cfg)}
    return yaml.safe_dump(values, sort_keys=False).encode("utf-8")


def read_config(path: Path) -> tuple[Config, int]:
    """A model directory's config, upgraded to the current format, and the format it had; any
    fault is a one-line :class:`ConfigError` naming ``path``."""
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"{path} cannot be read ({err.strerror or err})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not valid YAML: it is not UTF-8 text") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {yaml_problem(err)}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path} does not hold a config")
    version = values.pop("format_version", 1)
    if not is_integer(version) or version < 1:
        raise ConfigError(f"{path}: format_version must be an integer >= 1, got {version!r}")
    if version > FORMAT_VERSION:
        raise ConfigError(
            f"{path} has model-directory format {version!r}; this translate reads format "
            f"{FORMAT_VERSION} or older: upgrade translate"
        )
    if version < 2 and isinstance(values.get("model"), dict):
        values["model"].setdefault("scale_embeddings", False)
    try:
        return config_from_dict(values), version
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def write_config(model_dir: Path, cfg: Config) -> None:
    """Write ``config.yaml`` in the current format, first upgrading the directory's weight files
    if the config it replaces is older."""
    path = model_dir / CONFIG
    if path.is_file():
        old_cfg, version = read_config(path)
        if version < FORMAT_VERSION:
            _upgrade_weight_files(model_dir, old_cfg, version)
    atomic_write(path, dump_config(cfg))


# --- weights ----------------------------------------------------------------------------------


def save_weights(weights: dict[str, torch.Tensor], path: str | Path) -> None:
    """Write a state dict as safetensors through :func:`atomic_write`.

    safetensors stores no tensor twice, so one held under several names (tied embeddings) is
    written once and its other names are kept in the header's ``aliases``; other views of a
    stored tensor's memory are written as copies.
    """
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    first: dict[tuple, str] = {}  # a view of memory -> the first name holding it
    storages: set[tuple] = set()
    for name, tensor in weights.items():
        storage = (tensor.device, tensor.untyped_storage().data_ptr())
        view = (*storage, tensor.storage_offset(), tensor.shape, tensor.stride(), tensor.dtype)
        if tensor.numel() and view in first:
            aliases[name] = first[view]
            continue
        if tensor.numel() and (storage in storages or not tensor.is_contiguous()):
            tensor = tensor.clone(memory_format=torch.contiguous_format)
        first[view] = name
        storages.add(storage)
        tensors[name] = tensor
    metadata = {"format": "pt", "aliases": json.dumps(aliases, sort_keys=True)}
    atomic_write(Path(path), safetensors_bytes(tensors, metadata))


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in a .safetensors file (memory-mapped; tied names restored as one tensor)
    or, from a directory of format 3 or older, a .pt file; anything else, or a damaged file, is
    a one-line :class:`ModelDirError` naming it."""
    path = Path(path)
    if path.suffix != ".safetensors":
        weights = load_tensors(path)
    else:
        try:
            with safe_open(path, framework="pt", device="cpu") as file:
                metadata = file.metadata() or {}
                weights = {name: file.get_tensor(name) for name in file.keys()}
        except OSError as err:
            raise ModelDirError(f"{path} cannot be read ({err.strerror or err})") from None
        except SafetensorError as err:
            raise ModelDirError(f"{path} cannot be loaded: {_problem(path, err)}") from None
        try:  # each alias names a stored tensor and is not stored itself
            aliases = json.loads(metadata.get("aliases", "{}"))
            if not aliases.keys().isdisjoint(weights):
                raise KeyError(aliases.keys() & weights.keys())
            weights |= {alias: weights[name] for alias, name in aliases.items()}
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ModelDirError(
                f"{path} cannot be loaded: its header's aliases are damaged"
            ) from None
    if not isinstance(weights, dict) or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) and value.is_floating_point()
        for key, value in weights.items()
    ):
        raise ModelDirError(f"{path} does not hold model weights (named float tensors)")
    return weights


def _problem(path: Path, err: SafetensorError) -> str:
    """Why safetensors refused a file, in words: its first 8 bytes give the header's length,
    and the header where each tensor ends, so a cut-off file can be told from a foreign one."""
    data = path.read_bytes()
    length = int.from_bytes(data[:8], "little")
    if not data:
        return "it is empty"
    if data[8:9] != b"{" or length > 100_000_000:  # safetensors' own limit on a header
        return "it is not a safetensors file"
    end = 8 + length  # where the header ends; then the last tensor, if the header is whole
    try:
        header = json.loads(data[8:end])
        end += max(value["data_offsets"][1] for key, value in header.items() if key[:2] != "__")
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        pass
    if end > len(data):
        return f"it is truncated: it has {len(data)} bytes of the {end} its header announces"
    return f"it is damaged ({str(err).removeprefix('Error while deserializing header: ')})"


def weights_file(model_dir: Path, version: int = FORMAT_VERSION) -> Path:
    """A directory's weights: ``model.safetensors``, else the ``model.pt`` of formats 1-3. If
    neither is there, the one its format ``version`` would hold."""
    path = model_dir / WEIGHTS
    if path.is_file() or (version >= 4 and not _torch_name(path).is_file()):
        return path
    return _torch_name(path)


def read_weights(path: Path, cfg: Config, version: int) -> dict[str, torch.Tensor]:
    """The weights in ``path``, saved in model-directory format ``version``, in the current
    layout. (Upgrading leaves weights already in it as they are, so the .safetensors files of an
    upgrade cut short, written before the older config.yaml was replaced, read right too.)"""
    weights = load_weights(path)
    try:
        return upgrade_weights(weights, cfg, version)
    except (KeyError, IndexError, ValueError, RuntimeError):
        raise ModelDirError(
            f"{path} does not match the config.yaml beside it (format {version}): the weights "
            "of another model, or a damaged config"
        ) from None


def upgrade_weights(weights: dict, cfg: Config, version: int) -> dict:
    """A state dict saved in model-directory format ``version``, in the current layout."""
    if version < 3:
        weights = _decoder_rnn_to_format_3(weights, cfg)
    return weights


def _decoder_rnn_to_format_3(weights: dict, cfg: Config) -> dict:
    """Formats 1-2 kept the decoder's RNN as one nn.RNN ``decoder.rnn`` over [word; context;
    attended] or, later in format 2, its first layer as ``decoder.rnn_{input,context,hidden}``
    with the layers above in ``decoder.rnn_upper``."""
    weights = dict(weights)
    one_rnn = "decoder.rnn.weight_ih_l0"
    if one_rnn in weights:
        w_ih = weights.pop(one_rnn)
        words = cfg.model.emb_dim
        context = weights["decoder.readout_context.weight"].size(1)
        weights["decoder.rnn_input.weight"] = torch.cat(
            [w_ih[:, :words], w_ih[:, words + context :]], dim=1
        )
        weights["decoder.rnn_context.weight"] = w_ih[:, words : words + context]
        weights["decoder.rnn_context.bias"] = weights.pop("decoder.rnn.bias_ih_l0")
        weights["decoder.rnn_hidden.weight"] = weights.pop("decoder.rnn.weight_hh_l0")
        weights["decoder.rnn_hidden.bias"] = weights.pop("decoder.rnn.bias_hh_l0")
        for key in [k for k in weights if k.startswith("decoder.rnn.")]:
            name, layer = key.removeprefix("decoder.rnn.").rsplit("_l", 1)
            weights[f"decoder.rnn_upper.{name}_l{int(layer) - 1}"] = weights.pop(key)
    renamed = {
        "decoder.rnn_input.": "decoder.rnn.input.",
        "decoder.rnn_context.": "decoder.rnn.context.",
        "decoder.rnn_hidden.": "decoder.rnn.hidden.",
        "decoder.rnn_upper.": "decoder.upper.",
    }
    for key in list(weights):
        for old, new in renamed.items():
            if key.startswith(old):
                weights[new + key.removeprefix(old)] = weights.pop(key)
    return weights


def _upgrade_weight_files(model_dir: Path, cfg: Config, version: int) -> None:
    """Rewrite every weight file of a directory of format ``version`` in the current layout, as
    safetensors (each .pt file goes once its .safetensors is written)."""
    for path in [
        _torch_name(model_dir / WEIGHTS),
        _torch_name(model_dir / SINGLE),
        *sorted(model_dir.glob(f"{RECENT}/step-*.pt")),
    ]:
        if path.is_file():
            save_weights(read_weights(path, cfg, version), path.with_suffix(".safetensors"))
            path.unlink()
    checkpoint = model_dir / CHECKPOINT
    if checkpoint.is_file():
        saved = load_tensors(checkpoint)
        saved["model"] = upgrade_weights(saved["model"], cfg, version)
        atomic_save(saved, checkpoint)


# --- the whole directory ----------------------------------------------------------------------


@dataclass
class ModelFiles:
    """What a model directory holds for translation, checked to belong together."""

    cfg: Config
    src_vocab: Vocab
    tgt_vocab: Vocab
    weights: dict  # in the current layout
    weights_path: Path  # the file they were read from


def read_model_dir(path: str | Path) -> ModelFiles:
    """Read config.yaml, the SentencePiece model(s) and the weights (model.safetensors, or the
    model.pt of an older directory), naming any file at fault."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ModelDirError(f"{path} is a file, not a model directory")
    if not path.is_dir():
        raise ModelDirError(f"model directory not found: {path}")
    config_path = path / CONFIG
    if not config_path.is_file():
        raise ModelDirError(f"{path} is not a model directory: {CONFIG} is missing")
    try:
        cfg, version = read_config(config_path)
    except ConfigError as err:
        raise ModelDirError(str(err)) from None
    paths = vocab_paths(path, cfg.data.joint_vocab)
    vocabs = []
    for vocab_path in paths:
        if not vocab_path.is_file():
            raise ModelDirError(f"{vocab_path} is missing")
        try:
            vocabs.append(Vocab.load(vocab_path))
        except OSError as err:
            raise ModelDirError(f"{vocab_path} cannot be read ({err.strerror or err})") from None
        except ValueError:  # SentencePiece's own words name its C++ source, not the file
            raise ModelDirError(
                f"{vocab_path} is not a SentencePiece model (damaged, or another kind of file)"
            ) from None
    weights_path = weights_file(path, version)
    if not weights_path.is_file():
        raise ModelDirError(f"{weights_path} is missing (has training saved a model yet?)")
    weights = read_weights(weights_path, cfg, version)
    sides = ("source", "encoder.embed.weight"), ("target", "decoder.embed.weight")
    for (side, key), vocab, vocab_path in zip(sides, vocabs, paths):
        rows = weights[key].shape[0] if key in weights else None
        if rows is not None and rows != len(vocab):
            raise ModelDirError(
                f"{vocab_path} has {len(vocab)} pieces but {weights_path} was trained with a "
                f"{side} vocabulary of {rows}: they come from different trainings"
            )
    return ModelFiles(cfg, vocabs[0], vocabs[1], weights, weights_path)

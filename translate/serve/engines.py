"""The engine ``translate serve`` translates with: PyTorch's Translator over model directories
(one, or an ensemble), or the ONNX engine over one export folder; and what the server reads of
each that the two hold differently. Each is imported only when chosen, so that ``--engine
onnx`` runs where torch is not installed."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..config import DecodeConfig
from ..decoding import DecodeOptions
from ..errors import UserError
from ..export.manifest import MANIFEST
from .answers import export_json, model_json
from .options import ServeOptions
from .requests import ApiError

if TYPE_CHECKING:
    from ..export.engine import OnnxTranslator
    from ..translator import Translator

MODEL_CONFIG = "config.yaml"  # what makes a model directory: translate.modeldir.CONFIG (torch)


def load_translator(model_dirs: list[Path], options: ServeOptions) -> Translator | OnnxTranslator:
    """The translator of ``options.engine`` over ``model_dirs``, loaded as the runtime options
    say; a folder of the other engine is refused in one line that says what to do."""
    if options.engine == "onnx":
        return _load_export(model_dirs, options)
    for path in model_dirs:
        if (path / MANIFEST).is_file() and not (path / MODEL_CONFIG).is_file():
            raise UserError(f"{path} is an ONNX export: serve it with --engine onnx")
    from ..runtime import set_threads
    from ..translator import Translator

    set_threads(options.threads)
    return Translator.from_dirs(model_dirs, options.device, options.dtype, options.quantize)


def _load_export(model_dirs: list[Path], options: ServeOptions) -> OnnxTranslator:
    """One export folder in ONNX Runtime: its int8 graphs with --quantize int8, --threads
    threads per graph."""
    if len(model_dirs) != 1:
        raise UserError("--engine onnx serves one export (-m once); ensembles: --engine torch")
    path = model_dirs[0]
    if (path / MODEL_CONFIG).is_file() and not (path / MANIFEST).is_file():
        raise UserError(
            f"{path} is a model directory, not an export: translate export -m {path} -o OUT, "
            "then serve OUT with --engine onnx"
        )
    try:
        from ..export.engine import OnnxTranslator
    except ImportError as err:
        raise UserError(
            f"the ONNX engine needs {err.name or 'onnxruntime'}: pip install 'translate[onnx]'"
        ) from None
    translator = OnnxTranslator.from_dir(
        path, int8=options.quantize == "int8", threads=options.threads
    )
    data = translator.manifest.data
    if not all(isinstance(data.get(key), str) for key in ("src_lang", "tgt_lang")):
        raise UserError(f"{path / MANIFEST} is damaged: it names no languages")
    return translator


def describe(
    translator: Translator | OnnxTranslator,
    model_dirs: list[Path],
    options: ServeOptions,
    defaults: DecodeOptions,
) -> dict:
    """What ``GET /model`` says: of the model directories, or of the export."""
    if options.engine == "onnx":
        return export_json(translator, model_dirs[0], options, defaults)
    return model_json(translator, model_dirs, options, defaults)


def length_limits(translator: Translator | OnnxTranslator, options: ServeOptions) -> DecodeConfig:
    """The search's length limits (max_len_a, max_len_b): the config's, or the manifest's."""
    if options.engine == "onnx":
        decode = translator.decode
        return DecodeConfig(max_len_a=decode["max_len_a"], max_len_b=decode["max_len_b"])
    return translator.cfg.decode


def check_request(options: DecodeOptions, engine: str) -> None:
    """Refuse (400, naming the field) what a request asks that its engine does not do (the
    model's own limits, such as attention without an attention model, are its check's)."""
    if engine != "onnx":
        return
    if options.sampling is not None:
        raise ApiError(
            400,
            "'sample': the ONNX engine does not sample; serve the model directory with "
            "--engine torch to sample",
        )
    if options.attention:
        raise ApiError(
            400,
            "'return_attention': the ONNX engine gives no attention weights; serve the model "
            "directory with --engine torch for them",
        )

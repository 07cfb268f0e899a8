"""The settings of ``translate serve``: where it listens, its request limits, batching,
time-outs and access log (the command line imports this, without torch, for its flags'
defaults)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..errors import UserError, is_integer, is_number

ENGINES = ("torch", "onnx")
MAX_BEAM = 64  # beam sizes (and samples per line) a request may ask for; the defaults may be more


@dataclass
class ServeOptions:
    """Where to listen, the request limits, the batching settings and the time-outs."""

    host: str = "127.0.0.1"
    port: int = 8000  # 0: any free port (printed at start)
    beam: int | None = None  # the default beam of requests; None: the model's
    length_penalty: float | None = None  # the default length penalty of requests; None: the model's
    max_sentences: int = 256  # per request
    max_bytes: int = 1_000_000  # per request body
    max_request_work: int = 100_000  # per request: beam (or samples) x (source subwords + 1)
    max_attention_cells: int = 1_000_000  # per request: attention weights it may ask back
    max_batch_sentences: int = 64  # per decoded batch
    max_batch_tokens: int = 6000  # source subwords per decoded batch, at the default beam
    batch_wait_ms: float = 5.0  # how long the first waiting sentence waits for company
    max_queued_sentences: int = 4096  # waiting sentences of all requests; beyond: 503
    read_timeout: float = 15.0  # seconds a client has to send a request's head, and its body
    shutdown_timeout: float = 60.0  # seconds in-flight requests get after SIGTERM; then 503
    threads: int = 0  # torch's threads (ONNX Runtime's with engine onnx); 0: all cores
    device: str | None = None  # None: CUDA when present, else the CPU
    dtype: str = "fp32"  # as for translate translate: fp32, bf16, fp16, auto
    quantize: str | None = None  # int8: dynamic quantization (CPU); engine onnx: the int8 graphs
    engine: str = "torch"  # torch: model directories in PyTorch; onnx: an export, without torch
    access_log: bool = True  # one line per request on stderr: method, path, status, sentences, ms

    @classmethod
    def from_namespace(cls, args) -> ServeOptions:
        """The options of ``translate serve``'s parsed arguments (same names)."""
        return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


def flag(field: str) -> str:
    """The ``translate serve`` flag of a ServeOptions field."""
    return "--" + field.replace("_", "-")


def check_options(options: ServeOptions) -> None:
    """Refuse settings that cannot work, naming the flag."""
    for field, least in (
        ("max_sentences", 1),
        ("max_bytes", 1),
        ("max_request_work", 1),
        ("max_attention_cells", 1),
        ("max_batch_sentences", 1),
        ("max_batch_tokens", 1),
        ("threads", 0),
    ):
        value = getattr(options, field)
        if not is_integer(value) or value < least:
            raise UserError(f"{flag(field)} must be an integer >= {least}, got {value!r}")
    if options.engine not in ENGINES:
        raise UserError(f"--engine must be one of {', '.join(ENGINES)}, got {options.engine!r}")
    if options.engine == "onnx":
        check_onnx_runtime(options.device, options.dtype, options.quantize)
    if not isinstance(options.access_log, bool):
        raise UserError(f"access_log must be true or false, got {options.access_log!r}")
    port = options.port
    if not is_integer(port) or not 0 <= port <= 65535:
        raise UserError(f"--port must be an integer from 0 to 65535, got {port!r}")
    for field, positive in (
        ("batch_wait_ms", False),
        ("read_timeout", True),
        ("shutdown_timeout", False),
    ):
        value = getattr(options, field)
        if not is_number(value) or value < 0 or (positive and value == 0):
            least = "> 0" if positive else ">= 0"
            raise UserError(f"{flag(field)} must be a finite number {least}, got {value!r}")
    if options.max_queued_sentences < options.max_sentences:
        raise UserError(
            f"--max-queued-sentences ({options.max_queued_sentences}) must be at least "
            f"--max-sentences ({options.max_sentences}), or a full request could never be queued"
        )


def check_onnx_runtime(device: str | None, dtype: str, quantize: str | None) -> None:
    """Refuse the runtime settings the ONNX engine cannot follow: it runs on the CPU, its fp32
    graphs or (--quantize int8) its int8 ones (``translate translate`` and ``serve`` alike)."""
    if device not in (None, "cpu"):
        raise UserError(f"--engine onnx runs on the CPU; --device {device} needs --engine torch")
    if quantize not in (None, "int8"):
        raise UserError(f"--quantize must be int8, got {quantize!r}")
    if dtype != "fp32":
        raise UserError(
            "--engine onnx runs fp32 graphs, or int8 ones with --quantize int8; --dtype "
            f"{dtype} needs --engine torch"
        )

"""The settings of ``translate serve``: where it listens, its request limits and batching."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..errors import UserError

MAX_BEAM = 64  # beam sizes (and samples per line) a request may ask for; the defaults may be more


@dataclass
class ServeOptions:
    """Where to listen, the request limits and the batching settings."""

    host: str = "127.0.0.1"
    port: int = 8000  # 0: any free port (printed at start)
    beam: int | None = None  # the default beam of requests; None: the model's
    length_penalty: float | None = None  # the default length penalty of requests; None: the model's
    max_sentences: int = 256  # per request
    max_bytes: int = 1_000_000  # per request body
    max_batch_sentences: int = 64  # per decoded batch
    max_batch_tokens: int = 6000  # source subwords per decoded batch
    batch_wait_ms: float = 5.0  # how long the first waiting sentence waits for company
    max_queued_sentences: int = 4096  # waiting sentences of all requests; beyond: 503
    threads: int = 0  # torch threads; 0: all cores
    shutdown_timeout: float = 60.0  # seconds in-flight requests get after SIGTERM
    device: str | None = None  # None: CUDA when present, else the CPU
    dtype: str = "fp32"  # as for translate translate: fp32, bf16, fp16, auto
    quantize: str | None = None  # int8: dynamic quantization (CPU)

    @classmethod
    def from_namespace(cls, args) -> ServeOptions:
        """The options of ``translate serve``'s parsed arguments (same names)."""
        return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


def check_options(options: ServeOptions) -> None:
    """Refuse settings that cannot work, naming the flag."""
    for flag, value, least in (
        ("--max-sentences", options.max_sentences, 1),
        ("--max-bytes", options.max_bytes, 1),
        ("--max-batch-sentences", options.max_batch_sentences, 1),
        ("--max-batch-tokens", options.max_batch_tokens, 1),
        ("--port", options.port, 0),
    ):
        if value < least:
            raise UserError(f"{flag} must be >= {least}, got {value}")
    if options.max_queued_sentences < options.max_sentences:
        raise UserError(
            f"--max-queued-sentences ({options.max_queued_sentences}) must be at least "
            f"--max-sentences ({options.max_sentences}), or a full request could never be queued"
        )
    if options.batch_wait_ms < 0:
        raise UserError(f"--batch-wait-ms must be >= 0, got {options.batch_wait_ms}")

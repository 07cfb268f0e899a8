"""fairseq-generate with its models in another number format, converted right after loading:
``PYTHON fairseq_generate.py FORMAT GENERATE-ARGUMENTS...`` with fairseq's own Python.

fp32 leaves the models as loaded; bf16 casts their weights; int8 applies PyTorch's dynamic
quantization to every ``nn.Linear``, as ``translate --quantize int8`` does to ours. The bytes
of the converted weights (``torch.save`` of the state dict) go to stderr before generation.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import torch

FORMATS = ("fp32", "bf16", "int8")


def convert(model: torch.nn.Module, number_format: str) -> torch.nn.Module:
    """``model`` in ``number_format`` (a new module for int8, the same one cast for bf16)."""
    if number_format == "bf16":
        return model.to(torch.bfloat16)
    if number_format == "int8":
        # fairseq's attention hands q/k/v's ``.weight`` to one fused call unless told to skip
        # its dimension check; quantized layers have no such tensor, so go through the layers
        for module in model.modules():
            if hasattr(module, "skip_embed_dim_check"):
                module.skip_embed_dim_check = True
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    return model


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of the state dict as ``torch.save`` writes it (a shared tensor once)."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()


def main() -> None:
    # run as a script, this folder leads sys.path, and its fairseq.py would shadow fairseq
    here = Path(__file__).resolve().parent
    sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != here]
    from fairseq import checkpoint_utils
    from fairseq_cli import generate

    if len(sys.argv) < 2 or sys.argv[1] not in FORMATS:
        sys.exit(f"usage: fairseq_generate.py {{{','.join(FORMATS)}}} GENERATE-ARGUMENTS...")
    number_format = sys.argv.pop(1)
    load = checkpoint_utils.load_model_ensemble

    def load_converted(*args, **kwargs):
        models, cfg = load(*args, **kwargs)
        models = [convert(model, number_format) for model in models]
        print(f"model bytes: {weight_bytes(models[0])}", file=sys.stderr, flush=True)
        return models, cfg

    checkpoint_utils.load_model_ensemble = load_converted
    generate.cli_main()


if __name__ == "__main__":
    main()

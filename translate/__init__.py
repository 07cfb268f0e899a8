"""translate: RNN neural machine translation, from SentencePiece to BLEU."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import Config, load_config
    from .translator import Translator

__all__ = ["Config", "Translator", "load_config"]
__version__ = "0.1.0"

# The public names are imported on first use: Translator needs torch (seconds to import), and
# commands that load no model (--help, score) should not pay for it.
_HOMES = {"Config": ".config", "load_config": ".config", "Translator": ".translator"}


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'translate' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name], __name__), name)
    globals()[name] = value  # found once; later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])

"""translate: RNN neural machine translation, from SentencePiece to BLEU."""

from .config import Config, load_config
from .translator import Translator

__all__ = ["Config", "Translator", "load_config"]
__version__ = "0.1.0"

"""The argparse texts, types and actions of the command line: the examples and the translate
output format shown by --help, numbers range-checked as they are parsed (a value out of range is
a usage error naming its flag, exit status 2), ``-m`` given once, and ``--version``."""

from __future__ import annotations

import argparse
import math
import platform
from importlib.metadata import PackageNotFoundError, version

EXAMPLES = """\
examples:
  translate train recipes/toy/config.yaml
  translate train recipes/multi30k/config.yaml out_dir=exp/m30k train.max_minutes=30
  translate translate -m exp/m30k -i test.de -o test.hyp.en --beam 5
  echo "Ein Hund läuft." | translate translate -m exp/m30k
  translate score -r test.en test.hyp.en
"""
TRANSLATE_FORMAT = """\
Translate one sentence per line, in input order. What is written: with none
of --scores, --alignment and --n-best, plain text, one line per input line (a
blank line for a blank one). With any of them, rows whose columns never move,
fields separated by ' ||| ':

  LINE ||| TEXT ||| SCORE ||| ALIGNMENT

LINE: the input line, counted from 0; TEXT: the translation; SCORE: its
log-probability (EOS included) divided by the length penalty (see
--length-penalty); ALIGNMENT, only with --alignment: SRC-TGT pairs of subword
pieces, counted from 0. --n-best N writes N rows per input line, best first
(N = 1 too); a blank input line gives one row, of empty TEXT and SCORE 0.0000.
--resume continues either format.
"""


def number_type(kind: type, requirement: str, ok, name: str):
    """An argparse ``type=``: the text as a finite ``kind`` for which ``ok`` holds, else
    "must be an integer REQUIREMENT, got TEXT"."""
    noun = {int: "an integer", float: "a number"}[kind]

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {noun}, got {text!r}") from None
        if not (math.isfinite(value) and ok(value)):
            raise argparse.ArgumentTypeError(f"must be {noun} {requirement}, got {value!r}")
        return value

    parse.__name__ = name  # argparse names the type in some messages
    return parse


positive_int = number_type(int, ">= 1", lambda n: n >= 1, "positive_int")
non_negative_int = number_type(int, ">= 0", lambda n: n >= 0, "non_negative_int")
port_number = number_type(int, "from 0 to 65535", lambda n: 0 <= n <= 65535, "port_number")
positive_float = number_type(float, "> 0", lambda x: x > 0, "positive_float")
non_negative_float = number_type(float, ">= 0", lambda x: x >= 0, "non_negative_float")
checkpoint_count = number_type(int, ">= 2 (an average of several)", lambda n: n >= 2, "count")


class OneModel(argparse.Action):
    """``-m`` of a command that takes one model directory: given twice, a usage error rather
    than the last one silently winning."""

    def __call__(self, parser, namespace, values, option_string=None):
        if getattr(namespace, self.dest, None) is not None:
            raise argparse.ArgumentError(
                self,
                "given more than once: this command takes one model directory (ensembles of "
                "several: translate, tune, serve and attention)",
            )
        setattr(namespace, self.dest, values)


def version_line() -> str:
    """translate's version, torch's and Python's, for a bug report (without importing torch)."""
    found = {}
    for name in ("translate", "torch"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    python = platform.python_version()
    return f"translate {found['translate']} (torch {found['torch']}, Python {python})"


class ShowVersion(argparse.Action):
    """--version: print :func:`version_line` and exit (looked up only when asked)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_line())  # on stdout, as argparse's own version action prints
        parser.exit()

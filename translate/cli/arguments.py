"""The argparse types and actions of the command line: numbers range-checked as they are parsed
(a value out of range is a usage error naming its flag, exit status 2), ``-m`` given once, and
``--version``."""

from __future__ import annotations

import argparse
import math
import platform
from importlib.metadata import PackageNotFoundError, version


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

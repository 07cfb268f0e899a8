"""Command line: subcommands that parse arguments and call the library, nothing more.

``translate.cli:main`` is the ``translate`` program (and ``python -m translate``).
"""

from .commands import EXIT_BROKEN_PIPE, main
from .parser import (
    add_runtime_options,
    build_parser,
    non_negative_float,
    non_negative_int,
    port_number,
    positive_float,
    positive_int,
)

__all__ = [
    "EXIT_BROKEN_PIPE",
    "add_runtime_options",
    "build_parser",
    "main",
    "non_negative_float",
    "non_negative_int",
    "port_number",
    "positive_float",
    "positive_int",
]

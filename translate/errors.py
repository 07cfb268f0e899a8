"""The one user-facing error type, what the CLI prints as one line with no traceback, and the
tests of a user's value that its messages rest on."""

import math


class UserError(Exception):
    """A user mistake (bad file, bad value); the CLI prints it as one line, no traceback."""

    label = "error"  # the CLI prints "translate: LABEL: message"
    exit_code = 1


def is_integer(value) -> bool:
    """An int, not a bool (JSON's and YAML's true are ints to Python)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    """A finite int or float, not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

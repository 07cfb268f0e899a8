"""The one user-facing error type: what the CLI prints as one line, with no traceback."""


class UserError(Exception):
    """A user mistake (bad file, bad value); the CLI prints it as one line, no traceback."""

    label = "error"  # the CLI prints "translate: LABEL: message"
    exit_code = 1

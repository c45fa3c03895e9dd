"""The one exception type for bad user input (config, data file, checkpoint).

The entry point prints a ``UserError`` as one line and exits with status 2; anything else is a bug
and keeps its traceback.
"""


class UserError(ValueError):
    """Bad input from the user. The message names the problem and the fix, on one line."""


def print_error(message: object) -> None:
    """Print ``error: MESSAGE`` as one line in one write.

    ``print`` writes the text and its newline separately, so the lines of two processes that share
    a pipe (DDP ranks under one launcher) can run together; one ``os.write`` of a line shorter than
    the pipe buffer (PIPE_BUF, 4096 bytes) is atomic.
    """
    import os
    import sys

    line = f"error: {message}".replace("\n", " ") + "\n"
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # a captured stream (pytest's capsys) has none
        sys.stderr.write(line)
        return
    sys.stderr.flush()
    os.write(fd, line.encode("utf-8", "replace"))

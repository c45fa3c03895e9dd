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


# How alike a name must be to be suggested (difflib's ratio): 0.7 keeps "sst3" -> "sst2" (0.75)
# and drops "deberta-v2" -> "modernbert" (0.6), a suggestion that misleads.
SIMILAR = 0.7


def closest(word: object, options) -> str | None:
    """The option most like ``word``, if any is alike enough (``SIMILAR``) to suggest."""
    import difflib

    found = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=SIMILAR)
    return found[0] if found else None


def did_you_mean(word: object, options) -> str:
    """`` Did you mean 'x'?`` for an error message, or nothing when no option is alike."""
    match = closest(word, options)
    return f" Did you mean {match!r}?" if match else ""

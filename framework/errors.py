"""The one exception type for bad user input (config, data file, checkpoint).

The entry point prints a ``UserError`` as one line and exits with status 2; anything else is a bug
and keeps its traceback.
"""


class UserError(ValueError):
    """Bad input from the user. The message names the problem and the fix, on one line."""

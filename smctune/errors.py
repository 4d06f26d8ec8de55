"""The one exception type the CLI turns into a one-line message and exit code 2.

Anything the user can fix (a bad task name, a malformed data line, an unwritable directory) raises
``UserError``; everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input; ``str(err)`` is the whole message, one line."""


def choices(values) -> str:
    """Format valid choices the same way in every message."""
    return ", ".join(sorted(values))

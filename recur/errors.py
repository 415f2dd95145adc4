"""One exception type for mistakes a user can fix (bad config, bad data, missing files).

The CLI prints a RecurError as a single line and exits non-zero; anything else is a bug and
keeps its traceback.
"""


class RecurError(Exception):
    """A user-facing error: the message names the problem and, where possible, the fix."""

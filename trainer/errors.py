"""The one exception type a user ever sees as a message instead of a traceback."""


class UserError(Exception):
    """A problem the user can fix: bad config value, missing or corrupt file.

    The message is one line that names the problem and the fix (config key,
    file, value). `cli.py` prints it and exits non-zero; nothing else does.
    """

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class DataError(UserError):
    """A dataset file is missing, truncated, corrupt or fails its checksum."""


class CheckpointError(UserError):
    """A checkpoint cannot be read, is not ours, or would run code on load."""


def first_line(e: BaseException) -> str:
    """An exception's first non-blank line (its type name if it has none): what
    fits in a one-line message when the exception is not ours."""
    lines = [line for line in str(e).splitlines() if line.strip()]
    return lines[0] if lines else type(e).__name__

"""The one exception type that reaches the user as a one-line message."""


class MtbiError(Exception):
    """A user-facing error: the message names the file and what to do.

    Entry points in ``mtbi.bin`` print it as one line (no traceback) and exit 1.
    """

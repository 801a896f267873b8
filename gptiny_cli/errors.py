"""The one exception type for expected failures: bad input, bad files, bad configs."""


class GptinyError(Exception):
    """An error the user can fix; the CLI shows its message on one line and exits 1."""

"""The study's exceptions: the CLI prints these as one line, without a traceback."""


class LsdaError(Exception):
    """A problem the user can fix (bad input, missing data, wrong parameter)."""


class DataError(LsdaError):
    """A dataset file that is missing, unreadable or malformed; the message names the file."""

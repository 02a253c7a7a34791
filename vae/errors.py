"""Errors a user can act on, kept free of heavy imports so the CLI can catch them cheaply."""


class DataError(ValueError):
    """A dataset problem a user can fix; the message is one line and says how."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be read (missing, partial, corrupt or not ours)."""


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss; the message names epoch, step and config."""


class RunDirError(ValueError):
    """An output directory that cannot be used as asked (one line, says what to do)."""

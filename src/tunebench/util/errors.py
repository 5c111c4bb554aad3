"""Errors a user can cause and fix. The CLI prints their message as one sentence and exits 2."""


class UserError(Exception):
    """Base of every error whose message tells the user what to change."""


class ConfigError(UserError, ValueError):
    """A configuration key is wrong; the message names it."""


class DataUnavailable(UserError, RuntimeError):
    """Neither the hub nor a mirror could supply a dataset; the message says both ways to fix it."""


class DataError(UserError, ValueError):
    """A dataset is unusable as given (too many malformed rows, missing file in the mirror, ...)."""

"""The one exception tree of tether."""


class TetherError(Exception):
    """Base of every error tether raises."""

"""The one error every wire decoder raises on bad input."""


class DecodeError(ValueError):
    """Bytes that are not a valid instance of the format being decoded."""

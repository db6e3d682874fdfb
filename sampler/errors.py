"""The one exception type for bad user input, so the CLI can print it as one line and exit 2."""


class InvalidInput(ValueError):
    """Raised for input the user can fix: the message names the bad value and what is allowed."""

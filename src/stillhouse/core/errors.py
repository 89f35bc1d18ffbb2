"""The one exception type users see: a problem they can fix, printed by the CLI as a single line."""


class StillhouseError(Exception):
    """A user-fixable problem. The message says what is wrong and what to do about it."""

"""The project's base exception.

Every error that a user can cause (bad audio, a broken bundle, a malformed manifest, a bad
option) derives from :class:`EdgeAsrError`, so applications and the CLI can report it as one
clear line while genuine bugs keep their traceback. Subclasses also derive from the builtin
class that fits (``ValueError`` mostly) so ordinary ``except ValueError`` code keeps working.
"""


class EdgeAsrError(Exception):
    """Base class of all user-facing edgeasr errors."""

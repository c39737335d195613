"""The error every module raises for a failure the user can fix (imported by stages, tools and
shared modules alike, without the command-line machinery of `acento.files`)."""



class StageError(RuntimeError):
    """A failure the user can fix; its message is one line saying what and how."""

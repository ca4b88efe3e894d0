"""The error a blocked reference raises in a student's kernel while a lab is graded."""


class ReferenceBlockedError(RuntimeError):
    """Raised by a ``course_utils`` reference answer called while its lab is graded."""

class DomainError(Exception):
    """A rule of the domain was broken by the caller's input: shown to the person, never a 500.

    The API answers 400 unless a subclass says otherwise; `field` names what was wrong."""

    status_code = 400

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.field = field


class NotFound(DomainError):
    """Something the request refers to (in its path or its body) does not exist."""

    status_code = 404


class Conflict(DomainError):
    """The request is well formed but conflicts with what is stored (a name already taken...)."""

    status_code = 409

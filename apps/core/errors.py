class DomainError(Exception):
    """A rule of the domain was broken by the caller's input: shown to the person, never a 500."""

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.field = field

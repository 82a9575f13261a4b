"""Typed PagerDuty errors, so callers decide by type (retry? fail the step?) and show PD's own words."""


class PagerDutyError(Exception):
    status: int | None = None
    retryable = False
    # Set by the client on the error a write finally fails with: some attempt of it may have been
    # acted on by PagerDuty (answer lost, read timeout, 5xx) and nothing confirmed either way.
    outcome_unknown = False

    def __init__(self, message: str, *, status=None, code=None, errors=None, exchange=None, hint: str = ""):
        self.message = message
        self.status = status if status is not None else self.status
        self.code = code
        self.errors = list(errors or [])
        self.exchange = exchange
        # What a person should do about it (apps.pagerduty.hints); PagerDuty's own words stay first.
        self.hint = hint
        super().__init__(self.describe())

    def describe(self) -> str:
        prefix = f"PagerDuty {self.status}" if self.status else "PagerDuty"
        text = f"{prefix}: {self.message}"
        if self.errors:
            text += " — " + "; ".join(str(e) for e in self.errors)
        if self.hint:
            text += f". {self.hint}"
        return text


class PagerDutyBadRequest(PagerDutyError):
    status = 400


class PagerDutyUnauthorized(PagerDutyError):
    status = 401


class PagerDutyPaymentRequired(PagerDutyError):
    """The account lacks an ability (teams, coordinated responding…)."""

    status = 402


class PagerDutyForbidden(PagerDutyError):
    status = 403


class PagerDutyNotFound(PagerDutyError):
    status = 404


class PagerDutyRateLimited(PagerDutyError):
    status = 429
    retryable = True


class PagerDutyServerError(PagerDutyError):
    retryable = True


class PagerDutyUnavailable(PagerDutyError):
    """No HTTP answer: connection refused, DNS, timeout."""

    retryable = True

    def __init__(self, message: str, *, maybe_processed: bool, **kwargs):
        # A read timeout means the request may have reached PagerDuty and been acted on.
        self.maybe_processed = maybe_processed
        super().__init__(message, **kwargs)


class PagerDutyDestinationRefused(PagerDutyError):
    """Nothing was sent: the URL is not one a stored key may go to, or there is no usable key."""

    def describe(self) -> str:
        return self.message


class PagerDutyRequestInvalid(PagerDutyError):
    """`requests` could not even send the request (bad URL, port, header value…): retrying cannot help."""


class PagerDutyUnexpectedAnswer(PagerDutyError):
    """A success answer without what it should carry (e.g. a 201 with no incident in it)."""


_BY_STATUS = {
    400: PagerDutyBadRequest,
    401: PagerDutyUnauthorized,
    402: PagerDutyPaymentRequired,
    403: PagerDutyForbidden,
    404: PagerDutyNotFound,
    429: PagerDutyRateLimited,
}


def error_for_status(status: int) -> type[PagerDutyError]:
    if status >= 500:
        return PagerDutyServerError
    return _BY_STATUS.get(status, PagerDutyError)

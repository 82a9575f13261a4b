"""Who did it: the person behind the current request, filled into every audit entry written during it.

auditlog's own middleware reads `request.user` when the request arrives, before DRF has
authenticated a token, so API changes would be recorded as made by nobody. This keeps the request
and asks it at the moment an entry is written, when DRF has already set the user on it.
"""

from contextvars import ContextVar

_current_request = ContextVar("audit_current_request", default=None)


class AuditActorMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        token = _current_request.set(request)
        try:
            return self.get_response(request)
        finally:
            _current_request.reset(token)


def fill_actor(sender, instance, **kwargs):
    request = _current_request.get()
    if request is None:
        return  # a command or a worker: auditlog's set_actor() may name someone, else "system"
    user = getattr(request, "user", None)
    if instance.actor_id is None and user is not None and user.is_authenticated:
        instance.actor = user
        instance.actor_email = user.email or None
    if instance.remote_addr is None:
        instance.remote_addr = request.META.get("REMOTE_ADDR") or None

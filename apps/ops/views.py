"""/healthz (public, minimal) and /metrics (Prometheus; a scrape token or the ops.view_metrics permission)."""

import hmac

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST

from apps.ops import health, metrics


@never_cache
@require_GET
def healthz(request):
    """200 when the database and the broker answer and a worker beat recently, else 503. No
    authentication: load balancers and orchestrators call it; it says ok/failing per check only."""
    healthy, answer = health.health()
    return JsonResponse(answer, status=200 if healthy else 503)


def _scrape_token_ok(request) -> bool:
    token = settings.METRICS_TOKEN
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if not token or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[len("Bearer ") :].encode(), token.encode())


@never_cache
@require_GET
def metrics_view(request):
    """Prometheus text format. A scraper sends `Authorization: Bearer <METRICS_TOKEN>`; a signed-in
    person needs ops.view_metrics (PagerDuty admins). Counts and timings only, never a secret — but
    they tell how busy the service is and how PagerDuty answers, so they are not public."""
    if not _scrape_token_ok(request):
        if not request.user.is_authenticated:
            response = JsonResponse(
                {"message": "Authentication required: Authorization: Bearer <METRICS_TOKEN>, or sign in."}, status=401
            )
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
        if not request.user.has_perm("ops.view_metrics"):
            return JsonResponse({"message": "You do not have permission to read the metrics."}, status=403)
    return HttpResponse(metrics.render(), content_type=CONTENT_TYPE_LATEST)

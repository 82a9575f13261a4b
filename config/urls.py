from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from apps.ops.views import healthz, metrics_view
from apps.pagerduty.views import pagerduty_webhook

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("config.api_urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # No login: the X-PagerDuty-Signature header authenticates (apps.pagerduty.webhooks).
    path("webhooks/pagerduty/<str:connection_name>/", pagerduty_webhook, name="pagerduty-webhook"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics_view, name="metrics"),
]

# JSON for /api/ and /webhooks/, Django's pages elsewhere.
handler400 = "apps.core.views.bad_request"
handler403 = "apps.core.views.permission_denied"
handler404 = "apps.core.views.page_not_found"
handler500 = "apps.core.views.server_error"

from rest_framework.routers import DefaultRouter

from apps.incidents.api import IncidentViewSet
from apps.pagerduty.api import PagerDutyConnectionViewSet
from apps.runbooks.api import RunbookViewSet, RunViewSet

router = DefaultRouter()
router.register("incidents", IncidentViewSet, basename="incident")
router.register("runbooks", RunbookViewSet, basename="runbook")
router.register("runs", RunViewSet, basename="run")
router.register("pagerduty/connections", PagerDutyConnectionViewSet, basename="pagerduty-connection")

urlpatterns = router.urls

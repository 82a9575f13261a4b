from django.urls import path
from rest_framework.routers import DefaultRouter

from apps.audit.api import AuditEntryViewSet
from apps.core.api import RoleAPIRootView
from apps.oncall.api import OncallEscalationPolicyViewSet, OncallNowView, OncallScheduleViewSet, OncallUserViewSet
from apps.pagerduty.api import ChannelViewSet, PagerDutyConnectionViewSet
from apps.runbooks.api import IncidentWithPagerDutyViewSet, RunbookViewSet, RunViewSet

router = DefaultRouter()
router.APIRootView = RoleAPIRootView
router.register("incidents", IncidentWithPagerDutyViewSet, basename="incident")
router.register("runbooks", RunbookViewSet, basename="runbook")
router.register("runs", RunViewSet, basename="run")
router.register("pagerduty/connections", PagerDutyConnectionViewSet, basename="pagerduty-connection")
router.register("pagerduty/channels", ChannelViewSet, basename="pagerduty-channel")
router.register("oncall/schedules", OncallScheduleViewSet, basename="oncall-schedule")
router.register("oncall/escalation-policies", OncallEscalationPolicyViewSet, basename="oncall-escalation-policy")
router.register("oncall/users", OncallUserViewSet, basename="oncall-user")
router.register("audit", AuditEntryViewSet, basename="audit")

urlpatterns = [path("oncall/now/", OncallNowView.as_view(), name="oncall-now"), *router.urls]

from apps.core.errors import DomainError
from apps.pagerduty.models import Channel, PagerDutyConnection, ServiceMapping, UrgencyMapping
from apps.pagerduty.payloads import urgency_for_severity


def connection_get(*, name: str) -> PagerDutyConnection:
    try:
        return PagerDutyConnection.objects.get(name=name)
    except PagerDutyConnection.DoesNotExist:
        raise DomainError(
            f"No PagerDuty connection named {name!r}; create it in the admin or with "
            f"`python manage.py pagerduty_connect {name} --from-env`",
            field="connection",
        ) from None


def channel_get(*, name: str) -> Channel:
    try:
        return Channel.objects.get(name=name)
    except Channel.DoesNotExist:
        raise DomainError(
            f"No Events API channel named {name!r}; create it in the admin or with "
            f"`python manage.py pagerduty_channel {name} --from-env`",
            field="channel",
        ) from None


def service_mapping_lookup(*, connection: PagerDutyConnection, service: str) -> str | None:
    """The PagerDuty service for Activity.service, else the connection's default mapping."""
    mappings = {m.service: m.pagerduty_service_id for m in ServiceMapping.objects.filter(connection=connection)}
    return mappings.get(service) or mappings.get("")


def urgency_for(*, severity: int) -> str:
    overrides = dict(UrgencyMapping.objects.values_list("severity", "urgency"))
    return urgency_for_severity(severity, overrides)

from django.db import connection as database

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


def urgency_for(*, severity: int) -> str:
    overrides = dict(UrgencyMapping.objects.values_list("severity", "urgency"))
    return urgency_for_severity(severity, overrides)


def mappings_for(*, connection: PagerDutyConnection) -> tuple[dict[str, str], dict[int, str]]:
    """The connection's service mappings (Activity.service → PagerDuty service id) and the urgency
    overrides (severity → urgency), read in one statement: planning an incident needs both, before
    its request, where each round trip adds to the time until the page goes out."""
    services, urgencies = ServiceMapping._meta.db_table, UrgencyMapping._meta.db_table
    with database.cursor() as cursor:
        cursor.execute(
            # The table names are the models' own; the connection's id is a parameter.
            f"SELECT 1, service, pagerduty_service_id FROM {services} WHERE connection_id = %s "
            f"UNION ALL SELECT 2, CAST(severity AS TEXT), urgency FROM {urgencies}",
            [connection.pk],
        )
        rows = cursor.fetchall()
    return (
        {key: value for table, key, value in rows if table == 1},
        {int(key): value for table, key, value in rows if table == 2},
    )


def service_for(mappings: dict[str, str], service: str) -> str | None:
    """The PagerDuty service for Activity.service, else the connection's default mapping."""
    return mappings.get(service) or mappings.get("")

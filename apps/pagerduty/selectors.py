import functools

from django.db import connection as database

from apps.core.errors import DomainError
from apps.pagerduty.models import Channel, PagerDutyConnection, ServiceMapping, UrgencyMapping
from apps.pagerduty.payloads import urgency_for_severity


def connection_get(*, name: str, with_mappings: bool = False) -> PagerDutyConnection:
    """The connection named so. `with_mappings`: on PostgreSQL, its mappings_for() are read in the
    same statement and kept on it (`mappings`), so planning a page costs no round trip of its own;
    elsewhere `mappings` is None and mappings_for() reads them when asked."""
    if with_mappings and database.vendor == "postgresql":
        connection = _with_mappings(name)
    else:
        connection = PagerDutyConnection.objects.filter(name=name).first()
    if connection is None:
        raise DomainError(
            f"No PagerDuty connection named {name!r}; create it in the admin or with "
            f"`python manage.py pagerduty_connect {name} --from-env`",
            field="connection",
        )
    connection.mappings = None
    if hasattr(connection, "service_keys"):
        connection.mappings = (
            dict(zip(connection.service_keys, connection.service_ids, strict=True)),
            dict(zip(connection.urgency_keys, connection.urgency_values, strict=True)),
        )
    return connection


_FIELDS = PagerDutyConnection._meta.concrete_fields
_NAMES = [field.attname for field in _FIELDS]


def _with_mappings(name: str) -> PagerDutyConnection | None:
    # A cursor and from_db(), as a RawQuerySet does for a row (its converters: the API key's
    # decryption), without resolving the columns again on every call.
    with database.cursor() as cursor:
        cursor.execute(_with_mappings_sql(), [name])
        row = cursor.fetchone()
    if row is None:
        return None
    values = list(row[: len(_FIELDS)])
    for index, converters in _converters():
        for converter in converters:
            values[index] = converter(values[index], _FIELDS[index], database)
    connection = PagerDutyConnection.from_db(database.alias, _NAMES, values)
    connection.service_keys, connection.service_ids, connection.urgency_keys, connection.urgency_values = row[
        len(_FIELDS) :
    ]
    return connection


@functools.cache
def _converters() -> list:
    table = PagerDutyConnection._meta.db_table
    found = []
    for index, field in enumerate(_FIELDS):
        column = field.get_col(table)
        converters = database.ops.get_db_converters(column) + field.get_db_converters(database)
        if converters:
            found.append((index, converters))
    return found


@functools.cache
def _with_mappings_sql() -> str:
    # Written once per process, from the models' own table names; the name is the one parameter.
    # Each pair of arrays comes from the same rows in the same order, zipped into dicts above.
    connections = PagerDutyConnection._meta.db_table
    services, urgencies = ServiceMapping._meta.db_table, UrgencyMapping._meta.db_table
    mine = f"FROM {services} s WHERE s.connection_id = c.id ORDER BY s.id"
    columns = ", ".join(f"c.{database.ops.quote_name(field.column)}" for field in _FIELDS)
    return (
        f"SELECT {columns}, ARRAY(SELECT s.service {mine}) AS service_keys, "
        f"ARRAY(SELECT s.pagerduty_service_id {mine}) AS service_ids, "
        f"ARRAY(SELECT u.severity FROM {urgencies} u ORDER BY u.id) AS urgency_keys, "
        f"ARRAY(SELECT u.urgency FROM {urgencies} u ORDER BY u.id) AS urgency_values "
        f"FROM {connections} c WHERE c.name = %s"
    )


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

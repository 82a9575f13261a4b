"""Writes the ORM spreads over several statements, as one statement each.

Every statement is a round trip and, outside a transaction, a commit (a WAL flush on PostgreSQL).
The runbook engine writes a few rows per step on the path between a status change and the
PagerDuty request, so it counts them. The SQL is built by Django's own compilers: every field takes
part exactly as save() or update() would write it (defaults, auto_now, field preparation), so
adding a field to a model needs nothing here.
"""

from django.db import connections, router, transaction
from django.db.models import Q
from django.db.models.constants import OnConflict
from django.db.models.sql import InsertQuery, UpdateQuery


def _insert_fields(model):
    meta = model._meta
    return [f for f in meta.local_concrete_fields if f is not meta.auto_field and not f.generated]


def prepared_for_insert(obj):
    """`obj` with the values an INSERT now would give it (auto_now_add, auto_now…), to be written
    later as they are by insert_and_update: a row written after the fact keeps its time."""
    for field in _insert_fields(type(obj)):
        setattr(obj, field.attname, field.pre_save(obj, add=True))
    obj._prepared_for_insert = True
    return obj


def insert_and_update(obj, model, pk, values: dict) -> None:
    """INSERT `obj` and UPDATE the row `pk` of `model` with `values` (as QuerySet.update takes them;
    empty: the INSERT alone).

    On PostgreSQL one statement, a data-modifying WITH: one round trip, both rows or neither.
    Elsewhere two statements in one transaction."""
    using = router.db_for_write(type(obj))
    db = connections[using]
    raw = getattr(obj, "_prepared_for_insert", False)
    if not values:  # nothing to update: the INSERT alone
        obj.save_base(raw=raw, force_insert=True, using=using)
        return
    if db.vendor != "postgresql":
        with transaction.atomic(using=using):
            obj.save_base(raw=raw, force_insert=True, using=using)
            model.objects.using(using).filter(pk=pk).update(**values)
        return
    insert = InsertQuery(type(obj))
    insert.insert_values(_insert_fields(type(obj)), [obj], raw=raw)
    [(insert_sql, insert_params)] = insert.get_compiler(using=using).as_sql()
    update = UpdateQuery(model)
    update.add_update_values(values)
    update.add_q(Q(pk=pk))
    update_sql, update_params = update.get_compiler(using=using).as_sql()
    with db.cursor() as cursor:
        cursor.execute(f"WITH inserted AS ({insert_sql}) {update_sql}", (*insert_params, *update_params))


def upsert(obj, *, unique_fields: list[str], update_fields: list[str]) -> None:
    """INSERT `obj`, or on a conflict on `unique_fields` UPDATE `update_fields` of the row there;
    `obj` gets the row's primary key (RETURNING, in the same statement), as save() would give it.

    bulk_create(update_conflicts=True) writes the same statement inside a transaction of its own
    (two more round trips); update_or_create takes a transaction, a locking read and a savepoint."""
    model = type(obj)
    meta = model._meta
    using = router.db_for_write(model)
    query = InsertQuery(
        model,
        on_conflict=OnConflict.UPDATE,
        update_fields=[meta.get_field(name) for name in update_fields],
        unique_fields=[meta.get_field(name) for name in unique_fields],
    )
    query.insert_values(_insert_fields(model), [obj])
    # Callers go on using the row by its key (the webhook mirror marks the link it just made).
    if connections[using].features.can_return_columns_from_insert:
        [(pk,)] = query.get_compiler(using=using).execute_sql(returning_fields=[meta.pk])
    else:
        query.get_compiler(using=using).execute_sql(returning_fields=None)
        lookup = {meta.get_field(name).attname: getattr(obj, meta.get_field(name).attname) for name in unique_fields}
        pk = model._default_manager.using(using).filter(**lookup).values_list("pk", flat=True).get()
    obj.pk = pk
    obj._state.adding, obj._state.db = False, using

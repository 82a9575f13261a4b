"""Writes the ORM spreads over several statements, as one statement each (and rows so read or
written held as a prefetch would hold them); reads the hot path makes again and again, compiled
once per connection.

Every statement is a round trip and, outside a transaction, a commit (a WAL flush on PostgreSQL).
The runbook engine writes a few rows per step on the path between a status change and the
PagerDuty request, so it counts them. The SQL is built by Django's own compilers: every field takes
part exactly as save() or update() would write it (defaults, auto_now, field preparation), so
adding a field to a model needs nothing here.
"""

import threading
from contextlib import nullcontext

from django.core.exceptions import ImproperlyConfigured
from django.db import connections, router, transaction
from django.db.models import Q
from django.db.models.constants import OnConflict
from django.db.models.expressions import RawSQL
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


def insert_with_children(parent, children: list, *, link: str, then=None) -> None:
    """INSERT `parent` and `children` (each pointing at it through its foreign key `link`), then
    `then` = (queryset, values), an UPDATE as QuerySet.update would write it. All or nothing; the
    objects get their primary keys, as save() and bulk_create() would give them.

    On PostgreSQL one statement, a data-modifying WITH: the children name the parent's key through
    its RETURNING, so it is one round trip and, outside a transaction, one commit. Elsewhere, or
    inside a transaction (which a failure must not abort for the caller), in a transaction or
    savepoint of its own."""
    model = type(parent)
    using = router.db_for_write(model)
    db = connections[using]
    if db.vendor != "postgresql":
        with transaction.atomic(using=using):
            parent.save_base(force_insert=True, using=using)
            for child in children:
                setattr(child, link, parent)
            if children:
                type(children[0]).objects.using(using).bulk_create(children)
            if then is not None:
                queryset, values = then
                queryset.using(using).update(**values)
        return

    meta = model._meta
    parts, params = [], []
    insert = InsertQuery(model)
    insert.insert_values(_insert_fields(model), [parent])
    compiler = insert.get_compiler(using=using)
    compiler.returning_fields = [meta.pk]
    [(sql, sql_params)] = compiler.as_sql()
    parts.append(f"new_parent AS ({sql})")
    params += sql_params
    if children:
        child_model = type(children[0])
        child_meta = child_model._meta
        column = child_meta.get_field(link).attname
        for child in children:
            # An expression, compiled into each row by Django's own INSERT compiler.
            setattr(child, column, RawSQL(f"SELECT {db.ops.quote_name(meta.pk.column)} FROM new_parent", ()))
        insert = InsertQuery(child_model)
        insert.insert_values(_insert_fields(child_model), children)
        compiler = insert.get_compiler(using=using)
        compiler.returning_fields = [child_meta.pk]
        [(sql, sql_params)] = compiler.as_sql()
        parts.append(f"new_children AS ({sql})")
        params += sql_params
    if then is not None:
        queryset, values = then
        update = queryset.query.chain(UpdateQuery)
        update.add_update_values(values)
        sql, sql_params = update.get_compiler(using=using).as_sql()
        parts.append(f"updated AS ({sql})")
        params += sql_params
    pk = db.ops.quote_name(meta.pk.column)
    # The children's keys in the order of their rows: PostgreSQL's RETURNING follows the VALUES,
    # which bulk_create() relies on as well.
    children_keys = f"ARRAY(SELECT {db.ops.quote_name(child_meta.pk.column)} FROM new_children)" if children else "NULL"
    with transaction.atomic(using=using) if db.in_atomic_block else nullcontext(), db.cursor() as cursor:
        cursor.execute(f"WITH {', '.join(parts)} SELECT {pk}, {children_keys} FROM new_parent", params)
        parent_pk, children_pks = cursor.fetchone()
    parent.pk = parent_pk
    parent._state.adding, parent._state.db = False, using
    for child, child_pk in zip(children, children_pks or (), strict=True):
        setattr(child, column, parent_pk)
        child.pk = child_pk
        child._state.adding, child._state.db = False, using


def hold_prefetched(instance, name: str, objects: list) -> None:
    """`instance.<name>.all()` answers `objects` without a query, as after prefetch_related(name):
    for rows the caller read (or wrote) itself in fewer statements than the ORM would."""
    queryset = getattr(instance, name).all()
    queryset._result_cache, queryset._prefetch_done = objects, True
    instance.__dict__.setdefault("_prefetched_objects_cache", {})[name] = queryset


class CompiledQuery:
    """A read whose SQL is the same every time but for its parameters, compiled by Django once per
    database connection instead of on every call: building a queryset and compiling it cost the
    dispatch task more CPU than PostgreSQL spent answering (docs/benchmarks.md, stop 22).

    `build(shape, *placeholders)` returns a values_list() queryset; `shape` (hashable) chooses
    among statements of different shapes (an IN list of another length), and each placeholder must
    reach the SQL as one parameter of its own, unchanged — checked when it is compiled, so a
    placeholder Django transforms or repeats fails loudly instead of leaving a stale value in. So
    the parameters are integers and text, which every database takes as they are (not a UUID:
    SQLite is given its hex).
    `rows(shape, *values)` answers what iterating the queryset built with `values` would: the
    same statement, the fields' converters applied, one tuple per row."""

    def __init__(self, build, *placeholders):
        self.build, self.placeholders = build, placeholders
        # Connections are per thread, and a compiled statement keeps its compiler's connection.
        self._local = threading.local()

    def _compiled(self, shape):
        cache = self._local.__dict__.setdefault("cache", {})
        if shape not in cache:
            queryset = self.build(shape, *self.placeholders)
            compiler = queryset.query.get_compiler(using=queryset.db)
            sql, params = compiler.as_sql()
            positions = []
            for placeholder in self.placeholders:
                found = [i for i, p in enumerate(params) if isinstance(p, type(placeholder)) and p == placeholder]
                if len(found) != 1:
                    raise ImproperlyConfigured(f"placeholder {placeholder!r} is {len(found)} parameters of {sql}")
                # With the type Django gave it: on PostgreSQL an integer column's value is wrapped
                # (psycopg's Int4…) so the server knows its type.
                positions.append((found[0], type(params[found[0]])))
            fields = [column[0] for column in compiler.select[: compiler.col_count]]
            cache[shape] = (queryset.db, sql, list(params), positions, compiler, compiler.get_converters(fields))
        return cache[shape]

    def rows(self, shape, *values) -> list[tuple]:
        using, sql, params, positions, compiler, converters = self._compiled(shape)
        params = list(params)
        for (position, kind), value in zip(positions, values, strict=True):
            params[position] = value if type(value) is kind else kind(value)
        with connections[using].cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        width = compiler.col_count
        if converters:
            rows = compiler.apply_converters(rows, converters)
        return [tuple(row[:width]) for row in rows]

"""Writes the ORM spreads over several statements, as one statement each (and rows so read or
written held as a prefetch would hold them); the reads and writes the hot path makes again and
again, compiled by Django once per connection and prepared with each call's values.

Every statement is a round trip and, outside a transaction, a commit (a WAL flush on PostgreSQL).
The runbook engine writes a few rows per step on the path between a status change and the
PagerDuty request, so it counts them. The SQL is built by Django's own compilers: every field takes
part exactly as save() or update() would write it (defaults, auto_now, field preparation), so
adding a field to a model needs nothing here.
"""

import functools
import threading
import uuid
from contextlib import nullcontext

from django.core.exceptions import ImproperlyConfigured
from django.db import connections, router, transaction
from django.db.models import UUIDField
from django.db.models.constants import OnConflict
from django.db.models.expressions import RawSQL
from django.db.models.sql import InsertQuery, UpdateQuery


def _placeholder_slots(params, placeholders, sql) -> list:
    """Where each placeholder is among `params` (Django's, for `sql`), and how a value takes its
    place: as the placeholder did (with the type Django gave it: on PostgreSQL an integer column's
    value is wrapped, psycopg's Int4…, so the server knows its type), or, for a UUID on a database
    without a uuid type (SQLite), as its hex. A placeholder Django repeats or transforms is refused."""
    slots = []
    for placeholder in placeholders:
        found = [i for i, p in enumerate(params) if isinstance(p, type(placeholder)) and p == placeholder]
        as_hex = isinstance(placeholder, uuid.UUID) and not found
        if as_hex:
            found = [i for i, p in enumerate(params) if p == placeholder.hex]
        if len(found) != 1:
            raise ImproperlyConfigured(f"placeholder {placeholder!r} is {len(found)} parameters of {sql}")
        slots.append((found[0], _hex if as_hex else _as_type(type(params[found[0]]))))
    return slots


def _hex(value) -> str:
    return (value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))).hex


@functools.cache
def _as_type(kind):
    return lambda value: value if type(value) is kind else kind(value)


def _with_values(params: list, slots, values) -> list:
    params = list(params)
    for (position, prepare), value in zip(slots, values, strict=True):
        params[position] = prepare(value)
    return params


class _PerConnection:
    """Statements compiled by Django once per database connection (so once per thread: a compiled
    statement keeps its compiler's connection), by shape."""

    def __init__(self):
        self._local = threading.local()

    def get(self, shape, compile_):
        try:
            return self._local.cache[shape]
        except AttributeError:
            self._local.cache = {}
        except KeyError:
            pass
        compiled = self._local.cache[shape] = compile_()
        return compiled


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
            _by_key(model).update(pk, **values)
        return
    insert_sql, insert_params = _insert_statement(obj, using, raw)
    _, update_sql, update_params = _by_key(model).statement(pk, **values)
    with db.cursor() as cursor:
        cursor.execute(f"WITH inserted AS ({insert_sql}) {update_sql}", (*insert_params, *update_params))


_INSERTS = _PerConnection()


def _insert_statement(obj, using: str, raw: bool, *, conflict=None, returning: bool = False) -> tuple[str, list]:
    """The INSERT of `obj` as save_base(force_insert=True) writes it (`conflict`: (unique fields,
    fields updated) of an INSERT … ON CONFLICT DO UPDATE; `returning`: the row's key): its SQL
    compiled by Django once per connection and kind, its parameters prepared by the fields on each
    call, and checked against Django's own when compiled."""
    model = type(obj)
    db = connections[using]
    fields = _insert_fields(model)
    params = _insert_params(obj, db, raw=raw)
    # An expression stays one (get_db_prep_save passes it through) and is part of the SQL: not compiled.
    if any(hasattr(param, "resolve_expression") for param in params):
        return _insert_compiled(obj, using, True, conflict, returning)

    def compile_():
        if any(hasattr(f, "get_placeholder") for f in fields):
            raise ImproperlyConfigured(f"{model.__name__} has a field that writes itself with a placeholder of its own")
        sql, written = _insert_compiled(obj, using, True, conflict, returning)  # pre_save ran above
        if len(written) != len(params) or not all(map(_same, written, params)):
            raise ImproperlyConfigured(f"the parameters of {sql} are not the values prepared for it: not compiled")
        return sql

    return _INSERTS.get((using, model, conflict, returning), compile_), params


def _insert_compiled(obj, using: str, raw: bool, conflict, returning: bool) -> tuple[str, list]:
    model = type(obj)
    meta = model._meta
    options = {}
    if conflict is not None:
        unique, updated = conflict
        options = {
            "on_conflict": OnConflict.UPDATE,
            "update_fields": [meta.get_field(name) for name in updated],
            "unique_fields": [meta.get_field(name) for name in unique],
        }
    insert = InsertQuery(model, **options)
    insert.insert_values(_insert_fields(model), [obj], raw=raw)
    compiler = insert.get_compiler(using=using)
    if returning:
        compiler.returning_fields = [meta.pk]
    [(sql, params)] = compiler.as_sql()
    return sql, list(params)


def insert_row(obj) -> None:
    """`obj.save(force_insert=True)` as one compiled INSERT … RETURNING its key (model signals
    are not sent: the rows written this way have no receivers)."""
    model = type(obj)
    using = router.db_for_write(model)
    db = connections[using]
    if not db.features.can_return_columns_from_insert:
        obj.save_base(force_insert=True, using=using)
        return
    sql, params = _insert_statement(obj, using, False, returning=True)
    with transaction.mark_for_rollback_on_error(using), db.cursor() as cursor:
        cursor.execute(sql, params)
        (obj.pk,) = cursor.fetchone()
    obj._state.adding, obj._state.db = False, using


def update_all_columns(obj) -> int:
    """`obj.save()` of a row that exists (it is locked, say): an UPDATE of every column by its
    key, the auto_now ones stamped as save() stamps them, compiled once per connection."""
    meta = obj._meta
    columns = {f.attname: f.pre_save(obj, add=False) for f in meta.local_concrete_fields if not f.primary_key}
    return update_row(type(obj), obj.pk, **columns)


def upsert(obj, *, unique_fields: list[str], update_fields: list[str]) -> None:
    """INSERT `obj`, or on a conflict on `unique_fields` UPDATE `update_fields` of the row there;
    `obj` gets the row's primary key (RETURNING, in the same statement), as save() would give it.

    bulk_create(update_conflicts=True) writes the same statement inside a transaction of its own
    (two more round trips); update_or_create takes a transaction, a locking read and a savepoint."""
    model = type(obj)
    meta = model._meta
    using = router.db_for_write(model)
    db = connections[using]
    conflict = (tuple(unique_fields), tuple(update_fields))
    # Callers go on using the row by its key (the webhook mirror marks the link it just made).
    returning = db.features.can_return_columns_from_insert
    sql, params = _insert_statement(obj, using, False, conflict=conflict, returning=returning)
    with transaction.mark_for_rollback_on_error(using), db.cursor() as cursor:
        cursor.execute(sql, params)
        if returning:
            (pk,) = cursor.fetchone()
    if not returning:
        lookup = {meta.get_field(name).attname: getattr(obj, meta.get_field(name).attname) for name in unique_fields}
        pk = model._default_manager.using(using).filter(**lookup).values_list("pk", flat=True).get()
    obj.pk = pk
    obj._state.adding, obj._state.db = False, using


def insert_with_children(parent, children: list, *, link: str, then=None) -> None:
    """INSERT `parent` and `children` (each pointing at it through its foreign key `link`), then
    `then`, an UPDATE as CompiledUpdate.statement() gives it. All or nothing; the objects get their
    primary keys, as save() and bulk_create() would give them.

    On PostgreSQL one statement, a data-modifying WITH: the children name the parent's key through
    its RETURNING, so it is one round trip and, outside a transaction, one commit. Its SQL is
    compiled by Django once per connection and shape (the models, the number of children, the
    UPDATE), its parameters prepared by the fields on every call. Elsewhere, or inside a
    transaction (which a failure must not abort for the caller), in a transaction or savepoint of
    its own."""
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
                _, sql, params = then
                with db.cursor() as cursor:
                    cursor.execute(sql, params)
        return

    child_model = type(children[0]) if children else None
    column = child_model._meta.get_field(link).attname if children else None
    params = _insert_params(parent, db)
    for child in children:
        params += _insert_params(child, db, leaving_out=column)
    if then is not None:
        params += then[2]
    shape = (using, model, child_model, len(children), link, then[1] if then is not None else None)
    sql = _WITH_CHILDREN.get(shape, lambda: _with_children_sql(parent, children, column, then, using, params))
    with transaction.atomic(using=using) if db.in_atomic_block else nullcontext(), db.cursor() as cursor:
        cursor.execute(sql, params)
        parent_pk, children_pks = cursor.fetchone()
    parent.pk = parent_pk
    parent._state.adding, parent._state.db = False, using
    for child, child_pk in zip(children, children_pks or (), strict=True):
        setattr(child, column, parent_pk)
        child.pk = child_pk
        child._state.adding, child._state.db = False, using


_WITH_CHILDREN = _PerConnection()


def _insert_params(obj, db, *, raw: bool = False, leaving_out: str | None = None) -> list:
    """The parameters of `obj`'s INSERT as Django's compiler prepares them (pre_save with add=True
    first, as save() stamps auto_now_add; `raw`: the values as they are), without the column
    `leaving_out`."""
    return [
        field.get_db_prep_save(getattr(obj, field.attname) if raw else field.pre_save(obj, add=True), connection=db)
        for field in _insert_fields(type(obj))
        if field.attname != leaving_out
    ]


def _with_children_sql(parent, children: list, column: str | None, then, using: str, prepared: list) -> str:
    db = connections[using]
    meta = type(parent)._meta
    parts, params = [], []
    insert = InsertQuery(type(parent))
    insert.insert_values(_insert_fields(type(parent)), [parent], raw=True)  # pre_save ran for the parameters
    compiler = insert.get_compiler(using=using)
    compiler.returning_fields = [meta.pk]
    [(sql, sql_params)] = compiler.as_sql()
    parts.append(f"new_parent AS ({sql})")
    params += sql_params
    children_keys = "NULL"
    if children:
        child_model = type(children[0])
        child_meta = child_model._meta
        if any(hasattr(f, "get_placeholder") for f in [*_insert_fields(type(parent)), *_insert_fields(child_model)]):
            raise ImproperlyConfigured("a field that writes itself with a placeholder of its own: not compiled")
        parent_key = RawSQL(f"SELECT {db.ops.quote_name(meta.pk.column)} FROM new_parent", ())
        kept = [getattr(child, column) for child in children]
        for child in children:
            # An expression, compiled into each row by Django's own INSERT compiler.
            setattr(child, column, parent_key)
        insert = InsertQuery(child_model)
        insert.insert_values(_insert_fields(child_model), children, raw=True)  # pre_save ran for the parameters
        compiler = insert.get_compiler(using=using)
        compiler.returning_fields = [child_meta.pk]
        [(sql, sql_params)] = compiler.as_sql()
        for child, value in zip(children, kept, strict=True):
            setattr(child, column, value)
        parts.append(f"new_children AS ({sql})")
        params += sql_params
        # The children's keys in the order of their rows: PostgreSQL's RETURNING follows the VALUES,
        # which bulk_create() relies on as well.
        children_keys = f"ARRAY(SELECT {db.ops.quote_name(child_meta.pk.column)} FROM new_children)"
    if then is not None:
        _, sql, sql_params = then
        parts.append(f"updated AS ({sql})")
        params += sql_params
    if len(params) != len(prepared) or not all(map(_same, params, prepared)):
        raise ImproperlyConfigured("the parameters of a parent's and children's INSERT are not the values prepared")
    pk = db.ops.quote_name(meta.pk.column)
    return f"WITH {', '.join(parts)} SELECT {pk}, {children_keys} FROM new_parent"


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
    the parameters are integers, text and UUIDs (given to SQLite as hex, as Django gives them).
    `rows(shape, *values)` answers what iterating the queryset built with `values` would: the
    same statement, the fields' converters applied, one tuple per row."""

    def __init__(self, build, *placeholders):
        self.build, self.placeholders = build, placeholders
        self._compiled = _PerConnection()

    def _compile(self, shape):
        queryset = self.build(shape, *self.placeholders)
        compiler = queryset.query.get_compiler(using=queryset.db)
        sql, params = compiler.as_sql()
        slots = _placeholder_slots(params, self.placeholders, sql)
        fields = [column[0] for column in compiler.select[: compiler.col_count]]
        return queryset.db, sql, list(params), slots, compiler, compiler.get_converters(fields)

    def rows(self, shape, *values) -> list[tuple]:
        using, sql, params, slots, compiler, converters = self._compiled.get(shape, lambda: self._compile(shape))
        with connections[using].cursor() as cursor:
            cursor.execute(sql, _with_values(params, slots, values))
            rows = cursor.fetchall()
        width = compiler.col_count
        if converters:
            rows = compiler.apply_converters(rows, converters)
        return [tuple(row[:width]) for row in rows]


class CompiledUpdate:
    """QuerySet.update() on the rows of a filter that is the same every time but for its
    placeholders (as CompiledQuery's), compiled by Django once per connection and set of columns.

    `build(*placeholders)` returns the filtered queryset. `update(*values, **columns)` writes what
    `build(*values).update(**columns)` would, and returns the number of rows matched. Each
    column's value is prepared by its field on every call, as Django's compiler prepares it
    (get_db_prep_save; a model instance for a foreign key gives its key); a value that is None
    writes NULL, and an expression (F("attempts") + 1) is part of the statement, so each of those
    is a shape of its own. Compiling checks that the parameters Django wrote are the ones prepared
    here, so a field that writes itself differently (a placeholder of its own, a value Django
    transforms) fails loudly instead of writing something else."""

    def __init__(self, build, *placeholders):
        self.build, self.placeholders = build, placeholders
        self._compiled = _PerConnection()
        self._target = None

    def _model_and_db(self):
        if self._target is None:
            model = self.build(*self.placeholders).model
            self._target = (model, router.db_for_write(model))
        return self._target

    def statement(self, *values, **columns) -> tuple[str, str, list]:
        """The database alias, the SQL and its parameters, for a caller that runs it as part of
        a statement of its own (insert_and_update)."""
        model, using = self._model_and_db()
        db = connections[using]
        meta = model._meta
        prepared, shape = [], []
        for name, value in columns.items():
            if hasattr(value, "resolve_expression"):
                shape.append((name, value))
                continue
            field = meta.get_field(name)
            if field.remote_field and hasattr(value, "prepare_database_save"):
                value = value.prepare_database_save(field)
            value = field.get_db_prep_save(value, connection=db)
            shape.append((name, value is None))
            if value is not None:
                prepared.append(value)
        shape = tuple(shape)
        sql, set_slots, where, where_slots = self._compiled.get(shape, lambda: self._compile(shape, columns, prepared))
        params = [prepared[slot] if type(slot) is int else slot.value for slot in set_slots]
        return using, sql, params + _with_values(where, where_slots, values)

    def _compile(self, shape: tuple, columns: dict, prepared: list):
        queryset = self.build(*self.placeholders)
        model, using = self._model_and_db()
        query = queryset.query.chain(UpdateQuery)
        query.add_update_values(columns)
        if query.related_updates:
            raise ImproperlyConfigured(f"{model.__name__}: an update of a parent model's columns is not compiled")
        compiler = query.get_compiler(using=using)
        sql, params = compiler.as_sql()
        set_slots, count = [], 0
        for (field, _model, value), (_name, kind) in zip(query.values, shape, strict=True):
            if hasattr(field, "get_placeholder"):
                raise ImproperlyConfigured(f"{field} writes itself with a placeholder of its own: not compiled")
            if kind is False:  # a value: prepared on each call
                set_slots.append(count)
                count += 1
            elif kind is not True:  # an expression (True: NULL, no parameter)
                resolved = value.resolve_expression(query, allow_joins=False, for_save=True)
                set_slots += [_Constant(p) for p in compiler.compile(resolved)[1]]
        params = list(params)
        mine = [prepared[slot] if type(slot) is int else slot.value for slot in set_slots]
        if len(params) < len(mine) or not all(map(_same, params, mine)):
            raise ImproperlyConfigured(f"the parameters of {sql} are not the values prepared for it: not compiled")
        where = params[len(set_slots) :]
        return sql, set_slots, where, _placeholder_slots(where, self.placeholders, sql)

    def update(self, *values, **columns) -> int:
        using, sql, params = self.statement(*values, **columns)
        with transaction.mark_for_rollback_on_error(using), connections[using].cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.rowcount


class _Constant:
    """A parameter of an expression's own (the 1 of F("attempts") + 1): the same on every call."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value


def _same(written, prepared) -> bool:
    if type(written) is not type(prepared):
        return False
    # psycopg's JSON adapters compare by identity: what they wrap is what is written.
    return written == prepared or (hasattr(written, "obj") and written.obj == prepared.obj)


_INT_KEY = -(2**62) + 8  # never a key: stands for the row's in a compiled statement
_UUID_KEY = uuid.UUID("00000000-0000-4000-8000-00000000c0de")


@functools.cache
def _by_key(model) -> CompiledUpdate:
    placeholder = _UUID_KEY if isinstance(model._meta.pk, UUIDField) else _INT_KEY
    return CompiledUpdate(lambda key: model._default_manager.filter(pk=key), placeholder)


def update_row(model, pk, **columns) -> int:
    """`model.objects.filter(pk=pk).update(**columns)`, compiled once per connection and set of
    columns (CompiledUpdate): the runbook engine writes a step's row two or three times per step."""
    return _by_key(model).update(pk, **columns)

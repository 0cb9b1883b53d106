"""Inserting a chunk of rows fast: COPY on PostgreSQL, executemany elsewhere.

`bulk_create` spends most of an import's time preparing each field of each
object (~25 fields a reader across the subscriber and consent rows); a million
readers took minutes. These rows are plain values the import already checked,
so they go in as tuples, with the model's defaults for the columns not given.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.db import connection, models
from django.utils import timezone


def insert_rows(model: type[models.Model], columns: list[str],
                rows: Iterable[tuple[Any, ...]]) -> None:
    """Insert `rows` (values for `columns`, by field attname) into `model`'s table."""
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    given = {name: i for i, name in enumerate(columns)}
    missing = [f for f in fields if f.attname not in given]
    defaults = tuple(_default(f) for f in missing)
    names = [*columns, *(f.attname for f in missing)]
    table = connection.ops.quote_name(model._meta.db_table)
    quoted = ", ".join(connection.ops.quote_name(_column(model, name)) for name in names)
    adapt = connection.ops.adapt_datetimefield_value
    postgres = connection.vendor == "postgresql"

    def prepared(row: tuple[Any, ...]) -> tuple[Any, ...]:
        values = [adapt(v) if isinstance(v, datetime) and not postgres else
                  json.dumps(v) if isinstance(v, dict) else v for v in row]
        return (*values, *defaults)

    with connection.cursor() as cursor, connection.wrap_database_errors:
        if postgres:
            with cursor.cursor.copy(f"COPY {table} ({quoted}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(prepared(row))
        else:
            marks = ", ".join(["%s"] * len(names))
            # Table and column names come from the model, never from the file.
            cursor.executemany(f"INSERT INTO {table} ({quoted}) VALUES ({marks})",  # noqa: S608
                               [prepared(row) for row in rows])


def _column(model: type[models.Model], attname: str) -> str:
    for field in model._meta.concrete_fields:
        if field.attname == attname:
            return field.column
    raise LookupError(attname)


def _default(field: models.Field) -> Any:
    auto = getattr(field, "auto_now_add", False) or getattr(field, "auto_now", False)
    value = timezone.now() if auto else field.get_default()
    if isinstance(value, datetime) and connection.vendor != "postgresql":
        return connection.ops.adapt_datetimefield_value(value)
    return json.dumps(value) if isinstance(value, dict) else value

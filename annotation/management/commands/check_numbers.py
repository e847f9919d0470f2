"""Report stored non-finite numbers (NaN, Infinity) in every float column of the app's tables.

JSON has no NaN or Infinity: one such value makes an API list answer 500 and a JSONL export invalid. Client numbers
are validated finite since migration 0004 (which also cleared non-finite flaw times); this command checks the rest.
``--fix`` sets the values found to NULL where the column allows it. Exit status 1 when any value is left."""

from __future__ import annotations

from django.apps import apps
from django.core.management.base import BaseCommand
from django.db import connection, models, transaction

NON_FINITE = "({col} = 'NaN'::float8 OR {col} = 'Infinity'::float8 OR {col} = '-Infinity'::float8)"


def non_finite_columns() -> list[tuple[type[models.Model], models.Field]]:
    return [(model, f) for model in apps.get_app_config("annotation").get_models()
            for f in model._meta.concrete_fields if isinstance(f, models.FloatField)]


class Command(BaseCommand):
    help = "Report (and with --fix clear) NaN / Infinity values stored in float columns."

    def add_arguments(self, parser):
        parser.add_argument("--fix", action="store_true", help="set them to NULL where the column is nullable")

    def handle(self, *args, fix: bool = False, **options):
        left = 0
        qn = connection.ops.quote_name
        with transaction.atomic(), connection.cursor() as cursor:
            for model, f in non_finite_columns():
                table, col = qn(model._meta.db_table), qn(f.column)
                where = NON_FINITE.format(col=col)
                cursor.execute(f"SELECT count(*) FROM {table} WHERE {where}")
                (n,) = cursor.fetchone()
                if not n:
                    continue
                if fix and f.null:
                    cursor.execute(f"UPDATE {table} SET {col} = NULL WHERE {where}")
                    self.stdout.write(f"{model._meta.label}.{f.name}: {n} non-finite value(s) set to NULL")
                else:
                    left += n
                    self.stdout.write(f"{model._meta.label}.{f.name}: {n} non-finite value(s)")
        if left:
            self.stderr.write(f"{left} non-finite value(s) left")
            raise SystemExit(1)
        self.stdout.write("no non-finite numbers stored")

"""For the management commands that need the database schema: on the embedded database of the quick start (nothing
there to lose) unapplied migrations are applied, with one line saying so; on any other database the command stops
with one line saying what to run (a fresh clone after ``make test`` used to die with ``relation "auth_group" does not
exist``)."""

from __future__ import annotations

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor

ERR_UNMIGRATED = ("The database {name!r} is missing {n} migration(s) (e.g. {example}): run `python manage.py migrate` "
                  "first.")


def schema_ensure(*, stdout, database: str = DEFAULT_DB_ALIAS) -> int:
    """Make sure the schema is current; returns how many migrations were applied (0: it already was)."""
    connection = connections[database]
    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if not plan:
        return 0
    if not settings.EMBEDDED_DATABASE:
        migration = plan[0][0]
        raise CommandError(ERR_UNMIGRATED.format(name=connection.settings_dict["NAME"], n=len(plan),
                                                 example=f"{migration.app_label}.{migration.name}"))
    stdout.write(f"the embedded database has {len(plan)} unapplied migration(s): migrating it first")
    call_command("migrate", database=database, interactive=False, verbosity=0)
    return len(plan)

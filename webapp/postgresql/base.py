from __future__ import annotations

import os

from django.db.backends.postgresql import base
from django.db.utils import OperationalError


class DatabaseWrapper(base.DatabaseWrapper):
    def get_new_connection(self, conn_params):
        try:
            return super().get_new_connection(conn_params)
        except (OperationalError, self.Database.OperationalError) as exc:
            where = f"{self.settings_dict.get('HOST') or (self.settings_dict.get('OPTIONS') or {}).get('host') or 'localhost'}"
            if self.settings_dict.get("PORT"):
                where += f":{self.settings_dict['PORT']}"
            source = "DATABASE_URL" if os.environ.get("DATABASE_URL") else "the embedded PostgreSQL (DATABASE_URL unset)"
            raise OperationalError(
                f"Cannot reach the database configured by {source}: {where}/{self.settings_dict.get('NAME')} "
                f"({str(exc).strip().splitlines()[0]}). Expected a running PostgreSQL at "
                "postgresql://USER:PASSWORD@HOST:PORT/NAME; unset DATABASE_URL to use the embedded one."
            ) from exc

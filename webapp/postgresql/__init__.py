"""PostgreSQL backend that names ``DATABASE_URL`` when the server cannot be reached."""

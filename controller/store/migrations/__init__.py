"""Alembic migrations for the journal schema (shared by the local and the central database)."""

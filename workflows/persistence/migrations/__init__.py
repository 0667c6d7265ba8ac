"""The Alembic migrations: one file a revision, applied by ``aina-dsr db upgrade``."""

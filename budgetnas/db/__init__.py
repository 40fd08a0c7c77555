"""Database: SQLAlchemy 2 models, sessions, repository functions, Alembic migrations."""

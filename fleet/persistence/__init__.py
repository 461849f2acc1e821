"""SQLAlchemy models, the engine factory and repositories."""

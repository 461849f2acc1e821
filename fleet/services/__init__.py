"""Use cases. Services take a session, a principal and a clock; repositories only flush, callers commit."""

"""District simulator tests."""

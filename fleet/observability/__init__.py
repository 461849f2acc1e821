"""Prometheus metrics: the one place LabFleet metric names are defined."""

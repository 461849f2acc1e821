"""Seams to third-party libraries: the only modules allowed to touch a library's private API.

One module per library (`amqtt`, `paho`). Each states the version it was written against, pyproject.toml pins
that minor, and a contract test (tests/compat/) fails loudly when an upgrade moves what the module relies on.
These modules import nothing from `fleet`, so simulators and benchmarks may use them too.
"""

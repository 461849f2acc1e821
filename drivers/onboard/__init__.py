"""Code that runs on the boards, not on the host: shipped as package data, read as text and sent.

Nothing here is imported by the drivers; `drivers.mpy_helper_code` reads `mpy_helper.py` with
importlib.resources. The files are Python so that ruff and mypy check them and the tests can run them on
CPython with fakes for the board's modules.
"""

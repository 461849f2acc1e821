"""Simulated serial devices (MicroPython boards, StandardFirmata kits, robots) on ptys or memory links."""

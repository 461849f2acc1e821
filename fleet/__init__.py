"""LabFleet: the hardware-fleet backend for a school district's AI-education rollout."""

__version__ = "0.1.0"

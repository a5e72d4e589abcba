"""Sensors of the FLUX (Runware) provider."""

"""Triggers of the FLUX (Runware) provider."""

"""Hooks of the FLUX (Runware) provider."""

"""Operators of the FLUX (Runware) provider."""

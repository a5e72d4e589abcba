"""A human review of generated images that shows the pictures (see :mod:`.operator`)."""

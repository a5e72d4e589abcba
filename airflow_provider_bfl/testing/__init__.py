"""Test helpers shipped with the provider, for offline tests of clients and DAGs (no Runware account needed)."""

"""Test helpers shipped with the provider: an offline Runware API emulator and its pytest fixture."""

"""Submitting generations for a sensor or trigger to wait on, as an upstream operator would."""

from __future__ import annotations

from airflow_provider_bfl.hooks.bfl import BflHook


def submit(*prompts: str, number_results: int = 1, size: int = 512) -> dict[str, int]:
    """Submit async tasks through ``bfl_default``; ``{taskUUID: numberResults}`` in submission order."""
    hook = BflHook()
    try:
        outcome = hook.submit(
            {
                "positivePrompt": prompt,
                "width": size,
                "height": size,
                "deliveryMethod": "async",
                "numberResults": number_results,
            }
            for prompt in prompts
        )
    finally:
        hook.close()
    assert not outcome.rejected
    return outcome.pending

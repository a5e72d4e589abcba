"""One module per FLUX model on Runware, each defining ``SPEC``; listed by :func:`~airflow_provider_bfl.models.registry.models`."""

"""Airflow's simple auth manager, with one user who may not see the example pipeline.

The simple auth manager grants by role only (every viewer reads every DAG); per-DAG access needs an
auth manager that answers per DAG, as FAB or Keycloak do. This one denies ``outsider`` that DAG.
"""

from __future__ import annotations

from typing import Any

from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

OUTSIDER = "outsider"
HIDDEN_DAG = "example_bfl_catalogue_pipeline"


class DagScopedAuthManager(SimpleAuthManager):
    def is_authorized_dag(
        self, *, method: Any, user: Any, access_entity: Any = None, details: Any = None
    ) -> bool:
        if user.get_name() == OUTSIDER and details is not None and details.id == HIDDEN_DAG:
            return False
        return super().is_authorized_dag(
            method=method, user=user, access_entity=access_entity, details=details
        )

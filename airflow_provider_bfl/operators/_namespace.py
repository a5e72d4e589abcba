"""
The deployment namespace that derived taskUUIDs are salted with (see :mod:`airflow_provider_bfl._identity`).

Two deployments sharing one Runware account run the same DAGs with the same scheduled run_ids;
without a namespace they would derive the same taskUUIDs, and the second would silently receive
the first one's images instead of its own. The namespace must be identical for every try, worker
and restart of one deployment and differ between deployments, so it is looked up, in order:

1. the ``namespace`` extra of the ``bfl`` connection (set it to share generations on purpose, or to
   pin the namespace when moving a deployment to a new metadata database);
2. ``[bfl] namespace`` in the Airflow configuration (``AIRFLOW__BFL__NAMESPACE``);
3. the Airflow Variable ``bfl_deployment_namespace``, created with a random value on first use and
   kept in the deployment's metadata database, which every worker of the deployment shares.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from airflow_provider_bfl.exceptions import BflInvalidRequestError

VARIABLE = "bfl_deployment_namespace"
EXTRA = "namespace"
MAX_LENGTH = 200

log = logging.getLogger(__name__)


def deployment_namespace(conn_extra: dict[str, Any], conn_id: str) -> str:
    """The namespace for this deployment (see the module docstring for the order)."""
    configured = conn_extra.get(EXTRA)
    if configured is not None:
        return _checked(configured, f"the {EXTRA!r} extra of connection {conn_id!r}")
    from airflow.providers.common.compat.sdk import conf

    configured = conf.get("bfl", "namespace", fallback=None)
    if configured:
        return _checked(configured, "[bfl] namespace")
    return _from_variable()


def _checked(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_LENGTH:
        raise BflInvalidRequestError(
            f"{where} must be a non-empty string of at most {MAX_LENGTH} characters, got {value!r:.80}",
            parameter="namespace",
        )
    return value.strip()


def _from_variable() -> str:
    from airflow.sdk import Variable

    stored = Variable.get(VARIABLE, default=None)
    if stored:
        return str(stored)
    Variable.set(VARIABLE, str(uuid.uuid4()), description=_DESCRIPTION)
    # Read back what is stored: if two first tasks raced, both continue with the value that won.
    stored = Variable.get(VARIABLE)
    log.info("Created the deployment namespace for derived taskUUIDs (Variable %r)", VARIABLE)
    return str(stored)


_DESCRIPTION = (
    "Salts the taskUUIDs airflow-provider-bfl derives, so two deployments sharing a Runware account "
    "never receive each other's images. Changing or deleting it makes retries of running tasks pay again."
)

"""Provider metadata read by Airflow through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any

from airflow_provider_bfl import __version__
from airflow_provider_bfl.defaults import CONN_TYPE, DEFAULT_BASE_URL

UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["login", "port", "schema"],
    "relabeling": {"password": "API Key", "host": "Base URL"},
    "placeholders": {
        "host": DEFAULT_BASE_URL,
        "password": "Runware API key",
        "extra": '{"timeout": 60, "max_retries": 5}',
    },
}

#: Shown in rich-markup tables (`airflow providers list/hooks/get`), where "[pro]" would be read as
#: a style tag and vanish: the names say "pro" plainly.
INTEGRATION = "FLUX.1.1 pro on Runware"
HOOK_NAME = "Runware FLUX.1.1 pro"

_NUMBER = {"type": ["number", "null"]}
_INTEGER = {"type": ["integer", "null"]}


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-provider-bfl",
        "name": "Black Forest Labs FLUX (Runware)",
        "description": "Generate images with FLUX.1.1 pro (model bfl:2@1) through the Runware task API.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": INTEGRATION,
                "external-doc-url": "https://runware.ai/docs",
                "tags": ["ai"],
            }
        ],
        "operators": [
            {
                "integration-name": INTEGRATION,
                "python-modules": ["airflow_provider_bfl.operators.bfl", "airflow_provider_bfl.operators.qa"],
            }
        ],
        "sensors": [
            {
                "integration-name": INTEGRATION,
                "python-modules": ["airflow_provider_bfl.sensors.bfl"],
            }
        ],
        "hooks": [
            {
                "integration-name": INTEGRATION,
                "python-modules": ["airflow_provider_bfl.hooks.bfl"],
            }
        ],
        "triggers": [
            {
                "integration-name": INTEGRATION,
                "python-modules": ["airflow_provider_bfl.triggers.bfl"],
            }
        ],
        "connection-types": [
            {
                "connection-type": CONN_TYPE,
                "hook-class-name": "airflow_provider_bfl.hooks.bfl.BflHook",
                "hook-name": HOOK_NAME,
                "conn-fields": {
                    "timeout": {
                        "label": "Total timeout per HTTP request (seconds)",
                        "schema": {**_NUMBER, "default": 60},
                    },
                    "max_retries": {
                        "label": "Retries per HTTP call",
                        "schema": {**_INTEGER, "default": 5},
                    },
                    "retry_max_elapsed": {
                        "label": "Retry budget per call (seconds)",
                        "schema": {**_NUMBER, "default": 120},
                    },
                    "poll_interval": {
                        "label": "First poll interval (seconds)",
                        "schema": {**_NUMBER, "default": 1},
                    },
                    "poll_max_interval": {
                        "label": "Longest poll interval (seconds)",
                        "schema": {**_NUMBER, "default": 10},
                    },
                    "retry_backoff_base": {
                        "label": "First retry backoff (seconds)",
                        "schema": {**_NUMBER, "default": 0.5},
                    },
                    "retry_backoff_max": {
                        "label": "Longest retry backoff (seconds)",
                        "schema": {**_NUMBER, "default": 8},
                    },
                    "max_tasks_per_request": {
                        "label": "Tasks per HTTP request",
                        "schema": {**_INTEGER, "default": 100},
                    },
                    "poll_steady_polls": {
                        "label": "Polls at the first interval before backing off",
                        "schema": {**_INTEGER, "default": 3},
                    },
                    "max_poll_failures": {
                        "label": "Consecutive failed polls tolerated",
                        "schema": {**_INTEGER, "default": 5},
                    },
                    "max_response_bytes_per_image": {
                        "label": "Largest answer per image (bytes, decoded)",
                        "schema": {**_INTEGER, "default": 16 * 1024 * 1024},
                    },
                    "progress_log_interval": {
                        "label": "Seconds between progress lines while waiting",
                        "schema": {**_NUMBER, "default": 15},
                    },
                    "namespace": {
                        "label": "Namespace of derived taskUUIDs (default: this deployment's own)",
                        "schema": {"type": ["string", "null"]},
                    },
                },
                "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
            }
        ],
        "extra-links": ["airflow_provider_bfl.links.BflImageLink"],
        # Loaded by Airflow only with [core] lazy_discover_providers = False; the airflow.plugins
        # entry point (airflow_provider_bfl.ui.entry_point) covers the default.
        "plugins": [
            {"name": "bfl_image_gallery", "plugin-class": "airflow_provider_bfl.ui.plugin.BflGalleryPlugin"}
        ],
    }

"""
The gallery plugin for Airflow's ``airflow.plugins`` entry point group, when that is the only way in.

The provider's metadata names the plugin too (``plugins`` in ``get_provider_info``), but Airflow
loads provider plugins only with ``[core] lazy_discover_providers = False``; by default it reads
entry points only. Exactly one of the two paths offers the plugin, so it is registered once either
way (a second registration is reported by Airflow as a plugin import error).
"""

from __future__ import annotations

from airflow import settings

from airflow_provider_bfl.ui.plugin import BflGalleryPlugin

plugin: type[BflGalleryPlugin] | None = BflGalleryPlugin if settings.LAZY_LOAD_PROVIDERS else None

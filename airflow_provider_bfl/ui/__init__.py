"""
The image gallery: an Airflow UI plugin that shows a run's landed images next to its records.

Nothing here is imported while a DAG file is parsed: :mod:`~airflow_provider_bfl.ui.urls` is plain
string work (used by the extra link and the review), and FastAPI and Pillow load only when the
api-server first serves a gallery request.
"""

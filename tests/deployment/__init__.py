"""
The provider in a real multi-process Airflow 3 deployment (pytest marker ``deployment``).

``pytest -m deployment`` runs the scenarios alone (``make test`` runs them with everything else);
``make reliability`` runs each scenario several times and writes the figures to ``RESULTS.md``.
See :mod:`tests.deployment.deployment` for what is started and how.
"""

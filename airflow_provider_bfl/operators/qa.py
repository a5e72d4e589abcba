"""The image QA operator, at the conventional ``operators`` import path (it lives in :mod:`airflow_provider_bfl.qa`)."""

from airflow_provider_bfl.qa.operator import BflImageQAOperator

__all__ = ["BflImageQAOperator"]

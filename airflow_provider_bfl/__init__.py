"""Apache Airflow provider for FLUX.1.1 [pro] image generation through the Runware task API."""

__version__ = "0.1.0"

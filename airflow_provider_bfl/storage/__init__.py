"""Landing generated images in object storage: streamed, verified, atomic and idempotent."""

from airflow_provider_bfl.storage.landing import ImageLander, image_key

__all__ = ["ImageLander", "image_key"]

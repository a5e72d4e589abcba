"""
Presigned S3 PUT URLs for ``uploadEndpoint``: Runware uploads each result straight into the bucket.

The URL is signed with the Amazon provider's S3 hook (its credentials never reach Runware); the
provider then checks that the object arrived and verifies it like any landed image.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from airflow_provider_bfl.exceptions import BflInvalidRequestError

#: Seconds a presigned URL stays valid: long enough for a queued generation to finish.
PRESIGN_EXPIRES = 6 * 3600


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` -> ``(bucket, prefix)``; anything else is a clear error."""
    parts = urlsplit(uri)
    if parts.scheme not in ("s3", "s3a") or not parts.netloc:
        raise BflInvalidRequestError(
            f"upload_to must be an s3:// URI (presigned PUT URLs are S3's), got {uri!r}",
            parameter="upload_to",
        )
    return parts.netloc, parts.path.strip("/")


def presigned_put_url(
    bucket: str, key: str, *, aws_conn_id: str | None, expires_in: int = PRESIGN_EXPIRES
) -> str:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    url = S3Hook(aws_conn_id=aws_conn_id).generate_presigned_url(
        client_method="put_object", params={"Bucket": bucket, "Key": key}, expires_in=expires_in
    )
    if not url:
        raise BflInvalidRequestError(
            f"Could not presign a PUT URL for s3://{bucket}/{key}", parameter="upload_to"
        )
    return url

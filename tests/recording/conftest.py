"""The recording tests share the storage tests' S3 fixtures (a moto server
on loopback per session, fresh buckets, fake credentials that reach only
loopback)."""

from tests.storage.conftest import loopback_aws_env, make_s3, moto_server, s3_client

__all__ = ["loopback_aws_env", "make_s3", "moto_server", "s3_client"]

"""Bucket storage behind one interface: S3, GCS and local folders (filled in by the storage issue)."""

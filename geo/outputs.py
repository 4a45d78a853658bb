"""Where a run writes its GeoPackage: a local file, or an S3 object through a working copy.

A GeoPackage is a SQLite database, written in place under a lock (geo/geopackage.py), which S3
cannot offer. For ``s3://bucket/key.gpkg`` a run downloads the object (the buildings earlier
runs wrote elsewhere must stay), writes into that copy, and uploads it whole: readers of the
object see the old file or the new one, never a part. The upload is conditional on the object
being the one downloaded, so that the write of another run meanwhile is never lost: the run
writes its buildings into the newer object instead, and tries again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError
from .run_inputs import check_output
from .stores import S3Options, S3Store, default_cache


@dataclass
class RunOutput:
    """The GeoPackage of a run.

    Attributes:
        uri: The output as the user named it: a path or ``s3://bucket/key.gpkg``.
        path: The local file the run writes: the output itself, or its working copy.
        store: The S3 store holding the object (None for a local file).
        key: The object's key in ``store``.
        etag: The ETag of the object ``path`` was copied from (None: there was none).
    """

    uri: str
    path: Path
    store: S3Store | None = None
    key: str = ""
    etag: str | None = None

    def publish(self) -> bool:
        """Make what was written to ``path`` the output (for S3, upload it whole).

        Returns:
            False where the S3 object changed since it was downloaded: nothing was uploaded, and
            ``path`` now holds the newer object, for the run to write into again.
        """
        if self.store is None:
            return True
        etag = self.store.put_file(self.key, self.path, replaces=self.etag)
        if etag is None:
            self.etag = self.store.fetch(self.key, self.path)
            return False
        self.etag = etag
        return True


def open_output(out: str, crs: str, s3: S3Options) -> RunOutput:
    """The output ``out`` of a run in ``crs``, with the S3 object's current content fetched.

    Raises:
        InputError: The existing output is not a GeoPackage this project wrote in ``crs``.
        StoreError: The S3 object cannot be read.
    """
    if not out.startswith("s3://"):
        check_output(out, crs)
        return RunOutput(out, Path(out).expanduser())
    bucket_and_key, _, name = out.removeprefix("s3://").rpartition("/")
    store = S3Store(f"s3://{bucket_and_key}", s3)
    # One working folder per output, the same for every try: a retried run resumes from the
    # batches its earlier try left beside the copy (tasks/resume.py).
    digest = hashlib.sha256(f"{s3.endpoint_url}|{out}".encode()).hexdigest()[:24]
    path = default_cache() / "outputs" / digest / name
    path.parent.mkdir(parents=True, exist_ok=True)
    etag = store.fetch(name, path)
    if etag is None:
        path.unlink(missing_ok=True)  # a copy of an object since deleted
    try:
        check_output(path, crs)
    except InputError as error:
        raise InputError(out, error.cause) from None
    return RunOutput(out, path, store, name, etag)

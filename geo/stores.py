"""One interface over tiles in a local folder and in S3.

A store lists objects by prefix, reads and writes bytes, and hands out a local path for an object
so that rasterio can do window reads on it. S3 objects are downloaded once into a cache keyed by
the object's identity (bucket, key, ETag and size): a repeated run reads from the cache, and an
object that changed in the bucket is fetched again.

A raster's header (size, CRS, geotransform) can also be read in place, through GDAL's /vsis3/
with range requests, so that finding which tiles cover an area downloads none of them.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import boto3
import botocore.exceptions
import rasterio
from botocore import UNSIGNED
from botocore.config import Config
from rasterio.session import AWSSession

from .errors import StoreError
from .files import atomic_file

# S3 fails a share of requests as a matter of course: throttling (503 SlowDown) under the bursts of
# range reads a run makes, its own 500s, and connections reset on the way. Both HTTP clients the
# stores use retry those with exponential backoff and jitter, configured here and nowhere else:
# - boto3 (listing, HEAD, downloads): botocore's "standard" mode retries throttling codes, 5xx and
#   connection errors (resets included) until an answer's headers arrive, and S3Store._download
#   retries a body that breaks off. botocore's retry quota (a token bucket per client) stops the
#   retries of a client whose requests mostly keep failing, so a broken endpoint fails fast
#   rather than being hammered.
# - GDAL (tile headers read in place through /vsis3/): GDAL_HTTP_RETRY_CODES are retried and, on
#   GDAL 3.10, curl's "Connection reset by peer" and timeouts too; the delay starts at
#   GDAL_HTTP_RETRY_DELAY seconds and grows about 2.25 times per retry.
# Ten attempts each: a request is lost only if ten draws in a row fail, which at a 50% fault share
# is one request in a thousand (tests/test_s3_faults.py measures what a whole run survives).
S3_MAX_ATTEMPTS = 10
GDAL_HTTP_RETRY_OPTIONS = {
    "GDAL_HTTP_MAX_RETRY": str(S3_MAX_ATTEMPTS - 1),
    "GDAL_HTTP_RETRY_DELAY": "0.25",
    "GDAL_HTTP_RETRY_CODES": "429,500,502,503,504",
}


def default_cache() -> Path:
    """Where downloaded objects are kept: $FOOTPRINTS_CACHE, else ~/.cache/footprints."""
    return Path(os.environ.get("FOOTPRINTS_CACHE", Path.home() / ".cache" / "footprints"))


@dataclass(frozen=True)
class ObjectInfo:
    """An object in a store: its key relative to the store's root, size in bytes and identity tag."""

    key: str
    size: int
    etag: str


class TileStore(Protocol):
    """What every store offers; keys are relative to the store's root and use forward slashes."""

    uri: str

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """All objects whose key starts with ``prefix``, sorted by key."""
        ...

    def read_bytes(self, key: str) -> bytes:
        """The whole content of one object."""
        ...

    def write_bytes(self, key: str, data: bytes) -> None:
        """Create or replace one object; readers never see a half-written object."""
        ...

    def local_path(self, key: str, companions: tuple[str, ...] = ()) -> Path:
        """A local file holding the object, for libraries that open paths (rasterio, pyogrio).

        ``companions`` are keys of sidecar files (``X.tif.aux.xml``) that must lie beside it under
        their own names for GDAL to find them.
        """
        ...

    def describe(self, key: str) -> str:
        """The object's full address, for messages."""
        ...

    def header_path(self, key: str) -> str:
        """A path GDAL opens in place (under ``gdal_env``) to read the object's header cheaply."""
        ...

    def gdal_env(self) -> rasterio.Env:
        """The GDAL settings ``header_path`` needs."""
        ...


class LocalStore:
    """Objects are files below a root folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.uri = str(self.root)

    def describe(self, key: str) -> str:
        """The file's path."""
        return str(self.root / key)

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Files below the root whose relative path starts with ``prefix``."""
        if not self.root.is_dir():
            raise StoreError(self.uri, "no such folder")
        # Walk only the deepest folder named by the prefix, not the whole tree.
        base = self.root / prefix.rpartition("/")[0]
        found = []
        for path in base.rglob("*") if base.is_dir() else []:
            key = path.relative_to(self.root).as_posix()
            if path.is_file() and key.startswith(prefix):
                stat = path.stat()
                found.append(ObjectInfo(key, stat.st_size, f"{stat.st_mtime_ns:x}-{stat.st_size:x}"))
        return sorted(found, key=lambda info: info.key)

    def header_path(self, key: str) -> str:
        """The file's path."""
        return str(self.root / key)

    def gdal_env(self) -> rasterio.Env:
        """No settings needed."""
        return rasterio.Env()

    def read_bytes(self, key: str) -> bytes:
        """The file's content."""
        return self.local_path(key).read_bytes()

    def write_bytes(self, key: str, data: bytes) -> None:
        """Write through a temporary file in the same folder, renamed over the target when complete."""
        with atomic_file(self.root / key) as f:
            f.write(data)

    def local_path(self, key: str, companions: tuple[str, ...] = ()) -> Path:
        """The file itself (its sidecars already lie beside it)."""
        path = self.root / key
        if not path.is_file():
            raise StoreError(str(path), "no such file")
        return path


@dataclass(frozen=True)
class S3Options:
    """How to reach an S3 API.

    Attributes:
        endpoint_url: An S3-compatible endpoint (MinIO, moto, ...); None for AWS.
        region: The bucket's region; None lets boto3 decide.
        profile: A named profile from the AWS config files; None for the default chain.
        unsigned: Send anonymous requests, as public buckets (SpaceNet's) need.
    """

    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    unsigned: bool = False


class S3Store:
    """Objects below ``s3://bucket/prefix``, read through boto3 and cached locally."""

    def __init__(self, uri: str, options: S3Options = S3Options(), cache_dir: Path | None = None) -> None:
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        if not bucket:
            raise StoreError(uri, "an S3 address needs a bucket: s3://bucket/prefix")
        self.uri = uri.rstrip("/")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.cache_dir = Path(cache_dir or default_cache()) / "s3"
        config = Config(
            retries={"mode": "standard", "max_attempts": S3_MAX_ATTEMPTS},
            connect_timeout=5,
            read_timeout=60,
            signature_version=UNSIGNED if options.unsigned else None,
        )
        try:
            session = boto3.Session(profile_name=options.profile, region_name=options.region)
        except botocore.exceptions.ProfileNotFound as error:
            raise StoreError(self.uri, f"AWS profile {options.profile!r} not found") from error
        self.session = session
        self.client = session.client("s3", endpoint_url=options.endpoint_url, config=config)
        self.options = options

    def _full_key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def describe(self, key: str) -> str:
        """The object's s3:// address."""
        return f"s3://{self.bucket}/{self._full_key(key)}"

    def _call(self, what: str, method: Callable[..., dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
        """Run one boto3 call, turning its exceptions into a StoreError that names ``what``."""
        try:
            return method(Bucket=self.bucket, **kwargs)
        except botocore.exceptions.ClientError as error:
            raise StoreError(what, _explain_client_error(error)) from error
        except botocore.exceptions.NoCredentialsError as error:
            raise StoreError(
                what,
                "no AWS credentials found: configure a profile or AWS_* variables, "
                "or use unsigned requests for a public bucket",
            ) from error
        except (
            botocore.exceptions.EndpointConnectionError,
            botocore.exceptions.ConnectTimeoutError,
        ) as error:
            endpoint = self.options.endpoint_url or "the AWS endpoint"
            raise StoreError(what, f"cannot reach {endpoint} ({error})") from error
        except (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError) as error:
            # Resets and read timeouts that outlasted every retry (S3_MAX_ATTEMPTS).
            endpoint = self.options.endpoint_url or "the AWS endpoint"
            raise StoreError(what, f"the connection to {endpoint} kept failing ({error})") from error

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Objects whose key (relative to the store's prefix) starts with ``prefix``."""
        root = f"{self.prefix}/" if self.prefix else ""
        found = []
        token: dict[str, str] = {}
        while True:
            page = self._call(
                self.describe(prefix),
                self.client.list_objects_v2,
                Prefix=root + prefix,
                **token,
            )
            for item in page.get("Contents", []):
                found.append(ObjectInfo(item["Key"][len(root) :], item["Size"], item["ETag"].strip('"')))
            if not page.get("IsTruncated"):
                return sorted(found, key=lambda info: info.key)
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def header_path(self, key: str) -> str:
        """The object's /vsis3/ path."""
        return f"/vsis3/{self.bucket}/{self._full_key(key)}"

    def gdal_env(self) -> rasterio.Env:
        """GDAL's S3 settings from the store's options: credentials, endpoint, unsigned requests.

        Failed requests are retried with backoff (see GDAL_HTTP_RETRY_OPTIONS).
        """
        options: dict[str, Any] = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", **GDAL_HTTP_RETRY_OPTIONS}
        endpoint = None
        if self.options.endpoint_url:
            url = urlsplit(self.options.endpoint_url)
            endpoint = url.netloc
            # A custom endpoint (MinIO, moto) serves buckets as paths, often over plain HTTP.
            options |= {"AWS_HTTPS": "YES" if url.scheme == "https" else "NO", "AWS_VIRTUAL_HOSTING": "FALSE"}
        session = AWSSession(self.session, aws_unsigned=self.options.unsigned, endpoint_url=endpoint)
        return rasterio.Env(session=session, **options)

    def head(self, key: str) -> ObjectInfo:
        """Size and ETag of one object, without its content."""
        meta = self._call(self.describe(key), self.client.head_object, Key=self._full_key(key))
        return ObjectInfo(key, meta["ContentLength"], meta["ETag"].strip('"'))

    def read_bytes(self, key: str) -> bytes:
        """The object's content (through the cache)."""
        return self.local_path(key).read_bytes()

    def write_bytes(self, key: str, data: bytes) -> None:
        """Upload one object (S3 puts are atomic: readers see the old or the new object)."""
        self._call(self.describe(key), self.client.put_object, Key=self._full_key(key), Body=data)

    def fetch(self, key: str, path: Path) -> str | None:
        """Download the object, if there is one, into ``path`` (whole or not at all).

        Returns:
            Its ETag, or None where there is no such object (``path`` is then left alone).
        """
        try:
            info = self.head(key)
        except StoreError as error:
            if error.cause.startswith("no such object"):
                return None
            raise
        path.unlink(missing_ok=True)
        self._download(info, path)
        return info.etag

    def put_file(self, key: str, path: Path, replaces: str | None) -> str | None:
        """Upload a file as the object, provided the object is still the one the file was made from.

        A put is atomic (readers see the old or the new object), and conditional: it replaces
        the object of ETag ``replaces``, or with ``replaces`` None creates one that must not
        exist yet, so that a write by another run meanwhile is never overwritten.

        Returns:
            The new object's ETag; None where the object changed meanwhile (nothing was uploaded).
        """
        condition = {"IfMatch": replaces} if replaces else {"IfNoneMatch": "*"}
        try:
            with path.open("rb") as body:
                answer = self._call(
                    self.describe(key),
                    self.client.put_object,
                    Key=self._full_key(key),
                    Body=body,
                    **condition,
                )
        except StoreError as error:
            cause = error.__cause__
            # 412: the object is not the one named; 409: another conditional write raced this one.
            if isinstance(cause, botocore.exceptions.ClientError) and cause.response.get("Error", {}).get(
                "Code"
            ) in ("PreconditionFailed", "ConditionalRequestConflict"):
                return None
            raise
        return answer["ETag"].strip('"')

    def local_path(self, key: str, companions: tuple[str, ...] = ()) -> Path:
        """The cached copy of the object (and its companions), downloaded if the cache lacks it.

        The cache folder is named by a digest of every object's identity, so a changed object or
        sidecar gets a fresh folder and a stale copy is never read.
        """
        infos = [self.head(k) for k in (key, *companions)]
        identity = "|".join(
            f"{self.options.endpoint_url}|{self.bucket}|{self._full_key(i.key)}|{i.etag}|{i.size}"
            for i in infos
        )
        digest = hashlib.sha256(identity.encode()).hexdigest()[:32]
        folder = self.cache_dir / digest[:2] / digest
        for info in infos:
            self._download(info, folder / Path(info.key).name)
        return folder / Path(key).name

    def _download(self, info: ObjectInfo, path: Path) -> None:
        if path.is_file() and path.stat().st_size == info.size:
            return
        what = self.describe(info.key)
        # botocore retries a request until its answer's headers arrive; a connection that breaks
        # while the body streams in is retried here, the whole object again, with the same
        # backoff as botocore's standard mode.
        for attempt in range(1, S3_MAX_ATTEMPTS + 1):
            body = self._call(what, self.client.get_object, Key=self._full_key(info.key))
            try:
                with atomic_file(path) as f:
                    shutil.copyfileobj(body["Body"], f)
                return
            except (botocore.exceptions.HTTPClientError, botocore.exceptions.IncompleteReadError) as error:
                if attempt == S3_MAX_ATTEMPTS:
                    raise StoreError(what, f"the download broke off ({attempt} attempts; {error})") from error
                time.sleep(random.random() * min(2 ** (attempt - 1), 20))


def _explain_client_error(error: botocore.exceptions.ClientError) -> str:
    """A sentence for the S3 error codes that people meet, with the service's own code kept."""
    code = error.response.get("Error", {}).get("Code", "")
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    reasons = {
        "NoSuchKey": "no such object",
        "404": "no such object",
        "NotFound": "no such object",
        "NoSuchBucket": "no such bucket",
        "InvalidAccessKeyId": "the access key is not known to this S3 service (wrong credentials?)",
        "SignatureDoesNotMatch": "the secret key does not match the access key (wrong credentials?)",
        "AccessDenied": "access denied (wrong credentials, or no permission for this object)",
        "403": "access denied (wrong credentials, or no permission for this object)",
    }
    reason = reasons.get(code, error.response.get("Error", {}).get("Message") or "request failed")
    return f"{reason} [S3 {code or status}]"


def open_store(
    location: str | Path, options: S3Options = S3Options(), cache_dir: Path | None = None
) -> TileStore:
    """The store for ``s3://bucket/prefix`` or a local folder.

    Args:
        location: An ``s3://`` address or a folder path.
        options: How to reach S3; ignored for folders.
        cache_dir: Where S3 objects are cached (default: see default_cache).

    Returns:
        An S3Store or a LocalStore.
    """
    location = str(location)
    if location.startswith("s3://"):
        return S3Store(location, options, cache_dir)
    return LocalStore(location)

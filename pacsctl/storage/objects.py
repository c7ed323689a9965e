"""A small typed client for an S3-compatible object store, named by `s3://BUCKET/PREFIX`.

Knows no DICOM. Keys are given relative to the URL's prefix (`objects/ab/cd/1.2.3.dcm`), so a
caller never joins prefixes itself. Every object written carries its SHA-256 in its user
metadata (`x-amz-meta-sha256`) and, where the store supports it, as the S3 checksum: an ETag is
no content hash (multipart ETags are not MD5s), so nothing here ever relies on one.

Endpoint, region and credentials come the way every AWS tool takes them (`AWS_ENDPOINT_URL`,
`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION`, `AWS_PROFILE`, the AWS CLI's
config files), `endpoint_url` overriding them. A custom endpoint (Ceph, Swift, MinIO) is
addressed path-style unless the config file says otherwise. Failures are typed
(`ObjectStoreFailure`) and their messages never carry credentials; botocore's own debug log
(which prints request headers) is kept quiet.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from pacsctl.errors import EXIT_ERROR, EXIT_NETWORK, PacsctlError, UsageError

SCHEME = "s3://"
SHA256_META = "sha256"  # the user-metadata key holding an object's SHA-256 (hex)
MULTIPART_THRESHOLD = 32 << 20  # objects this large go up in parts
PART_SIZE = 8 << 20  # S3's minimum is 5 MiB (but for the last part)
MIN_PART_SIZE = 5 << 20
READ_CHUNK = 1 << 20
DEFAULT_REGION = "us-east-1"
# A dead link (packets dropped, nothing closed) must end a run, not hang it: every socket
# connect and read gives up after these many seconds, each request after MAX_ATTEMPTS tries
# (botocore's "standard" retries: exponential back-off, at most 20 s between tries). A request
# on a dead link so fails within MAX_ATTEMPTS * (CONNECT_TIMEOUT + READ_TIMEOUT) + ~15 s of
# back-off: about 6 minutes with these values. Once one has, the store's next requests try
# once each (at most 70 s) until one succeeds: a run's last-chance writes (its manifest, its
# lease) do not add a full retry cycle each.
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0
MAX_ATTEMPTS = 5

_AUTH_CODES = frozenset(
    {
        "403",
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidToken",
        "ExpiredToken",
        "TokenRefreshRequired",
        "AuthorizationHeaderMalformed",
        "InvalidSecurity",
        "AllAccessDisabled",
    }
)
_NO_BUCKET_CODES = frozenset({"NoSuchBucket"})
_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
# A conditional PUT refused: the object exists (412), or another conditional write raced it (409).
_PRECONDITION_CODES = frozenset({"412", "PreconditionFailed", "409", "ConditionalRequestConflict"})
_UNSUPPORTED_CODES = frozenset({"501", "NotImplemented"})  # Swift's s3api: no conditional PUTs


class ObjectStoreFailure(Enum):
    """What went wrong with the store, decided from error codes and exception types."""

    AUTH = "auth"  # no credentials, or the store refused them (wrong key, no permission)
    NO_BUCKET = "no_bucket"  # the bucket does not exist
    NOT_FOUND = "not_found"  # the object does not exist
    NETWORK = "network"  # the endpoint could not be reached, or the connection broke / timed out
    CONTENT = "content"  # the bytes read are not the ones the caller said they are
    OTHER = "other"  # any other refusal (quota, invalid request, server error)


class ObjectStoreError(PacsctlError):
    """An object-store request failed; `failure` says how (exit 4 for the network, else 1)."""

    def __init__(
        self, message: str, failure: ObjectStoreFailure, hint: str | None = None, code: str = ""
    ) -> None:
        super().__init__(message, hint)
        self.failure = failure
        self.code = code  # the store's error code, when it answered one
        self.exit_code = EXIT_NETWORK if failure is ObjectStoreFailure.NETWORK else EXIT_ERROR


class CreateResult(Enum):
    """What a conditional create (`ObjectStore.create_bytes`) did."""

    CREATED = "created"
    EXISTS = "exists"  # an object of that name is there: nothing written
    UNSUPPORTED = "unsupported"  # the store has no conditional writes: nothing written


@dataclass(frozen=True)
class ObjectURL:
    """`s3://BUCKET/PREFIX`: a bucket and a key prefix (no leading or trailing slash)."""

    bucket: str
    prefix: str = ""

    @classmethod
    def parse(cls, url: str) -> ObjectURL:
        """Parse `s3://BUCKET[/PREFIX]`; a usage error for anything else."""
        if not url.startswith(SCHEME):
            raise UsageError(f"not an object store URL: {url}", hint="write s3://BUCKET/PREFIX")
        bucket, _, prefix = url[len(SCHEME) :].partition("/")
        if not bucket:
            raise UsageError(f"no bucket in {url}", hint="write s3://BUCKET/PREFIX")
        return cls(bucket, prefix.strip("/"))

    def key(self, relpath: str) -> str:
        """The full key of `relpath` under the prefix."""
        return f"{self.prefix}/{relpath}" if self.prefix else relpath

    def relative(self, key: str) -> str:
        """`key` relative to the prefix (the inverse of `key`)."""
        return key[len(self.prefix) + 1 :] if self.prefix else key

    def __str__(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.prefix}" if self.prefix else f"{SCHEME}{self.bucket}"


def is_object_url(text: str | os.PathLike[str]) -> bool:
    """Whether a destination names an object store rather than a folder."""
    return isinstance(text, str) and text.startswith(SCHEME)


@dataclass(frozen=True)
class ObjectInfo:
    """One object: its key relative to the prefix, size, and SHA-256 when known (metadata)."""

    relpath: str
    size: int
    sha256: str | None = None  # from the object's metadata; listings do not carry it
    etag: str = ""  # the store's tag: not a content hash for multipart objects
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PutResult:
    """What was stored: size and SHA-256 of the bytes sent, and whether it went in parts."""

    size: int
    sha256: str
    parts: int = 1


@dataclass(frozen=True)
class BucketProtection:
    """Versioning and Object Lock (WORM) of a bucket, as far as the store tells."""

    versioning: str = ""  # "Enabled", "Suspended", or "" (never enabled / not supported)
    object_lock: bool = False
    retention_mode: str = ""  # GOVERNANCE / COMPLIANCE default retention, if any
    retention_days: int = 0

    @property
    def worm(self) -> bool:
        """Whether objects written cannot be deleted or overwritten for a while (ransomware-safe)."""
        return self.object_lock and bool(self.retention_mode)

    def describe(self) -> str:
        """One line for people."""
        parts = [f"versioning {self.versioning.lower() if self.versioning else 'off'}"]
        if self.object_lock:
            lock = "object lock on"
            if self.retention_mode:
                lock += f" ({self.retention_mode.lower()}, {self.retention_days} days by default)"
            parts.append(lock)
        else:
            parts.append("no object lock")
        return ", ".join(parts)


class ObjectStore:
    """One bucket and prefix of an S3-compatible store; safe to share between threads."""

    def __init__(
        self,
        url: str | ObjectURL,
        *,
        endpoint_url: str | None = None,
        max_connections: int = 16,
        multipart_threshold: int = MULTIPART_THRESHOLD,
        part_size: int = PART_SIZE,
    ) -> None:
        self.url = url if isinstance(url, ObjectURL) else ObjectURL.parse(url)
        self.multipart_threshold = multipart_threshold
        self.part_size = max(part_size, MIN_PART_SIZE)
        self._full_client = self._client = _make_client(endpoint_url, max_connections)
        self._single_try_client: Any = None
        self._endpoint_url, self._max_connections = endpoint_url, max_connections
        self._client_lock = threading.Lock()
        self._local = threading.local()

    # ---- the bucket ----

    def check_access(self) -> None:
        """Fail now, typed, when the bucket is missing or the credentials are refused."""
        self._call("access", "", lambda: self._client.head_bucket(Bucket=self.url.bucket))

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (tests, first use of a private store)."""
        try:
            self.check_access()
        except ObjectStoreError as exc:
            if exc.failure is not ObjectStoreFailure.NO_BUCKET:
                raise
            self._call("create bucket", "", lambda: self._client.create_bucket(Bucket=self.url.bucket))

    def protection(self) -> BucketProtection:
        """Versioning and Object Lock of the bucket; a store without these APIs reports none."""
        versioning = ""
        try:
            answer = self._call(
                "versioning", "", lambda: self._client.get_bucket_versioning(Bucket=self.url.bucket)
            )
            versioning = str(answer.get("Status", ""))
        except ObjectStoreError as exc:
            if exc.failure is not ObjectStoreFailure.OTHER:
                raise
        lock, mode, days = False, "", 0
        try:
            answer = self._call(
                "object lock", "", lambda: self._client.get_object_lock_configuration(Bucket=self.url.bucket)
            )
            config = answer.get("ObjectLockConfiguration") or {}
            lock = config.get("ObjectLockEnabled") == "Enabled"
            retention = (config.get("Rule") or {}).get("DefaultRetention") or {}
            mode = str(retention.get("Mode", ""))
            days = int(retention.get("Days", 0)) or 365 * int(retention.get("Years", 0))
        except ObjectStoreError as exc:
            if exc.failure not in (ObjectStoreFailure.OTHER, ObjectStoreFailure.NOT_FOUND):
                raise
        return BucketProtection(versioning, lock, mode, days)

    # ---- objects ----

    def put_bytes(self, relpath: str, data: bytes, *, metadata: dict[str, str] | None = None) -> PutResult:
        """Store `data` under `relpath` in one request, its SHA-256 in metadata and as checksum."""
        digest = hashlib.sha256(data).digest()
        meta = {**(metadata or {}), SHA256_META: digest.hex()}
        self._call(
            "put",
            relpath,
            lambda: self._client.put_object(
                Bucket=self.url.bucket,
                Key=self.url.key(relpath),
                Body=data,
                Metadata=meta,
                ChecksumSHA256=base64.b64encode(digest).decode("ascii"),
            ),
        )
        return PutResult(len(data), digest.hex())

    def create_bytes(self, relpath: str, data: bytes) -> CreateResult:
        """Store `data` only if no object `relpath` exists, in one conditional PUT
        (`If-None-Match: *`): race-free where the store supports it (AWS S3, recent MinIO/Ceph)."""
        try:
            self._call(
                "put",
                relpath,
                lambda: self._client.put_object(
                    Bucket=self.url.bucket, Key=self.url.key(relpath), Body=data, IfNoneMatch="*"
                ),
            )
        except ObjectStoreError as exc:
            if exc.code in _PRECONDITION_CODES:
                return CreateResult.EXISTS
            if exc.code in _UNSUPPORTED_CODES:
                return CreateResult.UNSUPPORTED
            raise
        return CreateResult.CREATED

    def put_file(
        self, relpath: str, path: str | os.PathLike[str], *, expected_sha256: str | None = None
    ) -> PutResult:
        """Upload the file at `path` as `relpath` (in parts when large).

        With `expected_sha256`, bytes that do not hash to it are never stored (a CONTENT
        failure): the object is only created once the whole file was read and matched.
        """
        with open(path, "rb", buffering=0) as fh:
            size = os.fstat(fh.fileno()).st_size
            if size < self.multipart_threshold:
                data = fh.read()
                digest = hashlib.sha256(data).hexdigest()
                _check_content(relpath, digest, expected_sha256)
                return self.put_bytes(relpath, data)
            return self._put_multipart(relpath, fh, expected_sha256)

    def _put_multipart(self, relpath: str, fh: Any, expected_sha256: str | None) -> PutResult:
        """A multipart upload whose final SHA-256 (metadata) is the whole file's.

        Metadata is fixed when the upload is created, before the file is read, so the expected
        hash is what goes into it; without one the file is hashed in a first pass.
        """
        key = self.url.key(relpath)
        if expected_sha256 is None:
            expected_sha256 = _sha256_of(fh)
            fh.seek(0)
        created = self._call(
            "put",
            relpath,
            lambda: self._client.create_multipart_upload(
                Bucket=self.url.bucket,
                Key=key,
                Metadata={SHA256_META: expected_sha256},
                ChecksumAlgorithm="SHA256",
            ),
        )
        upload_id = created["UploadId"]
        whole = hashlib.sha256()
        parts: list[dict[str, Any]] = []
        size = 0
        try:
            while chunk := fh.read(self.part_size):
                whole.update(chunk)
                size += len(chunk)
                part_digest = base64.b64encode(hashlib.sha256(chunk).digest()).decode("ascii")
                number = len(parts) + 1
                answer = self._call(
                    "put",
                    relpath,
                    lambda chunk=chunk, number=number, part_digest=part_digest: self._client.upload_part(
                        Bucket=self.url.bucket,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=chunk,
                        ChecksumSHA256=part_digest,
                    ),
                )
                part = {"PartNumber": number, "ETag": answer["ETag"]}
                if answer.get("ChecksumSHA256"):  # the store keeps per-part checksums
                    part["ChecksumSHA256"] = answer["ChecksumSHA256"]
                parts.append(part)
            _check_content(relpath, whole.hexdigest(), expected_sha256)
            self._call(
                "put",
                relpath,
                lambda: self._client.complete_multipart_upload(
                    Bucket=self.url.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
                ),
            )
        except BaseException:
            try:  # an abandoned upload costs storage until the bucket's lifecycle rules remove it
                self._client.abort_multipart_upload(Bucket=self.url.bucket, Key=key, UploadId=upload_id)
            except Exception:  # noqa: BLE001 - the first failure is the one to report
                pass
            raise
        return PutResult(size, whole.hexdigest(), len(parts))

    def head(self, relpath: str) -> ObjectInfo | None:
        """Size and metadata of one object, or None when there is none."""
        try:
            answer = self._call(
                "head",
                relpath,
                lambda: self._client.head_object(Bucket=self.url.bucket, Key=self.url.key(relpath)),
            )
        except ObjectStoreError as exc:
            if exc.failure is ObjectStoreFailure.NOT_FOUND:
                return None
            raise
        metadata = {str(k): str(v) for k, v in (answer.get("Metadata") or {}).items()}
        return ObjectInfo(
            relpath,
            int(answer["ContentLength"]),
            metadata.get(SHA256_META),
            str(answer.get("ETag", "")).strip('"'),
            metadata,
        )

    def iter_chunks(self, relpath: str, chunk_size: int = READ_CHUNK) -> Iterator[bytes]:
        """The bytes of one object, streamed (a NOT_FOUND failure when it does not exist)."""
        answer = self._call(
            "get", relpath, lambda: self._client.get_object(Bucket=self.url.bucket, Key=self.url.key(relpath))
        )
        body = answer["Body"]
        try:
            while True:
                chunk = self._call("get", relpath, lambda: body.read(chunk_size))
                if not chunk:
                    return
                yield chunk
        finally:
            body.close()

    def get_bytes(self, relpath: str) -> bytes:
        """The whole object in memory (small objects: manifests)."""
        return b"".join(self.iter_chunks(relpath))

    def iter_objects(self, under: str = "") -> Iterator[ObjectInfo]:
        """Every object under `under` (relative to the prefix), with sizes; no metadata."""
        prefix = self.url.key(under) if under else (f"{self.url.prefix}/" if self.url.prefix else "")
        paginator = self._client.get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=self.url.bucket, Prefix=prefix)
        iterator = iter(pages)
        while True:
            page = self._call("list", under, lambda: next(iterator, None))
            if page is None:
                return
            for item in page.get("Contents") or ():
                yield ObjectInfo(
                    self.url.relative(item["Key"]), int(item["Size"]), None, str(item["ETag"]).strip('"')
                )

    def list_with_metadata(self, under: str = "", threads: int = 16) -> Iterator[ObjectInfo]:
        """Like `iter_objects`, each object's metadata (its SHA-256) read with a HEAD, `threads` at a time."""
        with ThreadPoolExecutor(max_workers=threads) as pool:
            for info in pool.map(lambda o: self.head(o.relpath), self.iter_objects(under)):
                if info is not None:  # deleted between listing and head
                    yield info

    def delete(self, relpaths: list[str]) -> None:
        """Delete objects (1000 a request); objects already gone are no failure."""
        for start in range(0, len(relpaths), 1000):
            batch = [{"Key": self.url.key(p)} for p in relpaths[start : start + 1000]]
            answer = self._call(
                "delete",
                "",
                lambda batch=batch: self._client.delete_objects(
                    Bucket=self.url.bucket, Delete={"Objects": batch, "Quiet": True}
                ),
            )
            errors = [e for e in answer.get("Errors") or () if e.get("Code") not in _NOT_FOUND_CODES]
            if errors:
                first = errors[0]
                raise _error_for(
                    "delete", self.url, self.url.relative(first.get("Key", "")), str(first.get("Code"))
                )

    def _call(self, what: str, relpath: str, request: Any) -> Any:
        """Run one request, its failures turned into a typed ObjectStoreError."""
        from botocore import exceptions as bx

        try:
            answer = request()
        except (bx.EndpointConnectionError, bx.ConnectionClosedError, bx.ConnectTimeoutError) as exc:
            self._link_failed()
            raise ObjectStoreError(
                f"{what} {self.url}: cannot reach the store ({type(exc).__name__})",
                ObjectStoreFailure.NETWORK,
                hint="check the endpoint (AWS_ENDPOINT_URL or --endpoint-url) and the network",
            ) from None
        except (bx.ReadTimeoutError, bx.ResponseStreamingError, bx.HTTPClientError) as exc:
            self._link_failed()
            raise ObjectStoreError(
                f"{what} {_where(self.url, relpath)}: the connection broke ({type(exc).__name__})",
                ObjectStoreFailure.NETWORK,
                hint="run it again: completed work is kept",
            ) from None
        except bx.ClientError as exc:
            self._client = self._full_client  # an answer, if a refusal: the link works
            code = str((exc.response.get("Error") or {}).get("Code", ""))
            raise _error_for(what, self.url, relpath, code) from None
        except bx.NoCredentialsError:
            raise ObjectStoreError(
                f"no credentials for {self.url}",
                ObjectStoreFailure.AUTH,
                hint="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE",
            ) from None
        except bx.BotoCoreError as exc:  # configuration: a profile that does not exist, a bad region
            raise ObjectStoreError(
                f"{what} {self.url}: {type(exc).__name__}",
                ObjectStoreFailure.OTHER,
                hint="check the AWS settings",
            ) from None
        if self._client is not self._full_client:  # the link works again: full retries
            self._client = self._full_client
        return answer

    def _link_failed(self) -> None:
        """A request failed on the network after all its tries: the next ones try once."""
        with self._client_lock:
            if self._single_try_client is None:
                self._single_try_client = _make_client(self._endpoint_url, self._max_connections, attempts=1)
            self._client = self._single_try_client


def _where(url: ObjectURL, relpath: str) -> str:
    return f"{url}/{relpath}" if relpath else str(url)


def _error_for(what: str, url: ObjectURL, relpath: str, code: str) -> ObjectStoreError:
    """The typed error for an S3 error code (the message names the URL, never a credential)."""
    where = _where(url, relpath)
    if code in _AUTH_CODES and what == "delete":  # keys that may write may still not delete
        return ObjectStoreError(
            f"delete {where}: the store refused it ({code})",
            ObjectStoreFailure.AUTH,
            hint="an Object Lock retention or the bucket's policy forbids deleting",
        )
    if code in _AUTH_CODES:
        return ObjectStoreError(
            f"{what} {where}: the store refused the credentials ({code})",
            ObjectStoreFailure.AUTH,
            hint="check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) and the permissions",
        )
    if code in _NO_BUCKET_CODES or (code in _NOT_FOUND_CODES and not relpath):
        return ObjectStoreError(
            f"no bucket {url.bucket} at the store",
            ObjectStoreFailure.NO_BUCKET,
            hint="create it first (e.g. `aws s3 mb s3://BUCKET`), or check the endpoint",
        )
    if code in _NOT_FOUND_CODES:
        return ObjectStoreError(f"{what} {where}: no such object", ObjectStoreFailure.NOT_FOUND)
    return ObjectStoreError(f"{what} {where}: the store answered {code}", ObjectStoreFailure.OTHER, code=code)


def _check_content(relpath: str, actual: str, expected: str | None) -> None:
    if expected is not None and actual != expected:
        raise ObjectStoreError(
            f"{relpath}: the bytes read do not match the expected SHA-256; not stored",
            ObjectStoreFailure.CONTENT,
        )


def _sha256_of(fh: Any) -> str:
    digest = hashlib.sha256()
    while chunk := fh.read(READ_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def _make_client(endpoint_url: str | None, max_connections: int, attempts: int | None = None) -> Any:
    """A boto3 S3 client from the AWS environment and config files, `endpoint_url` overriding."""
    import boto3
    from botocore import exceptions as bx
    from botocore.config import Config

    # botocore's debug log prints request headers (the access key id, signatures): never pass it on.
    for name in ("botocore", "boto3", "s3transfer", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        session = boto3.session.Session()
        scoped = session._session.get_scoped_config()  # the profile's section of ~/.aws/config
    except bx.ProfileNotFound:
        raise ObjectStoreError(
            f"no AWS profile {os.environ.get('AWS_PROFILE', '')!r}",
            ObjectStoreFailure.AUTH,
            hint="check AWS_PROFILE and ~/.aws/config",
        ) from None
    endpoint = (
        endpoint_url
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
        or scoped.get("endpoint_url")
    )
    s3_settings: dict[str, Any] = dict(scoped.get("s3") or {})
    if endpoint and "addressing_style" not in s3_settings:
        # Self-hosted stores (Ceph, Swift, MinIO) rarely have wildcard DNS for virtual hosts.
        s3_settings["addressing_style"] = "path"
    config = Config(
        s3=s3_settings or None,
        max_pool_connections=max_connections,
        retries={"mode": "standard", "max_attempts": attempts or MAX_ATTEMPTS},
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        request_checksum_calculation="when_required",  # the SHA-256 is given, no CRC32 on top
        response_checksum_validation="when_required",
    )
    region = session.region_name or DEFAULT_REGION
    client = session.client("s3", endpoint_url=endpoint_url, region_name=region, config=config)
    client.meta.events.register("before-sign.s3.DeleteObjects", _add_content_md5)
    return client


def _add_content_md5(request: Any, **_: Any) -> None:
    """DeleteObjects with a Content-MD5: botocore now sends a CRC32 instead, which stores that
    predate flexible checksums (Swift, older Ceph and MinIO) refuse."""
    body = request.body if isinstance(request.body, bytes) else bytes(request.body or b"")
    if "Content-MD5" not in request.headers:
        request.headers["Content-MD5"] = base64.b64encode(hashlib.md5(body).digest()).decode("ascii")

"""Where a node keeps payloads streamed to it (ciphertext vectors), scoped by caller and job.

A payload is written to a temporary file as chunks arrive and becomes visible only after its size and
sha256 check out, so an interrupted or corrupted stream leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from federation.transport.calls import CallFailed, CallInfo, check_blob_id, invalid
from protos import common_pb2

_SCOPE_DEFAULT = "_"


class BlobStore:
    def __init__(self, root: Path, *, max_bytes: int):
        self.root = root
        self.max_bytes = max_bytes

    def _dir(self, owner: str, job_id: str) -> Path:
        scope = check_blob_id(job_id) if job_id else _SCOPE_DEFAULT
        return self.root / check_blob_id(owner) / scope

    def receive(
        self, chunks: Iterator[common_pb2.BlobChunk], *, owner: str
    ) -> common_pb2.BlobReceipt:
        """Consume a ``BlobChunk`` stream; return a ``BlobReceipt`` once the payload is verified."""
        first = next(chunks)
        blob_id = check_blob_id(first.blob_id)
        directory = self._dir(owner, first.meta.job_id)
        directory.mkdir(parents=True, exist_ok=True)
        final = directory / blob_id
        tmp = directory / f".{blob_id}.{os.getpid()}.partial"
        digest = hashlib.sha256()
        size = 0
        claimed = b""
        try:
            with open(tmp, "wb") as out:
                chunk: common_pb2.BlobChunk | None = first
                while chunk is not None:
                    if chunk.offset != size:
                        raise invalid(
                            f"blob {blob_id}: chunk at offset {chunk.offset}, expected {size}"
                        )
                    size += len(chunk.data)
                    if size > self.max_bytes:
                        raise CallFailed(
                            "RESOURCE_EXHAUSTED",
                            f"blob {blob_id} exceeds this node's limit of {self.max_bytes} bytes",
                        )
                    out.write(chunk.data)
                    digest.update(chunk.data)
                    if chunk.sha256:
                        claimed = chunk.sha256
                    chunk = next(chunks, None)
            if first.total_size and size != first.total_size:
                raise invalid(
                    f"blob {blob_id}: received {size} bytes, announced {first.total_size}"
                )
            if claimed != digest.digest():
                raise invalid(
                    f"blob {blob_id}: sha256 missing or does not match the bytes received"
                )
            os.replace(tmp, final)
            (directory / f"{blob_id}.sha256").write_text(digest.hexdigest())
        finally:
            tmp.unlink(missing_ok=True)
        return common_pb2.BlobReceipt(blob_id=blob_id, size=size, sha256=digest.digest())

    def path(self, owner: str, job_id: str, blob_id: str) -> Path:
        path = self._dir(owner, job_id) / check_blob_id(blob_id)
        if not path.exists():
            raise CallFailed("NOT_FOUND", f"no blob {blob_id!r} for job {job_id or '-'}")
        return path

    def delete(self, owner: str, job_id: str, blob_id: str) -> None:
        """Forget a blob once its contents are in use (it only costs disk from then on)."""
        directory = self._dir(owner, job_id)
        (directory / check_blob_id(blob_id)).unlink(missing_ok=True)
        (directory / f"{blob_id}.sha256").unlink(missing_ok=True)

    def drop_job(self, owner: str, job_id: str) -> int:
        """Delete every blob of one job; returns how many files went."""
        directory = self._dir(owner, job_id)
        if not directory.is_dir():
            return 0
        removed = 0
        for path in directory.iterdir():
            path.unlink(missing_ok=True)
            removed += 1
        directory.rmdir()
        return removed

    def stream(
        self, owner: str, job_id: str, blob_id: str, *, chunk_bytes: int
    ) -> Iterator[common_pb2.BlobChunk]:
        path = self.path(owner, job_id, blob_id)
        digest = hashlib.sha256()
        total = path.stat().st_size
        offset = 0
        with open(path, "rb") as src:
            data = src.read(chunk_bytes)
            while True:
                following = src.read(chunk_bytes)
                digest.update(data)
                msg = common_pb2.BlobChunk(offset=offset, data=data)
                if offset == 0:
                    msg.blob_id, msg.total_size = blob_id, total
                if not following:
                    msg.sha256 = digest.digest()
                    yield msg
                    return
                yield msg
                offset += len(data)
                data = following


class BlobEndpoints:
    """``PutBlob``/``GetBlob`` of a servicer: streamed payloads scoped by (caller, job).

    Every service that takes large payloads serves the same two RPCs the same way; a servicer
    mixes this in and sets ``self.blobs`` and ``self.chunk_bytes``.
    """

    blobs: BlobStore
    chunk_bytes: int

    def PutBlob(
        self, chunks: Iterator[common_pb2.BlobChunk], call: CallInfo
    ) -> common_pb2.BlobReceipt:
        receipt = self.blobs.receive(chunks, owner=call.caller)
        call.counts["blob_bytes"] = receipt.size
        return receipt

    def GetBlob(
        self, request: common_pb2.BlobRequest, call: CallInfo
    ) -> Iterator[common_pb2.BlobChunk]:
        return self.blobs.stream(
            call.caller, request.meta.job_id, request.blob_id, chunk_bytes=self.chunk_bytes
        )

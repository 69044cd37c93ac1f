"""The PSI errors, and the one check every incoming message goes through first."""

from __future__ import annotations

from pathlib import Path

from federation.errors import Refused, XinyidaiError


class PsiError(XinyidaiError):
    """Base of the PSI errors."""


class PsiInputError(PsiError):
    """This party's own code list is unusable (bad code, duplicate). Nothing was sent.

    Messages name rows (0-based positions in the list given), never code values, because
    codes are the very thing PSI protects and error texts may travel to a peer or a log.
    """


class PsiProtocolError(PsiError):
    """A message from the peer is malformed; ``step`` names the protocol step that refused it."""

    def __init__(self, step: str, detail: str):
        self.step = step
        self.detail = detail
        super().__init__(f"PSI step '{step}': malformed peer message: {detail}")


class PsiOverlapError(Refused, PsiError):
    """The intersection is empty or below the configured ``min_overlap``."""

    def __init__(self, size: int, required: int, detail: str):
        self.size = size
        self.required = required
        code = "no_overlap" if size == 0 else "min_overlap"
        super().__init__(code, detail)


class PsiCacheError(PsiError):
    """The holder's blinded-set cache file is unsafe or damaged; delete it to rebuild."""

    def __init__(self, path: Path, detail: str):
        self.path = path
        super().__init__(f"PSI cache {path}: {detail}")


def as_bytes(msg: object, step: str, what: str) -> bytes:
    """A peer's message as ``bytes``; anything else is refused before it is parsed."""
    if not isinstance(msg, (bytes, bytearray, memoryview)):
        raise PsiProtocolError(step, f"{what}: expected bytes, got {type(msg).__name__}")
    return bytes(msg)

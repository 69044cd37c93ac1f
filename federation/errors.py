"""Errors every layer raises, so a user sees *what* failed and *where*, never only a stack trace.

Each error carries the coordinates a user needs to act: the file, row and column of bad data,
the peer that did not answer, the rule that refused a request. The gRPC layer maps these to
status codes (see ``federation.transport``) and back, so the same error reaches a remote caller.
"""

from __future__ import annotations


class XinyidaiError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigError(XinyidaiError):
    """A configuration file or option is invalid; the message names the file and field."""


class DataValidationError(XinyidaiError):
    """A data file failed validation. Nothing from the file was loaded.

    ``problems`` lists every problem found (up to a cap), each naming file, row and column.
    Rows are 1-based data rows as a spreadsheet user counts them (the header is row 1, so the
    first data row is row 2).
    """

    def __init__(self, path: str, problems: list[str]):
        self.path = path
        self.problems = problems
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        super().__init__(f"{path}: {len(problems)} problem(s), nothing loaded:\n  {shown}{more}")


class Refused(XinyidaiError):
    """A node refused a request by policy (purpose, consent, caller, size...).

    ``code`` is a short machine-readable reason such as ``purpose``, ``consent``, ``caller``.
    """

    def __init__(self, code: str, reason: str):
        self.code = code
        self.reason = reason
        super().__init__(f"refused ({code}): {reason}")


class PeerError(XinyidaiError):
    """A call to a peer node failed: it is down, timed out, or answered with an error.

    The error names the peer, so a detail in which the peer names itself first (``"tax: ..."``,
    as a node's runtime words its statuses) is kept without that prefix: the node is named
    once (``peer 'tax' Verify: PERMISSION_DENIED: no authorisation ...``).
    """

    def __init__(self, peer: str, operation: str, detail: str, *, code: str = "UNAVAILABLE"):
        self.peer = peer
        self.operation = operation
        self.detail = detail.removeprefix(f"{peer}: ") if peer else detail
        self.code = code
        super().__init__(f"peer '{peer}' {operation}: {code}: {self.detail}")


class AuditChainError(XinyidaiError):
    """An audit log failed verification; the message names the first broken record."""

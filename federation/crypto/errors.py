"""The errors of ``federation.crypto``: one base class, so callers can catch them all."""

from __future__ import annotations

from federation.errors import XinyidaiError


class CryptoError(XinyidaiError):
    """Base of every error raised by ``federation.crypto``."""


class InsecureKeyError(CryptoError):
    """A Paillier key below 2048 bits was made or accepted outside the test-only switch."""


class CiphertextFormatError(CryptoError):
    """Serialised ciphertexts have the wrong length or a value outside [1, n^2)."""


class PublicParamsError(CryptoError):
    """Serialised public parameters are malformed or fail verification."""


class PlaintextRangeError(CryptoError):
    """A plaintext is not an integer in [0, n); encode signed or real values first."""


class MissingPrivateKeyError(CryptoError):
    """An operation that needs the private key was called on an engine without one."""

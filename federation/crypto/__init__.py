"""Homomorphic-encryption primitives for vertical federated credit models.

``paillier`` is the engine (DJN/textbook encryption, CRT decryption, re-randomisation, process
pool) over ``keys`` (key policy, public parameters), ``wire`` (ciphertext bytes), ``tables`` and
``core`` (per-process arithmetic) and ``pool`` (workers); ``encoding`` turns reals into
plaintexts and packs slots; ``histogram`` accumulates encrypted per-bin sums. ``ckks`` (TenSEAL
contexts and vectors) and ``masks`` (pairwise additive masks) are imported from their modules,
as is ``testing``, the test-only switch for small keys, which is deliberately not re-exported.
"""

from federation.crypto.encoding import (
    CiphertextPacker,
    EncodingError,
    FixedPointCodec,
    GradHessPacker,
    PackingOverflowError,
)
from federation.crypto.errors import (
    CiphertextFormatError,
    CryptoError,
    InsecureKeyError,
    MissingPrivateKeyError,
    PlaintextRangeError,
    PublicParamsError,
)
from federation.crypto.histogram import HistogramInputError, encrypted_bin_sums, subtract
from federation.crypto.keys import (
    MIN_KEY_BITS,
    PublicParams,
    check_key_size,
    default_exponent_bits,
    export_private_key_insecurely,
    generate_keypair,
    import_private_key,
    make_public_params,
    public_params_from_bytes,
    public_params_to_bytes,
    security_bits,
)
from federation.crypto.paillier import OBFUSCATIONS, Obfuscation, PaillierEngine, crt_decrypt
from federation.crypto.wire import ciphertexts_from_bytes, ciphertexts_to_bytes

__all__ = [
    "MIN_KEY_BITS",
    "OBFUSCATIONS",
    "CiphertextFormatError",
    "CiphertextPacker",
    "CryptoError",
    "EncodingError",
    "FixedPointCodec",
    "GradHessPacker",
    "HistogramInputError",
    "InsecureKeyError",
    "MissingPrivateKeyError",
    "Obfuscation",
    "PackingOverflowError",
    "PaillierEngine",
    "PlaintextRangeError",
    "PublicParams",
    "PublicParamsError",
    "check_key_size",
    "ciphertexts_from_bytes",
    "ciphertexts_to_bytes",
    "crt_decrypt",
    "default_exponent_bits",
    "encrypted_bin_sums",
    "export_private_key_insecurely",
    "generate_keypair",
    "import_private_key",
    "make_public_params",
    "public_params_from_bytes",
    "public_params_to_bytes",
    "security_bits",
    "subtract",
]

"""Homomorphic-encryption primitives for vertical federated credit models.

``paillier`` is the engine (keys, DJN/textbook encryption, CRT decryption, re-randomisation,
wire format, process pool); ``encoding`` turns reals into plaintexts and packs slots;
``histogram`` accumulates encrypted per-bin sums. ``testing`` holds the test-only switch for
small keys and is deliberately not re-exported here.
"""

from federation.crypto.encoding import (
    CiphertextPacker,
    EncodingError,
    FixedPointCodec,
    GradHessPacker,
    PackingOverflowError,
)
from federation.crypto.histogram import HistogramInputError, encrypted_bin_sums, subtract
from federation.crypto.paillier import (
    MIN_KEY_BITS,
    OBFUSCATIONS,
    CiphertextFormatError,
    CryptoError,
    InsecureKeyError,
    MissingPrivateKeyError,
    Obfuscation,
    PaillierEngine,
    PlaintextRangeError,
    PublicParams,
    PublicParamsError,
    check_key_size,
    ciphertexts_from_bytes,
    ciphertexts_to_bytes,
    crt_decrypt,
    default_exponent_bits,
    export_private_key_insecurely,
    generate_keypair,
    import_private_key,
    make_public_params,
    public_params_from_bytes,
    public_params_to_bytes,
    security_bits,
)

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

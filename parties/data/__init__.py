"""Party data: enterprise identity (USCC), per-party schemas, validated loading, synthetic city.

Submodules are imported explicitly (``from parties.data.uscc import normalise``) so that a node
that only needs code validation does not pay for the loader or generator.
"""

__all__ = ["loader", "schema", "synth", "uscc"]

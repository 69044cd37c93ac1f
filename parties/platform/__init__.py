"""The 信易贷 platform node: the only signer of authorisations and the registry of admitted
banks, published to holders as a signed, sequenced, hash-chained feed (docs/platform.md)."""

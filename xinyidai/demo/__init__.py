"""``xinyidai demo``: a whole federation on this machine, from nothing, in one command.

Makes a development PKI and a synthetic city, writes one node directory per party, records
enterprises' authorisations at the holders, starts the bank, tax and utility nodes as three OS
processes on loopback with mutual TLS, has the bank greet each holder, exercises the consent and
purpose rules, aligns the bank with both holders by PSI, trains vertical SecureBoost across the
three processes (2048-bit Paillier) and compares its test AUC with a bank-only model, stops the
nodes and verifies every node's audit chain. Everything it makes stays under
``--workdir`` (each node's state in ``<workdir>/<node-id>/``) for inspection afterwards.

- ``build``: the federation on disk (``build_federation``, used by tests, benchmarks, notebooks).
- ``jobs``: the federated jobs as the bank's operator (align, train, register, score).
- ``run``: ``run_demo``, the story around them (greetings, consent, audit, lineage, timings).
"""

from xinyidai.demo.build import (
    DAY,
    HOLDERS,
    add_platform,
    build_federation,
    enrol_enterprise,
    record_consent,
)
from xinyidai.demo.jobs import DEMO_PARAMS, PSI_SALT
from xinyidai.demo.run import run_demo

__all__ = [
    "DAY",
    "DEMO_PARAMS",
    "HOLDERS",
    "PSI_SALT",
    "add_platform",
    "build_federation",
    "enrol_enterprise",
    "record_consent",
    "run_demo",
]

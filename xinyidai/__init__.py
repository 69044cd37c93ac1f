"""The application layer: the CLI, the demo, the node launcher, the experiment runner, MLflow
tracking and lineage (and, later, the platform's portal).

It sits on top of every other package (``protos`` → ``federation`` → ``models`` → ``parties`` →
``xinyidai``) and nothing below imports it; ``make lint`` checks that contract.
"""

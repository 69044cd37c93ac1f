"""The data holder node (tax bureau, utilities)."""

"""The conformance kit played against this project's own adapters (``own/``) and against the
toy adapter of docs/integrators.md (``toy/``), as an integrator plays it against theirs."""

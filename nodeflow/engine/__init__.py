"""Run a graph: the content-signed plan, the executor, the byte-budgeted cache, run events.

Imports only :mod:`nodeflow.model`; knows no file format and no host."""

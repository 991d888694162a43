"""What is on disk: the workflow format, its migrations and schema, PNG metadata,
importers of other tools' formats, and the one front door that opens any of them
(:mod:`nodeflow.files.open`). Imports only :mod:`nodeflow.model`."""

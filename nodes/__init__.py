"""nodeflow's built-in node packs. Each subpackage declares a ``PACK`` in its
``__init__.py`` and is registered through the ``nodeflow.packs`` entry point group in
``pyproject.toml``, exactly as a third-party pack would be; nothing here is scanned.

Pack packages keep heavy imports (torch, diffusers, transformers) inside functions or in
their ``impl`` modules, so listing and validating nodes stays fast."""

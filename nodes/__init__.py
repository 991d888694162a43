"""Built-in node packs. Every public submodule is a pack; modules whose name starts with
an underscore are implementation helpers and are not scanned for nodes.

Pack modules keep heavy imports (torch, diffusers, transformers) inside functions or in
their ``_impl`` helpers, so listing and validating nodes stays fast."""

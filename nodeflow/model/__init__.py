"""Declare, wire, check: node types, fields, data types, packs, the graph and its validation.

The lowest layer: it imports nothing else of nodeflow's and no torch."""

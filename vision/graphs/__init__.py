"""Typed-graph builders of the vision models (entity-token graphs, object graphs, parent trees)."""

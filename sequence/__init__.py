"""Sequence models and attention studies built on graphattn's attention primitives.

Models (Pointer Networks, attention-variant studies, ...) register themselves here with
``graphattn.registry.register_model(name, task="sequence")`` when this package is imported.
"""

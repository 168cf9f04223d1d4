"""Vision datasets. Each module registers its loaders with ``graphattn.registry.register_dataset(name,
task="vision", loader=...)`` when imported; ``vision/__init__.py`` imports every module explicitly.
Defaults for a dataset's own keys live in ``vision/dataset/<name>.yaml``.
"""

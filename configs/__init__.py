"""Experiment configs: one `get_config(variant)` per file, installed as `homeojax.configs`."""

"""Semantic mode: serve paraphrases of cached prompts within a measured error bound.

match (SemanticMatch, its options) -> hook (consult on an exact miss) -> scope, store, rule;
report reads the store's file for the CLI and the notebook; embedders stand alone.
"""

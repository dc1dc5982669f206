"""Semantic mode: serve paraphrases of cached prompts within a measured error bound."""

"""Integrations with agent and LLM frameworks, one module each (``llm_memo.integrations.langchain``...).

Each is built on the engine's adapter API and imports its framework, installed as an extra;
``import llm_memo`` never imports any of them.
"""

"""llm_memo: memoize LLM calls with canonical keys, a determinism guard and tiered storage."""

__version__ = "0.1.0"

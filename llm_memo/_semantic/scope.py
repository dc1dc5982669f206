"""A call's scope: the entries that may answer it are those sharing its exact key with the prompt blanked.

The prompt text is what `extract_prompt` finds (the prompt argument or the user turns). Function
identity and source fingerprint, model, temperature and every other argument, system prompt,
tools, response format, version and namespace all stay in the scope key, so none of them is ever
crossed. The embedder's name prefixes it: vectors of two embedders are never compared.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._logic.policy import PROMPT_ARGUMENTS, extract_prompt

__all__ = ["blank_prompt", "scope_of"]


def _blank_turns(messages: Any) -> Any:
    """A copy of a message list with the user turns' text blanked (other turns kept)."""
    if not isinstance(messages, (list, tuple)):
        return messages
    out = []
    for message in messages:
        if isinstance(message, Mapping) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, (list, tuple)):
                content = [{**part, "text": ""} if isinstance(part, Mapping) and "text" in part else part
                           for part in content]
            else:
                content = ""
            message = {**message, "content": content}
        out.append(message)
    return out


def _blank_in(values: Mapping[str, Any], intent_arg: str | None) -> tuple[str, Any] | None:
    """(name, blanked value) of the argument extract_prompt reads in `values`, or None."""
    if intent_arg is not None:
        if intent_arg not in values:
            return None
        value = values[intent_arg]
        return intent_arg, "" if isinstance(value, str) else _blank_turns(value)
    for name in PROMPT_ARGUMENTS:
        if isinstance(values.get(name), str):
            return name, ""
    for name in ("messages", "input"):
        value = values.get(name)
        if isinstance(value, (list, tuple)) and any(
                isinstance(m, Mapping) and m.get("role") == "user" for m in value):
            return name, _blank_turns(value)
    return None


def blank_prompt(arguments: Mapping[str, Any], intent_arg: str | None) -> dict[str, Any] | None:
    """The arguments with the prompt extract_prompt finds blanked, or None when there is none."""
    found = _blank_in(arguments, intent_arg)
    if found is not None:
        return {**arguments, found[0]: found[1]}
    owners: dict[str, str] = {}  # entry name -> the dict argument it is read from (first wins)
    for arg, value in arguments.items():
        if isinstance(value, dict):
            for key in value:
                if isinstance(key, str):
                    owners.setdefault(key, arg)
    merged = {key: arguments[arg][key] for key, arg in owners.items()}
    found = _blank_in(merged, intent_arg)
    if found is None:
        return None
    owner = owners[found[0]]
    return {**arguments, owner: {**arguments[owner], found[0]: found[1]}}


def scope_of(engine: Any, embedder_name: str, arguments: dict[str, Any], instance: Any) -> tuple[str, str] | None:
    """(scope key, prompt text) of a call to the engine's function, or None when it has no prompt."""
    prompt = extract_prompt(arguments, engine.planner.intent_arg)
    blanked = blank_prompt(arguments, engine.planner.intent_arg) if prompt else None
    if blanked is None or prompt is None:
        return None
    keys = engine.planner.keys
    scope = keys.key(keys.keyed_arguments(blanked, instance))
    return f"{embedder_name}/{scope}", prompt

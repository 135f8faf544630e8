"""The shape every stored conversation has: optional system turn first, then user/assistant alternating."""
from __future__ import annotations

from typing import Any

ROLES = ("system", "user", "assistant")


def conversation_problem(conversation: Any) -> str | None:
    """Why a conversation cannot be stored, or None when it is well formed."""
    if not isinstance(conversation, list) or not conversation:
        return "conversation is empty"
    turns = conversation
    for i, msg in enumerate(turns):
        if not isinstance(msg, dict) or set(msg) - {"role", "content"} or msg.get("role") not in ROLES:
            return f"turn {i}: must be {{role: system|user|assistant, content}}"
        if not isinstance(msg.get("content"), str) or not msg["content"].strip():
            return f"turn {i} ({msg.get('role')}): empty content"
    if turns[0]["role"] == "system":
        turns = turns[1:]
    if not turns:
        return "conversation has no user turn"
    for i, msg in enumerate(turns):
        expected = "user" if i % 2 == 0 else "assistant"
        if msg["role"] != expected:
            return f"turn {i}: expected {expected}, got {msg['role']} (roles must alternate, system first)"
    if turns[-1]["role"] != "assistant":
        return "conversation must end with an assistant turn"
    return None

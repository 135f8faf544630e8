"""SystemChat: conversations in which the assistant keeps to its system prompt, however odd, for many turns.

Two instructors: `system_prompts` writes the system prompts (by category, with checkable constraint ids), and
`systemchat` holds the conversations (simulated user, assistant, per-turn judge, deterministic checks).
"""
from gen.instructors.systemchat.system_prompts import SystemPromptsInstructor
from gen.instructors.systemchat.systemchat import SystemChatInstructor

__all__ = ["SystemPromptsInstructor", "SystemChatInstructor"]

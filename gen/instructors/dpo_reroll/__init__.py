"""`dpo_reroll`: preference (DPO) pairs from conversations that already exist (see `instructor.py`)."""
from gen.instructors.dpo_reroll.instructor import DpoRerollInstructor, DpoRerollOptions

__all__ = ["DpoRerollInstructor", "DpoRerollOptions"]

"""The `coding` instructor (entry point `gen.instructors.coding:CodingInstructor`)."""
from gen.instructors.coding.instructor import CodingInstructor, CodingOptions

__all__ = ["CodingInstructor", "CodingOptions"]

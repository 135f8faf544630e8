"""Instructors turn a job's options into units of work and a unit into records, through the teachers given."""
from gen.instructors.base import Instructor, PlannedUnit, UnitInput
from gen.instructors.registry import available_instructors, instructor_class

__all__ = ["Instructor", "PlannedUnit", "UnitInput", "available_instructors", "instructor_class"]

"""Prompting (chapter 07): checkable reasoning tasks, prompt builders, answer extraction,
self-consistency, Tree of Thoughts on the Game of 24, constrained decoding, teaching CoT by
fine-tuning, prompt injection and its defenses, and LangChain beside plain Python."""

from course_utils.prompting.game24 import (
    Step,
    all_puzzles,
    canonical,
    evaluate_expression,
    is_solution,
    legal_steps,
    solutions,
    solvable,
)
from course_utils.prompting.tasks import load_game24, load_reasoning

__all__ = [
    "Step", "all_puzzles", "canonical", "evaluate_expression", "is_solution", "legal_steps", "load_game24",
    "load_reasoning", "solutions", "solvable",
]

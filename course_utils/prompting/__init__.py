"""Prompting (chapter 07): checkable reasoning tasks, prompt builders, answer extraction,
self-consistency, Tree of Thoughts on the Game of 24, constrained decoding (llguidance),
teaching CoT by LoRA fine-tuning, prompt injection and its defenses, and LangChain beside
plain Python.

Chapter 09 reuses :func:`extract_number` / :func:`final_answer_text` (read a final answer from
free text) and :func:`grammar` + :func:`constrained_generate` (a JSON schema, regex, choices or
Lark grammar → output valid by construction)."""

from course_utils.prompting.answers import extract_number, final_answer_text, majority_vote
from course_utils.prompting.constrained import (
    GrammarLogitsProcessor,
    constrained_generate,
    first_json_object,
    grammar,
    schema_valid,
)
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
from course_utils.prompting.llm import CallCounter, chat_generate, render
from course_utils.prompting.prompts import STYLES, ExemplarSelector, build_messages
from course_utils.prompting.self_consistency import accuracy_vs_n, sample_paths
from course_utils.prompting.tasks import load_game24, load_reasoning
from course_utils.prompting.tot import ToTResult, game24_messages, tree_of_thoughts

__all__ = [
    "STYLES", "CallCounter", "ExemplarSelector", "GrammarLogitsProcessor", "Step", "ToTResult", "accuracy_vs_n",
    "all_puzzles", "build_messages", "canonical", "chat_generate", "constrained_generate", "evaluate_expression",
    "extract_number", "final_answer_text", "first_json_object", "game24_messages", "grammar", "is_solution",
    "legal_steps", "load_game24", "load_reasoning", "majority_vote", "render", "sample_paths", "schema_valid",
    "solutions", "solvable", "tree_of_thoughts",
]

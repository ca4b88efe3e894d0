"""LLM Engineering: the real implementations the course's notebooks teach.

By chapter: ``models`` (loading, offline first) and ``generation`` (sampling) for 00;
``scaling`` and ``text_corpus`` for 01; ``arch`` (02) and ``arch.moe`` (03); ``training`` (04);
``alignment`` (05-06); ``rag`` (08); ``inference`` (10: quantization, memory, KV cache, speculative
decoding); ``serving`` (11: paged KV cache, continuous batching, the API). Shared by every chapter:
``runtime`` (SMOKE, device, metrics, paths, every environment variable) and ``checks`` (argument checks). The course's own tools (the ``llm-course``
command, the notebook runner and report, nbgrader grading) live apart in ``tooling``.
"""

__version__ = "0.1.0"

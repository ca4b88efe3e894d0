"""LLM Engineering: the real implementations the course's notebooks teach.

By chapter: ``models`` (loading, offline first) and ``generation`` (sampling) for 00;
``scaling`` and ``text_corpus`` for 01; ``arch`` (02) and ``arch.moe`` (03); ``alignment``
(05-06); ``rag`` (08). Infrastructure: ``runtime`` (SMOKE, device, metrics), ``runner``
(executing notebooks) and ``grading`` (nbgrader release and autograding).
"""

__version__ = "0.1.0"

"""LLM Engineering: the real implementations the course's notebooks teach.

Subpackages by chapter: ``models`` (loading), ``generation`` (sampling), ``runtime``
(SMOKE/device/metrics), ``runner`` and ``grading`` (executing and grading notebooks).
"""

__version__ = "0.1.0"

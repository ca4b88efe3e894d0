"""The course's own tools, apart from the chapters: the ``llm-course`` command (``cli``), the
environment check (``doctor``), the notebook runner and its report (``runner``, ``report``) and
nbgrader release and autograding (``grading``). Chapter packages never import this package."""

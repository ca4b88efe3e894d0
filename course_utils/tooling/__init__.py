"""The course's own tools, apart from the chapters: the ``llm-course`` command (``cli``), the
environment check (``doctor``), the notebook runner (``runner``), its report (``report``:
index.html, report.md, report.json) and claims (``claims``), nbgrader release and autograding
(``grading``, ``hidden``, ``nbgrader_settings``) and the notebooks' shared header cells
(``headers``). Chapter packages never import this package."""

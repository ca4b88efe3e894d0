"""nbgrader configuration for instructors working in this folder.

solutions/<lab>/ is nbgrader's source (instructor version), labs/<lab>/ its release (student
version). `llm-course release` and `llm-course grade` use private course folders of their own;
this file is for running nbgrader or the formgrader by hand from the course root.
"""

import os

c = get_config()  # noqa: F821
c.CourseDirectory.root = os.path.dirname(os.path.abspath(__file__))
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "labs"
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(c.CourseDirectory.root, "build", "gradebook.db")
c.CourseDirectory.course_id = "llm-engineering"
c.Execute.timeout = 60
c.Execute.interrupt_on_timeout = True
c.OverwriteCells.add_missing_cells = True
c.LimitOutput.max_lines = 1000

"""nbgrader configuration for instructors working in this folder.

solutions/<lab>/ is nbgrader's source (instructor version), labs/<lab>/ its release (student
version). `llm-course release` and `llm-course grade` use private course folders of their own;
this file is for running nbgrader or the formgrader by hand from the course root. Every setting
comes from course_utils/tooling/nbgrader_settings.py, which the private folders use too.
"""

import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)  # this checkout's course_utils, installed or not
from course_utils.tooling.nbgrader_settings import configure  # noqa: E402

c = get_config()  # noqa: F821
configure(c, root=here)

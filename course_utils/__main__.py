"""``python -m course_utils`` is the same as the ``llm-course`` command."""

import sys

from course_utils.tooling.cli import main

sys.exit(main())

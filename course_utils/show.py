"""Show the real source of the code a notebook teaches, where it teaches it.

A chapter notebook calls :func:`show_source` on the ``course_utils`` function or class that
implements a mechanism, then runs it in the next cell: one copy of the code, read where it is
taught. In Jupyter the source is syntax-highlighted; every executed notebook (papermill, nbconvert)
also keeps it as plain text.
"""

from __future__ import annotations

import inspect
import textwrap
from typing import Any


def source_of(obj: Any) -> str:
    """The source of a function, method, class or module, dedented, with its file and first line
    number as a comment header (``# course_utils/arch/layers.py:24``)."""
    target = inspect.unwrap(obj) if callable(obj) else obj
    try:
        lines, first = inspect.getsourcelines(target)
        path = inspect.getsourcefile(target) or "?"
    except (TypeError, OSError) as err:
        raise TypeError(f"show_source needs a Python function, class or module, got {obj!r}") from err
    where = path
    marker = "course_utils"
    if marker in path:
        where = path[path.rindex(marker):]
    return f"# {where}:{max(first, 1)}\n" + textwrap.dedent("".join(lines)).rstrip() + "\n"


def show_source(*objs: Any) -> None:
    """Display the source of each object: highlighted in Jupyter, plain text elsewhere."""
    if not objs:
        raise TypeError("show_source needs at least one function, class or module")
    text = "\n\n".join(source_of(obj) for obj in objs)
    try:
        from IPython import get_ipython
        from IPython.display import Code, display
    except ImportError:  # plain Python
        print(text)
        return
    if get_ipython() is None:
        print(text)
    else:
        display(Code(text, language="python"))

"""The test suite's guard (tests/conftest.py): a FutureWarning/DeprecationWarning from a deprecated
API that course_utils calls fails the test, wherever the library attributes the warning."""

from __future__ import annotations

import warnings

import pytest

from tests.conftest import ROOT


def _function(source: str, filename: str, **env):
    namespace = {"warnings": warnings, **env}
    exec(compile(source, filename, "exec"), namespace)
    return namespace["f"]


LIBRARY = "/venv/lib/python3.11/site-packages/somelib/api.py"
deprecated_api = _function("def f():\n    warnings.warn('old_api is deprecated', FutureWarning, stacklevel=2)\n",
                           LIBRARY)


def test_a_deprecated_call_from_course_utils_is_an_error():
    ours = _function("def f():\n    return api()\n", str(ROOT / "course_utils" / "fake.py"), api=deprecated_api)
    with pytest.raises(FutureWarning, match="course_utils calls a deprecated API: old_api"):
        ours()


def test_the_same_call_from_elsewhere_is_only_reported():
    other_library = _function("def f():\n    return api()\n", "/venv/lib/python3.11/site-packages/peft/x.py",
                              api=deprecated_api)
    ours = _function("def f():\n    return lib()\n", str(ROOT / "course_utils" / "fake.py"), lib=other_library)
    deprecated_api()  # the test itself calls it: reported in pytest's warnings summary, no error
    ours()  # a library that course_utils uses calls it: not course_utils' own call, no error

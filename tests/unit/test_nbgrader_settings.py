"""One source for the nbgrader settings: nbgrader_config.py and the graders' private config files
both come from course_utils.tooling.nbgrader_settings."""

from __future__ import annotations

from traitlets.config import Config
from traitlets.config.loader import PyFileConfigLoader

from course_utils.tooling import nbgrader_settings as ns
from tests.conftest import ROOT


def _flat(config: Config) -> dict:
    return {f"{section}.{option}": value for section, options in config.items() for option, value in options.items()}


def test_the_course_config_file_uses_the_shared_settings():
    loaded = PyFileConfigLoader("nbgrader_config.py", path=str(ROOT)).load_config()
    assert _flat(loaded) == ns.settings(ROOT)
    assert loaded.CourseDirectory.source_directory == "solutions" and loaded.CourseDirectory.release_directory == "labs"


def test_config_lines_and_configure_agree(tmp_path):
    options = dict(source_directory="source", release_directory="release", db_path=tmp_path / "gradebook.db",
                   cell_timeout=7, max_lines=50, autograding=True)
    text = "c = get_config()\n" + "\n".join(ns.config_lines(tmp_path, **options)) + "\n"
    (tmp_path / "nbgrader_config.py").write_text(text)
    from_file = _flat(PyFileConfigLoader("nbgrader_config.py", path=str(tmp_path)).load_config())
    assert from_file == _flat(ns.configure(Config(), tmp_path, **options)) == ns.settings(tmp_path, **options)
    assert from_file["Execute.timeout"] == 7 and from_file["Autograde.create_student"] is True
    assert from_file["CourseDirectory.course_id"] == ns.COURSE_ID

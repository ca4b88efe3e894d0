"""course_utils.tooling.grading.plagiarism: which solution code is flagged for review."""

from __future__ import annotations

from course_utils.tooling.grading.plagiarism import dynamic_code


def test_dynamic_code_flags_hidden_code_but_not_torch_eval_mode():
    assert dynamic_code("import base64\nexec(base64.b64decode(s))") == ["b64decode", "exec"]
    assert dynamic_code("x = builtins.eval(text)") == ["eval"]
    assert dynamic_code("y = eval('1 + 1')") == ["eval"]
    # a torch module's evaluation mode is not the builtin eval
    assert dynamic_code("def merge(m):\n    m.train()\n    return m.eval()") == []


def test_json_loads_is_data_but_pickle_loads_is_flagged():
    # an agent's action parser reads JSON arguments: nothing to review
    assert dynamic_code("import json\nargs = json.loads(text)") == []
    assert dynamic_code("import pickle\nf = pickle.loads(blob)") == ["loads"]
    assert dynamic_code("import marshal\nc = marshal.loads(blob)") == ["loads", "marshal"]


import pytest

from course_utils import runtime


def test_resolve_smoke(monkeypatch):
    assert runtime.resolve_smoke(True) is True
    monkeypatch.setenv(runtime.SMOKE_ENV, "yes")
    assert runtime.resolve_smoke(None) is True
    monkeypatch.setenv(runtime.SMOKE_ENV, "0")
    assert runtime.resolve_smoke(None) is False
    monkeypatch.setenv(runtime.SMOKE_ENV, "maybe")
    with pytest.raises(ValueError, match=runtime.SMOKE_ENV):
        runtime.resolve_smoke(None)
    with pytest.raises(TypeError, match="SMOKE"):
        runtime.resolve_smoke("1")


def test_resolve_device():
    import torch

    assert runtime.resolve_device("cpu") == "cpu"
    assert runtime.resolve_device("auto") in {"cuda", "mps", "cpu"}
    with pytest.raises(ValueError, match="device"):
        runtime.resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA GPU"):
            runtime.resolve_device("cuda")


def test_record_metric_writes_file(tmp_path, monkeypatch, capsys):
    import numpy as np

    path = tmp_path / "m.jsonl"
    monkeypatch.setenv(runtime.METRICS_ENV, str(path))
    runtime.record_metric("loss", np.float32(1.5))
    runtime.record_metric("steps", 3)
    runtime.record_metric("loss", 1.25)
    assert "[metric] loss = 1.5" in capsys.readouterr().out
    assert runtime.read_metrics_file(path) == {"loss": 1.25, "steps": 3}
    with pytest.raises(TypeError, match="metric value"):
        runtime.record_metric("bad", [1, 2])
    with pytest.raises(ValueError, match="name"):
        runtime.record_metric("", 1)


def test_torch_threads_sets_and_restores_even_on_error():
    import torch

    from course_utils.runtime import torch_threads

    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError, match="boom"), torch_threads(1):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="num_threads"), torch_threads(bad):
            pass


def test_set_notebook_threads_policy():
    import torch

    from course_utils.runtime import set_notebook_threads, torch_threads

    with torch_threads(None):  # restores whatever the policy sets
        before = torch.get_num_threads()
        assert set_notebook_threads(None, False, "cpu") == before  # full mode: torch's default
        assert set_notebook_threads(None, True, "cuda") == before
        assert set_notebook_threads(None, True, "cpu") == 1        # SMOKE on a CPU
        assert set_notebook_threads(2, True, "cpu") == 2           # an explicit request wins
        for bad in (0, -3, 1.5, True):
            with pytest.raises(ValueError, match="TORCH_THREADS"):
                set_notebook_threads(bad, True, "cpu")

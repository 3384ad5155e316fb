"""Executors: the local one (one child at a time) and Ray (units in parallel on a cluster).

The `slow` tests start a real local Ray cluster on the CPU (num_cpus=2, no dashboard) and compare
its records with the local executor's; one kills a unit's Ray actor process mid-run."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from qie_bench.cli import main
from qie_bench.errors import UserInputError
from qie_bench.plan import Item, RunPlan
from qie_bench.results import read_records
from qie_bench.runner.executor_registry import make_executor
from qie_bench.runner.executors import split_units

TWO = ["rm-watermark-bottle", "txt-price-mug"]


def _plan(variants: dict[str, list[str]], repeats: int = 1) -> RunPlan:
    items = {v: [Item(v, c, r) for c in cases for r in range(repeats)] for v, cases in variants.items()}
    return RunPlan(suite=None, case_set=None, variants=list(variants), items=items)  # type: ignore[arg-type]


def test_split_units_keeps_a_cases_repeats_together() -> None:
    plan = _plan({"a": ["c1", "c2", "c3"], "b": ["c1"]}, repeats=2)
    units = split_units(plan, plan.items, 2)
    # a: cases dealt round-robin into 2 shards; b has one case, so one unit whatever the shards.
    assert [(u.name, [i.key for i in u.items]) for u in units] == [
        ("a@0", ["a/c1/0", "a/c1/1", "a/c3/0", "a/c3/1"]),
        ("a@1", ["a/c2/0", "a/c2/1"]),
        ("b", ["b/c1/0", "b/c1/1"]),
    ]
    assert [u.name for u in split_units(plan, plan.items, 1)] == ["a", "b"]
    # Finished items are not in `todo`: a variant with nothing left gets no unit.
    assert [u.name for u in split_units(plan, {"a": [], "b": plan.items["b"]}, 1)] == ["b"]


def test_ray_missing_is_one_line_exit_2_and_nothing_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(UserInputError, match="Ray is not installed"):
        make_executor("ray")
    out = tmp_path / "out"
    code = main(["run", str(Path(__file__).parent.parent / "suites" / "smoke.toml"), "--out", str(out),
                 "--executor", "ray", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--executor ray" in err[0] and "pip install" in err[0]
    assert not out.exists()


def test_ray_only_flags_need_the_ray_executor(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["run", str(Path(__file__).parent.parent / "suites" / "smoke.toml"), "--out", str(tmp_path / "o"),
                 "--address", "auto", "--no-progress"])
    assert code == 2 and "--address: only applies to --executor ray" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


class _FakeRay:
    """The few calls `RayExecutor.open` makes, for a cluster that is described, not started."""

    def __init__(self, nodes: list[dict]) -> None:
        self._nodes = nodes

    def is_initialized(self) -> bool:
        return True

    def nodes(self) -> list[dict]:
        return self._nodes

    def cluster_resources(self) -> dict[str, float]:
        total: dict[str, float] = {}
        for n in self._nodes:
            for k, v in n["Resources"].items():
                total[k] = total.get(k, 0) + v
        return total

    def remote(self, cls: type) -> type:
        return cls


def _gpu_plan() -> RunPlan:
    suite = SimpleNamespace(name="g", model=SimpleNamespace(device="cuda"), baseline_variant="bf16")
    plan = _plan({"bf16": ["c1", "c2", "c3", "c4"]})
    plan.suite = suite  # type: ignore[assignment]
    return plan


def _node(kind: str, gpus: int) -> dict:
    return {"Alive": True, "Resources": {"CPU": 16.0, "GPU": float(gpus), f"accelerator_type:{kind}": 1.0}}


def test_ray_refuses_to_pool_gpu_models_and_pins_the_chosen_one(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ray")
    from qie_bench.runner import ray_executor

    cluster = _FakeRay([_node("H200", 2), _node("A100", 4), _node("H200", 1)])
    monkeypatch.setattr(ray_executor, "_import_ray", lambda: cluster)
    with pytest.raises(UserInputError, match=r"mixes GPU models \(A100, H200\)"):
        ray_executor.RayExecutor().open(_gpu_plan())
    with pytest.raises(UserInputError, match="no 'L4' GPUs"):
        ray_executor.RayExecutor(accelerator_type="L4").open(_gpu_plan())
    ex = ray_executor.RayExecutor(accelerator_type="H200")
    ex.open(_gpu_plan())
    # 3 H200s (2 + 1, the A100 node's 4 do not count); one variant < 3 GPUs: 3 case shards.
    assert ex.describe()["slots"] == 3 and ex.describe()["accelerator_type"] == "H200"
    assert [u.name for u in ex.units(_gpu_plan(), _gpu_plan().items)] == ["bf16@0", "bf16@1", "bf16@2"]
    # A single-model cluster needs no choice, and still pins its model.
    one = ray_executor.RayExecutor()
    monkeypatch.setattr(ray_executor, "_import_ray", lambda: _FakeRay([_node("H200", 8)]))
    one = ray_executor.RayExecutor()
    one.open(_gpu_plan())
    assert one.describe()["accelerator_type"] == "H200" and one.describe()["slots"] == 8
    monkeypatch.setattr(ray_executor, "_import_ray", lambda: _FakeRay([{"Alive": True, "Resources": {"CPU": 8.0}}]))
    with pytest.raises(UserInputError, match="needs GPUs and the Ray cluster has none"):
        ray_executor.RayExecutor().open(_gpu_plan())


# -- a real local Ray cluster on the CPU ------------------------------------------------------

def _suite(tmp: Path, variants: list[tuple[str, str]], repeats: int) -> Path:
    from conftest import CASES, TINY_SUITE, VARIANT  # tests/ is on sys.path (rootdir conftest)

    text = TINY_SUITE.format(name="exec", baseline=variants[0][0], cases=CASES.as_posix(), select=json.dumps(TWO),
                             steps=2, repeats=repeats, timeout=120, metrics='names = ["psnr", "ssim"]\nweights = "random"')
    text += "".join(VARIANT.format(name=n, dtype=d) for n, d in variants)
    path = tmp / "exec.toml"
    path.write_text(text)
    return path


def _orchestrate(suite: Path, out: Path, executor: object, progress: object = None) -> None:
    from qie_bench.plan import make_plan
    from qie_bench.runner.orchestrator import Orchestrator
    from qie_bench.suite import load_suite

    Orchestrator(make_plan(load_suite(suite)), out, executor=executor, progress=progress).run()  # type: ignore[arg-type]


def _records(out: Path) -> dict[str, dict]:
    records = read_records(out / "cases.jsonl")
    keys = [r["key"] for r in records]
    assert len(keys) == len(set(keys)), "one record per planned item"
    return {r["key"]: r for r in records}


def _facts(records: dict[str, dict]) -> dict[str, tuple]:
    return {k: (r["status"], r["seed"], r.get("output_sha256")) for k, r in records.items()}


@pytest.fixture(scope="module")
def local_and_ray(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    pytest.importorskip("ray")
    from qie_bench.runner.ray_executor import RayExecutor

    tmp = tmp_path_factory.mktemp("exec")
    # Output hashes compare only at one CPU thread count: a Ray CPU unit of 1 CPU gets
    # OMP_NUM_THREADS=1 from Ray, so the local worker gets it too.
    mp = pytest.MonkeyPatch()
    mp.setenv("OMP_NUM_THREADS", "1")
    suite = _suite(tmp, [("fp32", "fp32"), ("bf16", "bf16")], repeats=1)
    _orchestrate(suite, tmp / "local", make_executor("local"))
    _orchestrate(suite, tmp / "ray", RayExecutor(num_cpus=2))
    mp.undo()
    return tmp / "local", tmp / "ray"


@pytest.mark.slow
def test_ray_records_equal_local_records(local_and_ray: tuple[Path, Path]) -> None:
    local, ray = local_and_ray
    a, b = _records(local), _records(ray)
    assert sorted(a) == sorted(b) == sorted(f"{v}/{c}/0" for v in ("fp32", "bf16") for c in TWO)
    assert _facts(a) == _facts(b)
    assert all(r["status"] == "OK" and r["output_sha256"].startswith("sha256:") for r in b.values())
    assert {r["host"] for r in b.values()} == {os.uname().nodename} and {r["gpu_uuid"] for r in b.values()} == {None}
    # The images came back through Ray and the driver wrote them: byte-identical to the local run's.
    for r in b.values():
        assert (ray / r["output_path"]).read_bytes() == (local / r["output_path"]).read_bytes()
    run = json.loads((ray / "run.json").read_text())
    assert run["executor"]["kind"] == "ray" and run["executor"]["slots"] == 2
    assert json.loads((ray / "summary.json").read_text())["complete"] is True


@pytest.mark.slow
def test_ray_runs_two_units_at_once(local_and_ray: tuple[Path, Path]) -> None:
    """Two variants, two CPU slots: two worker processes whose lifetimes overlap."""
    _, ray = local_and_ray
    units = json.loads((ray / "logs" / "units.json").read_text())["units"]
    assert sorted(u["unit"] for u in units) == ["bf16", "fp32"] and all(u["outcome"] == "done" for u in units)
    assert len({u["worker_pid"] for u in units}) == 2
    spans = []
    for u in units:
        end = dt.datetime.fromisoformat(u["finished_at"].replace("Z", "+00:00")).timestamp()
        spans.append((end - u["wall_s"], end))
    (s0, e0), (s1, e1) = spans
    overlap = min(e0, e1) - max(s0, s1)
    assert overlap > 0.5 * min(e0 - s0, e1 - s1), f"units ran one after the other: {spans}"


def _parent_pid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


@pytest.mark.slow
def test_killed_ray_actor_loses_and_duplicates_nothing(local_and_ray: tuple[Path, Path], tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGKILL the Ray actor process hosting the unit right after its first record: the unit is
    started again with only the three items without a record, and every item ends OK once."""
    from qie_bench.runner.orchestrator import Progress
    from qie_bench.runner.ray_executor import RayExecutor

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # as in the local run the hashes are compared with
    killed: list[int] = []

    def on_item_done(key: str, rec: dict) -> None:
        if not killed:
            actor = _parent_pid(rec["worker_pid"])  # the worker's parent: the Ray actor this test started
            os.kill(actor, signal.SIGKILL)
            killed.append(actor)

    suite = _suite(tmp_path, [("fp32", "fp32")], repeats=2)
    out = tmp_path / "killed"
    _orchestrate(suite, out, RayExecutor(num_cpus=2, shards=1), Progress(on_item_done=on_item_done))
    recs = _records(out)
    assert sorted(recs) == sorted(f"fp32/{c}/{r}" for c in TWO for r in (0, 1))
    assert all(r["status"] == "OK" for r in recs.values())
    first = min(recs.values(), key=lambda r: r["finished_at"])
    assert first["attempt"] == 0 and sorted(r["attempt"] for r in recs.values()) == [0, 1, 1, 1]
    units = json.loads((out / "logs" / "units.json").read_text())["units"]
    assert [u["outcome"] for u in units] == ["lost", "done"] and "ActorDied" in (units[0]["lost"] or "")
    # Same seeds and outputs as the undisturbed local run (repeat 1 is the same edit again).
    local = _records(local_and_ray[0])
    for c in TWO:
        for r in (0, 1):
            assert (recs[f"fp32/{c}/{r}"]["seed"], recs[f"fp32/{c}/{r}"]["output_sha256"]) == \
                   (local[f"fp32/{c}/0"]["seed"], local[f"fp32/{c}/0"]["output_sha256"])


class _LostHandle:
    """A unit whose host always dies right after it is placed (no Ray needed)."""

    def __init__(self) -> None:
        import queue

        self.events = queue.Queue()
        self.pid, self.host, self.wall_s = None, "gone", None
        self.events.put({"type": "placed", "host": "gone", "pid": None})
        self.events.put({"type": "eof", "lost": "ActorDiedError: the node was preempted"})

    def wait(self) -> None:
        raise AssertionError("a lost worker is not waited for")

    def kill(self) -> None: ...
    def stderr_tail(self, lines: int = 15) -> str: return ""
    def oom_evidence(self, code: object) -> None: return None
    def close(self) -> None: ...


def test_a_unit_whose_host_keeps_dying_is_error_with_the_reason(tmp_path: Path) -> None:
    from qie_bench.runner.executors import LocalExecutor

    class Doomed(LocalExecutor):
        name = "doomed"
        max_unit_retries = 2
        starts: list[tuple[str, int, int]] = []

        def start(self, unit, spec, out, attempt):  # type: ignore[override]
            self.starts.append((unit.name, attempt, len(spec["items"])))
            return _LostHandle()

    suite = _suite(tmp_path, [("fp32", "fp32")], repeats=1)
    ex = Doomed()
    _orchestrate(suite, tmp_path / "out", ex)
    # Started once, then retried twice (max_unit_retries), always with both items; then given up.
    assert ex.starts == [("fp32", 0, 2), ("fp32", 1, 2), ("fp32", 2, 2)]
    recs = _records(tmp_path / "out")
    assert sorted(recs) == [f"fp32/{c}/0" for c in sorted(TWO)]
    for r in recs.values():
        assert r["status"] == "ERROR" and r["attempt"] == 3 and r["host"] == "gone"
        assert r["error"] == ("the unit's worker host was lost 3 times (last: ActorDiedError: the node was preempted); "
                              "not retried again")
    units = json.loads((tmp_path / "out" / "logs" / "units.json").read_text())["units"]
    assert [u["outcome"] for u in units] == ["lost"] * 3

"""No data loss: every command that writes a directory or file refuses what vlc did not write,
replaces its own outputs atomically, keeps a symlinked -o a symlink, honours the umask, cleans
orphans of killed runs (and only those), and serialises two writers of one output."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from vlc.errors import InputError


def tiny_onnx(path: Path, seed: int = 0) -> Path:
    """y = x @ W + b with random W and b, dynamic batch."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weights = [numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "W"),
               numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), "b")]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["t"]), helper.make_node("Add", ["t", "b"], ["y"])], "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return tiny_onnx(tmp_path / "models" / "tiny.onnx")


@pytest.fixture
def precious(tmp_path: Path) -> Path:
    """A user's directory: vlc must never write into it or delete it."""
    d = tmp_path / "precious"
    d.mkdir()
    (d / "thesis.txt").write_text("x\n")
    return d


def listing(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else b"<dir>" for p in sorted(root.rglob("*"))}


def refused(result: tuple[int, str, str], *words: str) -> str:
    code, _, stderr = result
    assert code != 0, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr  # one line, no traceback
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def ok(result: tuple[int, str, str]) -> str:
    code, stdout, stderr = result
    assert code == 0, stderr
    return stdout


def leftovers(parent: Path, name: str) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}."))


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])


# ---- defect 1: a directory vlc did not write is refused, for every command ---------------------
@pytest.fixture
def artifact(vlc_cli, tiny: Path, tmp_path: Path) -> Path:
    out = tmp_path / "art"
    ok(vlc_cli("compile", tiny, "-t", "onnxruntime", "-o", out))
    return out


@pytest.mark.parametrize("option", ["-o", "--emit"])
def test_compile_refuses_a_directory_it_did_not_write(vlc_cli, tiny, precious, option):
    before = listing(precious)
    target = "onnxruntime" if option == "-o" else "ascend310p"
    line = refused(vlc_cli("compile", tiny, "-t", target, option, precious), "thesis.txt", "vlc did not write")
    assert "choose another" in line and option in line
    assert listing(precious) == before
    assert leftovers(precious.parent, precious.name) == []


@pytest.mark.parametrize("option", ["--results", "--artifacts", "--emit"])
def test_bench_refuses_a_directory_it_did_not_write(vlc_cli, tiny, precious, tmp_path, option, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = listing(precious)
    targets = "onnxruntime,ascend310p" if option == "--emit" else "onnxruntime"
    refused(vlc_cli("bench", tiny, "-t", targets, "-n", "2", "--warmup", "1", option, precious),
            "thesis.txt", option)
    assert listing(precious) == before


def test_run_refuses_a_directory_it_did_not_write(vlc_cli, artifact, precious):
    before = listing(precious)
    refused(vlc_cli("run", artifact, "-o", precious), "thesis.txt")
    assert listing(precious) == before


def test_run_refuses_a_folder_of_the_users_arrays(vlc_cli, artifact, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    np.save(inputs / "x.npy", np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32))
    before = listing(inputs)
    refused(vlc_cli("run", artifact, "-i", inputs, "-o", inputs), "x.npy")
    assert listing(inputs) == before
    ok(vlc_cli("run", artifact, "-i", inputs, "-o", tmp_path / "outs"))
    ok(vlc_cli("run", artifact, "-o", tmp_path / "outs"))  # its own folder again: fine
    assert np.load(tmp_path / "outs" / "outputs.npz")["y"].shape[1] == 3


def test_profile_record_refuses_a_directory_it_did_not_write(vlc_cli, artifact, precious, tmp_path):
    before = listing(precious)
    refused(vlc_cli("profile", artifact, "-n", "2", "--warmup", "1", "--record", precious), "thesis.txt", "--record")
    assert listing(precious) == before
    afile = tmp_path / "afile"
    afile.write_text("keep")
    refused(vlc_cli("profile", artifact, "-n", "2", "--warmup", "1", "--record", afile / "sub"), "is a file")
    ok(vlc_cli("profile", artifact, "-n", "2", "--warmup", "1", "--record", tmp_path / "rec"))
    assert list((tmp_path / "rec").rglob("*.result.json"))


def test_empty_and_missing_directories_are_fine(tmp_path):
    from vlc.outdir import claim_output_dir, detect_kind

    (tmp_path / "empty").mkdir()
    assert claim_output_dir(tmp_path / "empty", "results", create=True) == tmp_path / "empty"
    assert detect_kind(tmp_path / "empty") == "results"
    assert claim_output_dir(tmp_path / "empty", "artifact") == tmp_path / "empty"  # nothing in it yet
    assert claim_output_dir(tmp_path / "missing" / "deeper", "artifact") == tmp_path / "missing" / "deeper"
    assert not (tmp_path / "missing").exists()


def test_ascend_emit_and_import_refuse_a_directory_they_did_not_write(vlc_cli, tiny, precious, tmp_path):
    before = listing(precious)
    refused(vlc_cli("ascend", "emit", tiny, precious, "--batch", "2"), "thesis.txt")
    bundle = tmp_path / "bundle"
    ok(vlc_cli("ascend", "emit", tiny, bundle, "--batch", "2"))
    refused(vlc_cli("ascend", "import", bundle, "--results", precious), "thesis.txt", "--results")
    assert listing(precious) == before


def test_a_vlc_output_of_another_kind_is_refused(vlc_cli, tiny, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ok(vlc_cli("bench", tiny, "-t", "onnxruntime", "-n", "2", "--warmup", "1", "--batch", "1",
               "--results", "res", "--artifacts", "arts"))
    records = listing(tmp_path / "res")
    assert any(k.endswith(".result.json") for k in records)
    refused(vlc_cli("compile", tiny, "-t", "onnxruntime", "-o", "res"), "results folder", "not a vlc artifact")
    assert listing(tmp_path / "res") == records
    # the same folders are vlc's own on the next sweep
    ok(vlc_cli("bench", tiny, "-t", "onnxruntime", "-n", "2", "--warmup", "1", "--batch", "1", "--force",
               "--results", "res", "--artifacts", "arts"))


def test_compile_refuses_the_current_directory(vlc_cli, tiny, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    refused(vlc_cli("compile", tiny, "-t", "onnxruntime", "-o", "."), "current directory")
    assert list(work.iterdir()) == [] and leftovers(tmp_path, "work") == []


def test_compile_below_a_file_is_one_line(vlc_cli, tiny, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("keep")
    refused(vlc_cli("compile", tiny, "-t", "onnxruntime", "-o", afile / "x"), "is a file")
    refused(vlc_cli("compile", tiny, "-t", "onnxruntime", "-o", afile), "not a directory")
    assert afile.read_text() == "keep"


def test_export_output_file_checks(vlc_cli, tiny, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("keep")
    refused(vlc_cli("export", tiny, "-o", afile / "x.onnx"), "is a file")
    folder = tmp_path / "dir.onnx"
    folder.mkdir()
    (folder / "mine.txt").write_text("mine")
    refused(vlc_cli("export", tiny, "-o", folder), "is a directory")
    assert (folder / "mine.txt").read_text() == "mine"
    source = tiny.read_bytes()
    refused(vlc_cli("export", tiny, "-o", tiny), "the model being exported")
    assert tiny.read_bytes() == source
    out = tmp_path / "new" / "sub" / "x.onnx"  # missing parents are created
    ok(vlc_cli("export", tiny, "-o", out))
    import onnx

    onnx.checker.check_model(str(out))


def test_report_output_below_a_file_is_one_line(vlc_cli, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("keep")
    results = tmp_path / "res"
    results.mkdir()
    refused(vlc_cli("report", results, "-o", afile / "r.html", "--no-plots"), "is a file")
    assert afile.read_text() == "keep"


# ---- replacing an artifact: atomic, through symlinks, with the umask ---------------------------
def test_recompile_replaces_the_artifact(vlc_cli, tmp_path):
    out = tmp_path / "art"
    first = tiny_onnx(tmp_path / "a" / "tiny.onnx", seed=1)
    ok(vlc_cli("compile", first, "-t", "onnxruntime", "-o", out))
    old = json.loads((out / "manifest.json").read_text())
    (out / "stale.txt").write_text("from a build vlc replaced")  # inside vlc's artifact: replaced with it
    second = tiny_onnx(tmp_path / "b" / "tiny.onnx", seed=2)
    ok(vlc_cli("compile", second, "-t", "onnxruntime", "-o", out))
    new = json.loads((out / "manifest.json").read_text())
    assert new["cache"]["source_hash"] != old["cache"]["source_hash"]
    assert not (out / "stale.txt").exists() and leftovers(tmp_path, "art") == []
    ok(vlc_cli("run", out))


def test_a_failed_rebuild_leaves_the_old_artifact_intact(vlc_cli, tmp_path, monkeypatch):
    from vlc.frontend.pipeline import prepare
    from vlc.plugin_manager import get_target
    from vlc.spec import Precision, TargetSpec

    out = tmp_path / "art"
    ok(vlc_cli("compile", tiny_onnx(tmp_path / "a" / "tiny.onnx", seed=1), "-t", "onnxruntime", "-o", out))
    before = listing(out)
    target = get_target("onnxruntime")
    real_compile = type(target)._compile

    def compile_then_fail(self, source, spec, build):  # the build writes its files, then dies
        real_compile(self, source, spec, build)
        assert any(build.path.iterdir())
        raise RuntimeError("killed mid-build")

    monkeypatch.setattr(type(target), "_compile", compile_then_fail)
    source = prepare(str(tiny_onnx(tmp_path / "b" / "tiny.onnx", seed=2)))
    with pytest.raises(RuntimeError, match="killed mid-build"):
        target.compile(source, TargetSpec("onnxruntime", Precision.FP32), out, force=True)
    assert listing(out) == before and leftovers(tmp_path, "art") == []
    monkeypatch.undo()
    ok(vlc_cli("run", out))


def test_symlinked_output_stays_a_symlink(vlc_cli, tiny, tmp_path):
    real = tmp_path / "store" / "real"
    real.parent.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)  # dangling until the first build
    for extra in ([], ["--force"]):
        ok(vlc_cli("compile", tiny, "-t", "onnxruntime", "-o", link, *extra))
        assert link.is_symlink() and Path(os.readlink(link)) == real
        assert (real / "manifest.json").is_file()
        assert leftovers(tmp_path, "link") == [] and leftovers(real.parent, "real") == []
    ok(vlc_cli("run", link))


def test_symlink_to_a_foreign_directory_is_refused(vlc_cli, tiny, precious, tmp_path):
    link = tmp_path / "link"
    link.symlink_to(precious, target_is_directory=True)
    before = listing(precious)
    refused(vlc_cli("compile", tiny, "-t", "onnxruntime", "-o", link), "thesis.txt")
    assert listing(precious) == before and link.is_symlink()


@pytest.mark.parametrize("mask", [0o002, 0o027])
def test_artifact_directories_follow_the_umask(vlc_cli, tiny, tmp_path, mask):
    old = os.umask(mask)
    try:
        ok(vlc_cli("compile", tiny, "-t", "onnxruntime", "-o", tmp_path / "art"))
        ok(vlc_cli("run", tmp_path / "art", "-o", tmp_path / "outs"))
        ok(vlc_cli("export", tiny, "-o", tmp_path / "x.onnx"))
    finally:
        os.umask(old)
    for d in ("art", "outs"):
        assert stat.S_IMODE((tmp_path / d).stat().st_mode) == 0o777 & ~mask, d
    assert stat.S_IMODE((tmp_path / "x.onnx").stat().st_mode) == 0o666 & ~mask


# ---- orphans of killed runs ----------------------------------------------------------------------
def test_stale_build_orphans_are_cleaned_and_live_ones_kept(vlc_cli, tiny, tmp_path):
    out = tmp_path / "art"
    ok(vlc_cli("compile", tiny, "-t", "onnxruntime", "-o", out))
    gone = dead_pid()
    stale = [tmp_path / f".art.building-{gone}-abcdefgh", tmp_path / f".art.old-{gone}",
             tmp_path / ".art.building-gblf4m2c"]  # the last one without a pid, as older vlc named them
    live = sleeper()
    try:
        alive = tmp_path / f".art.building-{live.pid}-zzzzzzzz"
        users = tmp_path / ".art.backup"  # not a vlc temporary: never touched
        for d in [*stale, alive, users]:
            d.mkdir()
            (d / "model.onnx").write_bytes(b"partial")
        ok(vlc_cli("compile", tiny, "-t", "onnxruntime", "-o", out, "--force"))
        assert not any(d.exists() for d in stale)
        assert alive.is_dir() and users.is_dir()
    finally:
        live.kill()
        live.wait()
    ok(vlc_cli("compile", tiny, "-t", "onnxruntime", "-o", out, "--force"))
    assert not alive.exists() and users.is_dir()


def _frontend_entry(cache: Path) -> Path:
    entries = [p for p in cache.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(entries) == 1, entries
    return entries[0]


def test_stale_frontend_temporaries_are_cleaned_and_live_ones_kept(vlc_cli, tiny, tmp_path):
    import shutil

    cache = tmp_path / "cache"
    compile_ = ("compile", tiny, "-t", "onnxruntime", "-o", tmp_path / "art", "--cache-dir", cache, "--force")
    ok(vlc_cli(*compile_))
    entry = _frontend_entry(cache)
    # another live vlc process working on the same cache entry
    user = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom vlc.outdir import clean_orphans\n"
                             f"clean_orphans({str(cache)!r}, {entry.name!r})\nprint('ready', flush=True)\n"
                             "time.sleep(120)"], stdout=subprocess.PIPE, text=True)
    try:
        assert user.stdout.readline().strip() == "ready"
        orphan = cache / f".{entry.name}.ks89hapv"  # mkdtemp's name, as an older front end leaves it
        orphan.mkdir()
        (orphan / "model.onnx").write_bytes(b"partial")
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
        killed = cache / f".{entry.name}.building-{dead.stdout.strip()}-x1y2z3"  # its owner is gone
        killed.mkdir()
        shutil.rmtree(entry)  # so the front end runs again
        ok(vlc_cli(*compile_))
        assert orphan.is_dir()  # it may be the other process's
        assert not killed.exists()  # the pid in its name says whose it was, whoever else is working
        assert not list(cache.glob(f".{entry.name}.building-{os.getpid()}-*"))  # its own is gone too
    finally:
        user.kill()
        user.wait()
    shutil.rmtree(entry)
    ok(vlc_cli(*compile_))
    assert not orphan.exists() and entry.is_dir()


# ---- two writers of one output -------------------------------------------------------------------
def _hold_lock(path: Path, seconds: float) -> subprocess.Popen:
    code = ("import time\nfrom pathlib import Path\nfrom vlc.outdir import output_lock\n"
            f"with output_lock(Path({str(path)!r})):\n    print('held', flush=True)\n    time.sleep({seconds})\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_compile_waits_for_the_first(vlc_cli, tiny, tmp_path):
    out = tmp_path / "art"
    ok(vlc_cli("compile", tiny, "-t", "onnxruntime", "-o", out))
    holder = _hold_lock(out, 3)
    try:
        start = time.monotonic()
        code, _, stderr = vlc_cli("compile", tiny, "-t", "onnxruntime", "-o", out, "--force")
        waited = time.monotonic() - start
        assert holder.poll() is not None  # it finished only after the other writer
    finally:
        holder.kill()
        holder.wait()
    assert code == 0, stderr
    assert "waiting for vlc process" in stderr and waited > 1.5
    assert (out / "manifest.json").is_file() and leftovers(tmp_path, "art") == []


def test_lock_timeout_is_one_line(tmp_path):
    from vlc.outdir import output_lock

    holder = _hold_lock(tmp_path / "art", 30)
    try:
        with (pytest.raises(InputError, match=f"pid {holder.pid}.* is writing"),
              output_lock(tmp_path / "art", timeout=0.3)):
            pass
    finally:
        holder.kill()
        holder.wait()
    with output_lock(tmp_path / "art", timeout=1):  # released by the kernel when its holder died
        pass
    assert not (tmp_path / ".art.lock").exists()


# ---- bundles ---------------------------------------------------------------------------------------
def test_a_bundle_is_replaced_unless_it_holds_the_target_machines_results(vlc_cli, tiny, tmp_path):
    bundle = tmp_path / "bundle"
    ok(vlc_cli("ascend", "emit", tiny, bundle, "--batch", "2"))
    (bundle / "stale.txt").write_text("from an earlier bundle")
    ok(vlc_cli("ascend", "emit", tiny, bundle, "--batch", "2"))
    assert (bundle / "bundle.json").is_file() and not (bundle / "stale.txt").exists()
    assert leftovers(tmp_path, "bundle") == []
    host = bundle / "results" / "profile" / "host.txt"
    host.parent.mkdir(parents=True)
    host.write_text("npu-box\n")
    refused(vlc_cli("ascend", "emit", tiny, bundle, "--batch", "2"), "results/", "vlc ascend import")
    assert host.read_text() == "npu-box\n"

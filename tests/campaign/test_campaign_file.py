"""Campaign files: what a valid file gives, and one line naming the file, table and key for
every mistake; `vlc campaign run` and `vlc worker start` refuse bad input in one line."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from vlc.campaign import load_campaign, parse_campaign
from vlc.errors import InputError

ROOT = Path(__file__).resolve().parents[2]

GOOD = """
results = "out/results"
report = "out/report.html"
published = true
baseline = "torch/fp32/cpu"
retries = 1

[[run]]
name = "cpu"
models = ["tests/models.py:mlp", "mobilevit-s@test"]
targets = ["onnxruntime", "torch:mode=compile"]
precisions = ["fp32", "fp16"]
batches = [1, 8, 8]
warmup = 3
iterations = 7
transfers = false
requires = { "vlc/onnxruntime" = 1, "vlc/torch" = 0.5 }

[[run]]
models = ["mlp.onnx"]
targets = ["ascend310p"]
duration = 2
requires = { "vlc/ascend310p" = 1 }
"""


def test_a_valid_file(tmp_path):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "models.py").write_text("")
    campaign = parse_campaign(GOOD, tmp_path / "c.toml")
    assert campaign.results == tmp_path / "out" / "results"  # relative to the file
    assert campaign.report == tmp_path / "out" / "report.html"
    assert campaign.published and campaign.baseline == "torch/fp32/cpu" and campaign.retries == 1
    cpu, ascend = campaign.runs
    assert cpu.name == "cpu" and cpu.index == 1 and ascend.name == "run 2"
    assert cpu.targets == ["onnxruntime", "torch:mode=compile"] and cpu.precisions == ["fp32", "fp16"]
    assert cpu.batches == [1, 8]
    assert (cpu.settings.warmup, cpu.settings.iterations, cpu.settings.include_transfers) == (3, 7, False)
    assert cpu.requires == {"vlc/onnxruntime": 1.0, "vlc/torch": 0.5}
    assert ascend.precisions == ["fp32"] and ascend.batches is None and ascend.settings.duration_s == 2.0
    assert ascend.settings.warmup == 10 and ascend.settings.include_transfers  # bench's defaults

    from vlc.campaign.spec import model_ref

    # a model file beside the campaign file is found there; an example name is left alone
    assert model_ref(campaign, "tests/models.py:mlp") == f"{(tmp_path / 'tests' / 'models.py').resolve()}:mlp"
    assert model_ref(campaign, "mobilevit-s@test") == "mobilevit-s@test"


RUN = '[[run]]\nmodels = ["mlp"]\ntargets = ["onnxruntime"]\n'


@pytest.mark.parametrize("text, expected", [
    ("results = 3\n" + RUN, "c.toml: key 'results' must be a non-empty string, got 3"),
    ("colour = 1\n" + RUN, "c.toml: key 'colour' is not a campaign key"),
    ("published = 'yes'\n" + RUN, "c.toml: key 'published' must be true or false"),
    ("results = 'r'\n", "c.toml: has no [[run]] tables"),
    ("[[run\n", "c.toml: is not valid TOML"),
    (RUN + "batches = [0]\n", "c.toml: [[run]] #1: key 'batches' must be a list of positive integers, got [0]"),
    (RUN + "batches = 4\n", "c.toml: [[run]] #1: key 'batches' must be a list of positive integers"),
    (RUN + "iterations = 0\n", "c.toml: [[run]] #1: key 'iterations' must be an integer >= 1, got 0"),
    (RUN + "warmup = true\n", "c.toml: [[run]] #1: key 'warmup' must be an integer >= 0, got True"),
    (RUN + "iterations = 5\nduration = 1.0\n", "c.toml: [[run]] #1: key 'duration' and 'iterations' are exclusive"),
    (RUN + "duration = -1\n", "c.toml: [[run]] #1: key 'duration' must be a number of seconds > 0"),
    (RUN + "transfers = 1\n", "c.toml: [[run]] #1: key 'transfers' must be true or false"),
    (RUN + "requires = 'gpu'\n", "c.toml: [[run]] #1: key 'requires' must be a table of Ray resources"),
    (RUN + "requires = { 'vlc/a10' = 0 }\n", "c.toml: [[run]] #1: key 'requires.vlc/a10' must be a positive number"),
    (RUN + "precisions = ['fp7']\n", "c.toml: [[run]] #1: key 'precisions'"),
    (RUN + "speed = 1\n", "c.toml: [[run]] #1: key 'speed' is not a campaign key"),
    ('[[run]]\ntargets = ["onnxruntime"]\n', "c.toml: [[run]] #1: key 'models' is missing"),
    ('[[run]]\nmodels = []\ntargets = ["onnxruntime"]\n', "c.toml: [[run]] #1: key 'models' must be a non-empty list"),
    (RUN + RUN.replace("onnxruntime", "tensorflow"), "c.toml: [[run]] #2: key 'targets'"),
])
def test_mistakes_are_one_line_naming_file_table_and_key(tmp_path, text, expected):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(InputError) as info:
        load_campaign(path)
    line = info.value.line()
    assert expected in line.replace(str(tmp_path) + "/", "")
    assert "\n" not in line


def test_cli_errors_are_one_line(tmp_path, vlc_cli):
    code, _, err = vlc_cli("campaign", "run", tmp_path / "missing.toml")
    assert code != 0 and "cannot read campaign file" in err and "Traceback" not in err
    bad = tmp_path / "bad.toml"
    bad.write_text(RUN + "batches = [-2]\n")
    code, _, err = vlc_cli("campaign", "run", bad)
    assert code != 0 and "[[run]] #1: key 'batches'" in err and len(err.strip().splitlines()) == 1


def test_cluster_without_ray_says_how_to_install(tmp_path, vlc_cli, monkeypatch):
    good = tmp_path / "c.toml"
    good.write_text(RUN)
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as on a machine without it
    code, _, err = vlc_cli("campaign", "run", good, "--cluster", "127.0.0.1:6379")
    assert code != 0 and "pip install 'vlc[cluster]'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "results").exists()  # refused before anything ran


def test_worker_start_probes_targets_into_resources(vlc_cli, monkeypatch):
    import json

    sys.path.insert(0, str(ROOT / "tests" / "targets" / "ascend"))
    from standin_env import STANDINS, standin_path

    code, out, err = vlc_cli("worker", "start", "--head", "--dry-run", "--resources", '{"vlc/a10": 2}',
                             "--machine", "lab-1", "--num-cpus", "1", "--", "--temp-dir=/tmp/vlc-ray")
    assert code == 0, err
    plan = json.loads(out)
    offered = plan["resources"]
    assert offered["vlc/onnxruntime"] == offered["vlc/torch"] == 1 and offered["vlc/a10"] == 2
    assert "vlc/ascend310p" not in offered  # no atc/ais_bench here
    from vlc.cli.targets_cmd import describe_targets
    from vlc.environment import nvidia_gpus

    rtx = next(t for t in describe_targets()["targets"] if t["name"] == "trt-rtx")
    assert ("vlc/trt-build-sm86" in offered) == rtx["available"]  # the toolchain: TensorRT-RTX builds for 8.6 (A10)
    a10s = [g for g in nvidia_gpus() if g.get("compute_capability") == "8.6"]
    assert ("vlc/trt-sm86" in offered) == bool(rtx["available"] and a10s)  # the hardware: an sm86 GPU here
    command = plan["command"]
    assert command[1:3] == ["start", "--head"] and "--num-cpus=1" in command
    assert command[0].endswith("ray")  # `ray start` itself; a loopback address goes through vlc's launcher
    assert command[-1] == "--temp-dir=/tmp/vlc-ray"  # after `--`: passed to `ray start` as given
    assert json.loads(next(c for c in command if c.startswith("--resources="))[len("--resources="):]) == offered
    assert plan["machine"] == "lab-1"

    monkeypatch.setenv("PATH", standin_path())
    monkeypatch.setenv("VLC_AIS_BENCH", str(STANDINS / "ais_bench_cli"))
    code, out, err = vlc_cli("worker", "start", "--address", "127.0.0.1:6379", "--dry-run")
    assert code == 0, err
    plan = json.loads(out)
    assert plan["resources"]["vlc/ascend310p"] == 1  # atc and ais_bench found
    assert "--address=127.0.0.1:6379" in plan["command"]

    code, out, err = vlc_cli("worker", "start", "--address", "127.0.0.1:6379", "--node-ip-address", "127.0.0.1",
                             "--temp-dir", "/tmp/vlc-node", "--dry-run")
    assert code == 0, err
    command = json.loads(out)["command"]  # Ray would replace 127.0.0.1 with the host's outward address
    assert command[1:4] == ["-m", "vlc.campaign.ray_start", "start"] and "--temp-dir=/tmp/vlc-node" in command


@pytest.mark.parametrize("args, expected", [
    ([], "give one of --head and --address HEAD"),
    (["--head", "--address", "h:1"], "give one of --head and --address HEAD"),
    (["--head", "--resources", "{nope"], "--resources is not JSON"),
    (["--head", "--resources", '{"vlc/a10": -1}'], "--resources must be a JSON object"),
    (["--address", "h:1", "--port", "7000"], "--port is the head's port"),
    (["--head", "--temp-dir", "rel/dir"], "--temp-dir rel/dir is not an absolute path"),
])
def test_worker_start_mistakes(vlc_cli, args, expected):
    code, _, err = vlc_cli("worker", "start", *args, "--dry-run")
    assert code != 0 and expected in err and len(err.strip().splitlines()) == 1


def test_an_unreachable_cluster_is_one_line(tmp_path, vlc_cli):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'vlc[cluster]')")
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    good = tmp_path / "c.toml"
    good.write_text(RUN)
    code, _, err = vlc_cli("campaign", "run", good, "--cluster", f"127.0.0.1:{port}")
    assert code != 0 and f"cannot reach the Ray cluster at 127.0.0.1:{port}" in err
    assert len(err.strip().splitlines()) == 1

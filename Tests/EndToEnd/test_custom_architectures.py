"""Custom architectures: the template package in examples/custom-architecture, built as a dynamic
library against Tessel's TesselWorkerCore product, loaded with `--custom-architectures`, serves
a checkpoint whose `architectures` names it; bad plugins are one-line errors naming the path."""
import json
import pathlib
import shutil
import subprocess

import pytest

from conftest import BIN_DIR, REPO, RouterProcess, serving
from test_tensor_parallel import FIXTURES, assert_matches_transformers

EXAMPLE = REPO / "examples" / "custom-architecture"


@pytest.fixture(scope="module")
def plugin():
    """Builds the template (a cold build compiles Tessel's worker library into it: minutes)."""
    build = subprocess.run(["swift", "build"], cwd=EXAMPLE, capture_output=True, text=True, timeout=1800)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    folder = subprocess.run(["swift", "build", "--show-bin-path"], cwd=EXAMPLE, capture_output=True, text=True,
                            check=True).stdout.strip()
    library = pathlib.Path(folder) / "libTinyCustom.so"
    assert library.exists(), f"the build left no {library}"
    return library


@pytest.fixture()
def custom_checkpoint(tmp_path):
    """tiny-qwen2 under the class name the plugin registers."""
    folder = tmp_path / "tiny-custom"
    shutil.copytree(FIXTURES / "families" / "tiny-qwen2", folder)
    config = json.loads((folder / "config.json").read_text())
    config["architectures"] = ["TinyCustomForCausalLM"]
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_the_plugin_serves_its_architecture_and_matches_transformers(plugin, custom_checkpoint):
    with serving("--model", str(custom_checkpoint), "--custom-architectures", str(plugin), "--activations", "f32") as router:
        assert_matches_transformers(router, FIXTURES / "families" / "tiny-qwen2.expected.json")


def test_the_plugin_is_loaded_by_every_spawned_worker(plugin, custom_checkpoint):
    with serving("--model", str(custom_checkpoint), "--custom-architectures", str(plugin), "--workers", "2",
                 "--activations", "f32") as router:
        assert_matches_transformers(router, FIXTURES / "families" / "tiny-qwen2.expected.json")


def test_without_the_plugin_the_architecture_is_unknown(custom_checkpoint):
    router = RouterProcess("--model", str(custom_checkpoint))
    code = router.proc.wait(timeout=120)
    assert code != 0
    assert "TinyCustomForCausalLM" in router.output() and "not a supported architecture" in router.output()


def worker_error(checkpoint, plugins):
    """A worker started on its own with `--custom-architectures plugins`: its exit and stderr."""
    r = subprocess.run([str(BIN_DIR / "worker"), "--rank", "0", "--shard", "0/1", "--model", str(checkpoint),
                        "--listen", "ipc:///tmp/tessel-plugin-test.sock", "--custom-architectures", ",".join(map(str, plugins))],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    return lines[-1]


def compile_c_library(tmp_path, name, source):
    c = tmp_path / f"{name}.c"
    c.write_text(source)
    library = tmp_path / f"lib{name}.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(library), str(c)], check=True)
    return library


def test_bad_plugins_are_one_line_errors_naming_the_path(plugin, custom_checkpoint, tmp_path):
    no_entry = compile_c_library(tmp_path, "noentry", "int unrelated(void) { return 1; }\n")
    line = worker_error(custom_checkpoint, [no_entry])
    assert str(no_entry) in line and "no 'tessel_plugin_abi_version' entry point" in line, line

    wrong = compile_c_library(tmp_path, "wrongabi", "int tessel_plugin_abi_version(void) { return 999; }\n"
                                                    "void tessel_register_architectures(void *r) {}\n")
    line = worker_error(custom_checkpoint, [wrong])
    assert str(wrong) in line and "built for Tessel plugin ABI 999" in line, line

    line = worker_error(custom_checkpoint, [plugin, plugin])
    assert str(plugin) in line and "architecture 'tiny-custom' is already registered" in line, line

    missing = tmp_path / "libabsent.so"
    line = worker_error(custom_checkpoint, [missing])
    assert str(missing) in line and "cannot load the architecture plugin" in line, line

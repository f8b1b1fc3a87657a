"""Tests of the Docker images and the docker invoke tasks (no Docker engine needed).

The Dockerfiles are read with the `dockerfile` package (the official Go parser); shell steps
that decide what gets installed are executed with /bin/sh against a stub `python`; the tasks run
against invoke's MockContext, which fails on any command other than the expected one.
"""

import json
import posixpath
import re
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import dockerfile
import pytest
import yaml
from invoke import Collection, MockContext, Program, Result
from invoke.exceptions import Exit

import tasks.docker as docker_tasks
import tasks.docker_mounts as docker_mounts

ROOT = Path(__file__).resolve().parent.parent
BASE_DOCKERFILE = ROOT / "docker" / "app_base.Dockerfile"
APP_DOCKERFILE = ROOT / "docker" / "app.Dockerfile"
WEIGHTS_FILE_IN_DOCKERFILE = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"


# --------------------------------------------------------------------------------------------
# A small Dockerfile interpreter: ARG/ENV substitution, final USER, instruction order.
# --------------------------------------------------------------------------------------------


def _pinned_tf() -> str:
    """The `tensorflow==X` pin of requirements.txt, parsed here independently of tasks.docker."""
    pins = re.findall(r"(?im)^tensorflow==(\S+)\s*$", (ROOT / "requirements.txt").read_text())
    assert len(pins) == 1, pins
    return pins[0]


def _substitute(text: str, variables: dict[str, str]) -> str:
    def value(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        assert name in variables, f"undefined variable {name} in {text!r}"
        return variables[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, text)


def _interpret(path: Path, build_args: dict[str, str] | None = None, env=None) -> dict:
    """Walks a one-stage Dockerfile and returns what the image ends up with.

    Returns a dict with `from` (resolved), `env` (final, starting from `env`), `user` (resolved
    final USER or None), `workdir`, and `steps`: [(instruction, env and args in scope)].
    """
    build_args = build_args or {}
    global_args: dict[str, str] = {}
    stage_args: dict[str, str] = {}
    result = {"from": None, "env": dict(env or {}), "user": None, "workdir": "/", "steps": []}
    for ins in dockerfile.parse_file(str(path)):
        scope = {**stage_args, **result["env"]}
        if ins.cmd == "ARG":
            name, _, default = ins.value[0].partition("=")
            value = build_args.get(name, default)
            if result["from"] is None:
                global_args[name] = value
            else:  # an ARG after FROM re-declares a global one or defines a new one
                stage_args[name] = build_args.get(name, global_args.get(name, default))
        elif ins.cmd == "FROM":
            assert result["from"] is None, f"{path.name}: expected a single stage"
            result["from"] = _substitute(ins.value[0], global_args)
        elif ins.cmd == "ENV":
            pairs = dict(zip(ins.value[::2], ins.value[1::2], strict=True))
            for key, raw in pairs.items():
                result["env"][key] = _substitute(raw.strip('"'), scope)
        elif ins.cmd == "USER":
            result["user"] = _substitute(ins.value[0], scope)
        elif ins.cmd == "WORKDIR":
            result["workdir"] = posixpath.join(result["workdir"], _substitute(ins.value[0], scope))
        result["steps"].append((ins, scope))
    return result


def _index(steps, predicate) -> int:
    hits = [i for i, (ins, _) in enumerate(steps) if predicate(ins)]
    assert len(hits) == 1, [steps[i][0].original for i in hits]
    return hits[0]


def _images():
    base = _interpret(BASE_DOCKERFILE)
    app = _interpret(APP_DOCKERFILE, env=base["env"])
    return base, app


# --------------------------------------------------------------------------------------------
# Dockerfiles
# --------------------------------------------------------------------------------------------


def test_base_image_is_the_official_gpu_image_of_the_pinned_tensorflow():
    base = _interpret(BASE_DOCKERFILE)
    assert base["from"] == f"tensorflow/tensorflow:{_pinned_tf()}-gpu"
    # The build task passes the pin explicitly, and resolves to the same image.
    passed = _interpret(BASE_DOCKERFILE, {"TF_VERSION": docker_tasks.pinned_tensorflow_version()})
    assert passed["from"] == base["from"]


def test_app_image_builds_on_the_base_image_tag_the_tasks_build():
    assert _interpret(APP_DOCKERFILE)["from"] == docker_tasks.DEFAULT_BASE_TAG


def _stub_python(tmp_path: Path) -> Path:
    """A `python` that answers what the install steps ask and records what pip is given."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "python"
    stub.write_text(
        """#!/bin/sh
case "$*" in
  "-m pip list --format=freeze")
    printf 'tensorboard==9.9.9\\nTensorFlow==%s\\nnumpy==1.0\\n' "$STUB_TF";;
  "-m pip install"*)
    while [ $# -gt 0 ]; do
      case "$1" in
        --requirement) cp "$2" "$STUB_OUT/requirements"; shift;;
        --constraint) cp "$2" "$STUB_OUT/constraints"; shift;;
      esac
      shift
    done;;
  "-c "*) echo "$STUB_TF";;
  *) echo "unexpected python call: $*" >&2; exit 3;;
esac
"""
    )
    stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    return bin_dir


def _run_step(script: str, tmp_path: Path, installed_tf: str) -> subprocess.CompletedProcess:
    """Runs a RUN step with /bin/sh (what Docker uses), /tmp/cgd redirected to a temp folder."""
    work = tmp_path / "cgd"
    out = tmp_path / "out"
    work.mkdir()
    out.mkdir()
    for name in ("requirements.txt", "requirements-dev.txt"):
        (work / name).write_text((ROOT / name).read_text())
    env = {
        "PATH": f"{_stub_python(tmp_path)}:/usr/bin:/bin",
        "STUB_TF": installed_tf,
        "STUB_OUT": str(out),
    }
    script = script.replace("/tmp/cgd", str(work))
    return subprocess.run(["/bin/sh", "-c", script], env=env, capture_output=True, text=True)


def _requirement_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]


def test_base_installs_the_requirements_but_keeps_the_image_tensorflow(tmp_path):
    base = _interpret(BASE_DOCKERFILE)
    i = _index(base["steps"], lambda ins: ins.cmd == "RUN" and "pip install" in ins.value[0])
    copy = _index(base["steps"], lambda ins: ins.cmd == "COPY" and "requirements.txt" in ins.value)
    assert copy < i
    done = _run_step(base["steps"][i][0].value[0], tmp_path, installed_tf=_pinned_tf())
    assert done.returncode == 0, done.stderr
    given = _requirement_lines((tmp_path / "out" / "requirements").read_text())
    expected = [
        line
        for line in _requirement_lines((ROOT / "requirements.txt").read_text())
        if not line.lower().startswith("tensorflow==")
    ]
    assert given == expected and len(expected) >= 5
    # The installed TensorFlow (and only TensorFlow packages) is held in place.
    constraints = (tmp_path / "out" / "constraints").read_text().split()
    assert constraints == [f"TensorFlow=={_pinned_tf()}"]


def test_base_build_fails_when_the_image_tensorflow_differs_from_the_pin(tmp_path):
    base = _interpret(BASE_DOCKERFILE)
    i = _index(base["steps"], lambda ins: ins.cmd == "RUN" and "pip install" in ins.value[0])
    done = _run_step(base["steps"][i][0].value[0], tmp_path, installed_tf="0.0.1")
    assert done.returncode != 0
    assert f"image TensorFlow 0.0.1 != requirements.txt pin {_pinned_tf()}" in done.stderr


def test_app_installs_only_dev_tools_constrained_by_the_requirements(tmp_path):
    app = _interpret(APP_DOCKERFILE)
    i = _index(app["steps"], lambda ins: ins.cmd == "RUN" and "pip install" in ins.value[0])
    done = _run_step(app["steps"][i][0].value[0], tmp_path, installed_tf=_pinned_tf())
    assert done.returncode == 0, done.stderr
    dev = _requirement_lines((ROOT / "requirements-dev.txt").read_text())
    given = _requirement_lines((tmp_path / "out" / "requirements").read_text())
    assert given == [line for line in dev if not line.startswith("-r")] and given
    constraints = (tmp_path / "out" / "constraints").read_text()
    assert constraints == (ROOT / "requirements.txt").read_text()


def test_weights_are_fetched_where_keras_reads_them_at_run_time(monkeypatch):
    """The weights file is the one Keras asks for, under the KERAS_HOME the container runs with.

    Keras resolves `get_file(fname, cache_subdir=...)` with `cache_dir=None` to
    `$KERAS_HOME/<cache_subdir>/<fname>`; the request is captured from Keras's own ResNet-50.
    """
    import keras
    from keras.src.utils import file_utils

    requested = {}

    class CapturedError(Exception):
        pass

    def fake_get_file(fname=None, origin=None, **kwargs):
        requested.update(kwargs, fname=fname)
        raise CapturedError

    monkeypatch.setattr(file_utils, "get_file", fake_get_file)
    with pytest.raises(CapturedError):
        keras.applications.ResNet50(weights="imagenet", include_top=False, input_shape=(32, 32, 3))
    assert requested["fname"] == WEIGHTS_FILE_IN_DOCKERFILE
    assert requested.get("cache_dir") is None  # so Keras uses KERAS_HOME

    base, app = _images()
    keras_home = app["env"]["KERAS_HOME"]
    assert posixpath.isabs(keras_home)
    expected = posixpath.join(keras_home, requested["cache_subdir"], requested["fname"])

    fetch = _index(base["steps"], lambda ins: ins.cmd == "RUN" and "ResNet50(" in ins.value[0])
    install = _index(base["steps"], lambda ins: ins.cmd == "RUN" and "pip install" in ins.value[0])
    assert install < fetch  # fetched with the pinned Keras
    script, scope = base["steps"][fetch][0].value[0], base["steps"][fetch][1]
    assert "weights='imagenet'" in script and "include_top=False" in script
    assert scope["KERAS_HOME"] == keras_home  # same folder at download and at run time
    checked = re.search(r'test -s "([^"]+)"', script).group(1)
    assert _substitute(checked, scope) == expected
    # Keras falls back to /tmp/.keras (and downloads) when KERAS_HOME is not writable.
    assert re.search(r'find "\$\{KERAS_HOME\}" -type d -exec chmod 1777', script)


def test_app_runs_as_a_non_root_user_with_the_repo_at_workdir():
    _, app = _images()
    for build_args in ({}, {"USER_UID": "1234", "USER_GID": "5678"}):
        user = _interpret(APP_DOCKERFILE, build_args)["user"]
        assert user is not None and user.split(":")[0] not in ("", "root", "0"), user
    assert _interpret(APP_DOCKERFILE, {"USER_UID": "1234", "USER_GID": "5678"})["user"] == (
        "1234:5678"
    )
    steps = app["steps"]
    useradd = _index(steps, lambda ins: ins.cmd == "RUN" and "useradd" in ins.value[0])
    assert '--uid "${USER_UID}"' in steps[useradd][0].value[0]
    assert app["workdir"] == docker_mounts.CONTAINER_WORKDIR == app["env"]["PYTHONPATH"]
    assert app["env"]["TF_CPP_MIN_LOG_LEVEL"] in ("1", "2", "3")
    assert steps[-2][0].cmd == "USER"  # nothing after it but CMD: no root-owned leftovers


def test_app_useradd_refuses_uid_zero():
    app = _interpret(APP_DOCKERFILE, {"USER_UID": "0"})
    i = _index(app["steps"], lambda ins: ins.cmd == "RUN" and "useradd" in ins.value[0])
    script = _substitute(app["steps"][i][0].value[0], app["steps"][i][1])
    stop_before_useradd = script.replace("getent group", "exit 0; getent group")
    done = subprocess.run(["/bin/sh", "-c", stop_before_useradd], capture_output=True, text=True)
    assert done.returncode == 1 and "USER_UID=0" in done.stderr


def test_requirements_are_copied_before_the_code():
    steps = _interpret(APP_DOCKERFILE)["steps"]
    reqs = _index(steps, lambda ins: ins.cmd == "COPY" and "requirements-dev.txt" in ins.value)
    pip = _index(steps, lambda ins: ins.cmd == "RUN" and "pip install" in ins.value[0])
    code = _index(steps, lambda ins: ins.cmd == "COPY" and ins.value[0] == ".")
    assert reqs < pip < code
    assert steps[code][0].value[-1] == docker_mounts.CONTAINER_WORKDIR
    base_sources = [ins.value[:-1] for ins, _ in _interpret(BASE_DOCKERFILE)["steps"]]
    assert all("." not in sources for sources in base_sources)  # the base holds no code


# --------------------------------------------------------------------------------------------
# .dockerignore, matched with Docker's rules: patterns anchored at the context root, `**` any
# number of folders, a pattern that matches a folder excludes everything below it, `!` re-adds,
# the last matching pattern wins.
# --------------------------------------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def _dockerignored(path: str, lines: list[str]) -> bool:
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = posixpath.normpath(line.lstrip("!").strip()).lstrip("/")
        regex = _pattern_regex(pattern)
        if any(regex.fullmatch(candidate) for candidate in candidates):
            ignored = not negate
    return ignored


def test_matcher_follows_docker_anchoring():
    assert _dockerignored("data/x.jpg", ["data/"])
    assert not _dockerignored("net/data.py", ["data"])
    assert not _dockerignored("a/b.h5", ["*.h5"])  # anchored: only the root folder
    assert _dockerignored("a/b.h5", ["**/*.h5"])
    assert not _dockerignored("data/keep.txt", ["data", "!data/keep.txt"])


@pytest.mark.parametrize(
    "path",
    [
        "data/cars196/car_ims/000001.jpg",
        "data/cars196/cars_annos.mat",
        "outputs/run1/model.keras",
        "runs/x/events.out",
        ".venv/bin/python",
        "venv/lib/site.py",
        ".git/HEAD",
        "net/__pycache__/model.cpython-311.pyc",
        "tests/__pycache__/test_docker.cpython-311-pytest-9.0.3.pyc",
        ".pytest_cache/v/cache/nodeids",
        "weights/resnet50.h5",
        "somewhere/embeddings.npz",
    ],
)
def test_dockerignore_excludes(path):
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    assert _dockerignored(path, lines)


@pytest.mark.parametrize(
    "path",
    [
        "requirements.txt",
        "requirements-dev.txt",
        "tasks.py",
        "tasks/docker.py",
        "net/data.py",
        "net/model.py",
        "tests/test_data.py",
        "config.yaml",
        "setup.cfg",
    ],
)
def test_dockerignore_keeps_code(path):
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    assert not _dockerignored(path, lines)


# --------------------------------------------------------------------------------------------
# Tasks
# --------------------------------------------------------------------------------------------


@pytest.fixture
def host(monkeypatch):
    """A host with uid 1234, gid 5678, no terminal; `host.gpu` toggles the GPU detection."""

    class Host:
        gpu = False

    monkeypatch.setattr(docker_tasks, "host_has_nvidia_gpu", lambda: Host.gpu)
    monkeypatch.setattr(docker_tasks, "host_user_ids", lambda: (1234, 5678))
    monkeypatch.setattr(docker_tasks, "stdin_is_terminal", lambda: False)
    return Host


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A repository root with config.yaml: relative data root, absolute output root."""
    root = tmp_path / "repo"
    (root / "data" / "cars196").mkdir(parents=True)
    outputs = tmp_path / "elsewhere" / "outputs"
    config = {"data": {"root": "data/cars196"}, "output": {"root": str(outputs)}, "other": 1}
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setattr(docker_tasks, "REPO_ROOT", root)
    monkeypatch.setattr(docker_mounts, "REPO_ROOT", root)
    monkeypatch.chdir(root)
    return root, outputs


def _expected_run(root: Path, outputs: Path, gpu_flags: str, tail: str, data_ro=True) -> str:
    readonly = ",readonly" if data_ro else ""
    return (
        f"docker run --rm {gpu_flags}--user 1234:5678 "
        f"--mount type=bind,source={root}/data/cars196,target=/app/data/cars196{readonly} "
        f"--mount type=bind,source={outputs},target={outputs} "
        f"--mount type=bind,source={root}/config.yaml,target=/app/config.yaml,readonly "
        f"cgd-app:latest{tail}"
    )


@pytest.mark.parametrize(
    ("gpu", "gpus", "flags"),
    [
        (True, "auto", "--gpus all "),
        (False, "auto", ""),
        (False, "all", "--gpus all "),
        (True, "none", ""),
        (True, "0,1", "--gpus '\"device=0,1\"' "),
    ],
)
def test_run_command_with_and_without_gpus(host, repo, capsys, gpu, gpus, flags):
    root, outputs = repo
    host.gpu = gpu
    expected = _expected_run(root, outputs, flags, " bash -c 'invoke train --config-path x.yaml'")
    c = MockContext(run={expected: Result()})
    docker_tasks.run(c, gpus=gpus, command="invoke train --config-path x.yaml")
    c.run.assert_called_once_with(expected, pty=False)
    assert capsys.readouterr().out.strip() == expected
    assert outputs.is_dir()  # created by the host user before docker could create it as root


def test_run_interactive_shell_on_a_terminal(host, repo, monkeypatch):
    root, outputs = repo
    monkeypatch.setattr(docker_tasks, "stdin_is_terminal", lambda: True)
    expected = _expected_run(root, outputs, "--interactive --tty ", "")
    c = MockContext(run={expected: Result()})
    docker_tasks.run(c, gpus="none")
    c.run.assert_called_once_with(expected, pty=True)


def test_run_dry_run_only_prints(host, repo, capsys):
    root, outputs = repo
    c = MockContext(run={})  # any docker call would raise
    docker_tasks.run(c, gpus="none", dry_run=True)
    assert capsys.readouterr().out.strip() == _expected_run(root, outputs, "", "")
    assert c.run.call_count == 0 and not outputs.exists()


def test_run_through_the_invoke_command_line(host, repo, capsys):
    root, outputs = repo
    program = Program(namespace=Collection(docker=Collection.from_module(docker_tasks)))
    argv = ["invoke", "docker.run", "--config-path", "config.yaml", "--gpus", "none", "--dry-run"]
    program.run(argv + ["--command", "python -m pytest -q", "--no-data-read-only"], exit=False)
    expected = _expected_run(root, outputs, "", " bash -c 'python -m pytest -q'", data_ro=False)
    assert capsys.readouterr().out.strip() == expected


def test_mount_code_mounts_the_working_tree_at_app_first(host, repo, capsys):
    """--mount-code: the working tree read-write at /app, before (so under) the other mounts;
    without it the code baked into the image is used."""
    root, outputs = repo
    c = MockContext(run={})
    docker_tasks.run(c, gpus="none", mount_code=True, dry_run=True)
    printed = capsys.readouterr().out.strip()
    baked = _expected_run(root, outputs, "", "")
    code = f"--mount type=bind,source={root},target=/app "
    assert printed == baked.replace("--mount ", code + "--mount ", 1)
    assert ",readonly" not in code
    docker_tasks.run(c, gpus="none", dry_run=True)
    assert capsys.readouterr().out.strip() == baked


def test_mount_code_through_the_invoke_command_line(host, repo, capsys):
    root, _ = repo
    program = Program(namespace=Collection(docker=Collection.from_module(docker_tasks)))
    program.run(["invoke", "docker.run", "--mount-code", "--gpus", "none", "--dry-run"], exit=False)
    assert f"--mount type=bind,source={root},target=/app " in capsys.readouterr().out


def test_every_task_documents_its_options():
    """Help texts as `invoke --help` shows them, read in a fresh process.

    Invoke consumes a task's help dict when it first builds the task's arguments, which other
    tests here have already done in this process.
    """
    script = (
        "import json, tasks.docker as d; from invoke import Collection\n"
        "ns = Collection.from_module(d)\n"
        "print(json.dumps({n: [ns[n].body.__doc__, {a.name: a.help for a in ns[n].get_arguments()}]"
        " for n in ns.task_names}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    documented = json.loads(done.stdout)
    assert set(documented) == {"build-app-base-container", "build-app-container", "run"}
    for name, (doc, helps) in documented.items():
        assert doc and helps and all(helps.values()), (name, helps)
        assert "dry_run" in helps, name
    assert {"config_path", "gpus", "command"} <= set(documented["run"][1])


def _run_error(**kwargs) -> str:
    """The one-line message with which docker.run stops (exit code 2, no traceback)."""
    with pytest.raises(Exit) as info:
        docker_tasks.run(MockContext(run={}), **kwargs)
    assert info.value.code == 2 and "\n" not in info.value.message
    return info.value.message


def test_run_errors_name_the_file_and_key(host, repo, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {root: data}\noutput: {}\n")
    assert re.search(r"bad\.yaml: key 'output\.root'", _run_error(config_path=str(bad)))
    assert "missing.yaml" in _run_error(config_path="missing.yaml", dry_run=True)
    assert "gpus='2x'" in _run_error(gpus="2x", dry_run=True)
    bad.write_text("data: [unclosed\n")
    assert f"{bad}: not valid YAML at line 2, column 1: " in _run_error(config_path=str(bad))


def test_run_refuses_missing_data_and_mounts_over_the_code(host, repo):
    root, _ = repo
    (root / "data" / "cars196").rmdir()
    assert "data.root 'data/cars196'" in _run_error(gpus="none")
    for configured in (".", "/", "..", "net/../."):
        with pytest.raises(ValueError, match="would hide the code"):
            docker_mounts.container_path(configured)
    assert docker_mounts.container_path("../datasets/cars") == "/datasets/cars"
    assert docker_mounts.container_path("/mnt/cars/") == "/mnt/cars"


def test_relative_roots_follow_the_configuration_file_folder(host, repo, tmp_path, capsys):
    """As net.config does: relative roots are relative to the file's folder, here and in /app."""
    root, outputs = repo
    (root / "configs").mkdir()
    (root / "configs" / "exp.yaml").write_text(
        "data: {root: ../data/cars196}\noutput: {root: ../runs}\n"
        "profiles: {small: {data: {root: ../data/demo}}}\n"
    )
    docker_tasks.run(MockContext(run={}), config_path="configs/exp.yaml", gpus="none", dry_run=True)
    assert capsys.readouterr().out.strip() == (
        "docker run --rm --user 1234:5678 "
        f"--mount type=bind,source={root}/data/cars196,target=/app/data/cars196,readonly "
        f"--mount type=bind,source={root}/runs,target=/app/runs "
        f"--mount type=bind,source={root}/configs/exp.yaml,target=/app/configs/exp.yaml,readonly "
        "cgd-app:latest"
    )
    # A profile overlays only the roots it names; a file outside the repository keeps its path.
    outside = tmp_path / "exp" / "outside.yaml"
    outside.parent.mkdir()
    outside.write_text((root / "configs" / "exp.yaml").read_text())
    mounts = docker_mounts.config_mounts(outside, profile="small")
    assert [(str(m.source), m.target) for m in mounts] == [
        (str(tmp_path / "data" / "demo"), str(tmp_path / "data" / "demo")),
        (str(tmp_path / "runs"), str(tmp_path / "runs")),
        (str(outside), str(outside)),
    ]
    with pytest.raises(ValueError, match="unknown profile 'big' \\(profiles: small\\)"):
        docker_mounts.config_mounts(outside, profile="big")
    # --set overrides apply after the profile, as for the training code (and checked like it).
    moved = docker_mounts.config_mounts(
        outside, profile="small", overrides=["data.root=/srv/cars", "output.root=out"]
    )
    assert [(str(m.source), m.target) for m in moved[:2]] == [
        ("/srv/cars", "/srv/cars"),
        (str(outside.parent / "out"), str(outside.parent / "out")),
    ]
    with pytest.raises(ValueError, match="--set data.rot=x: unknown key data.rot"):
        docker_mounts.config_mounts(outside, overrides=["data.rot=x"])
    outside.write_text("data: {root: ~/cars}\noutput: {root: runs}\n")
    with pytest.raises(ValueError, match="'data.root' = '~/cars'"):
        docker_mounts.config_mounts(outside)


@pytest.mark.parametrize("profile", [None, "demo"])
def test_the_repository_config_mounts_what_the_training_code_reads(profile):
    """config.yaml resolves to the folders net.config resolves, mounted under /app."""
    if not (ROOT / "config.yaml").is_file():
        pytest.skip("no config.yaml yet")
    from net.config import load_config

    config = load_config(ROOT / "config.yaml", profile=profile)
    data, output, mounted = docker_mounts.config_mounts(ROOT / "config.yaml", profile)
    assert (data.source, output.source) == (Path(config.data.root), Path(config.output.root))
    for mount in (data, output):
        assert mount.target == "/app/" + mount.source.relative_to(ROOT).as_posix()
    assert mounted.target == "/app/config.yaml" and data.read_only and not output.read_only


def test_build_commands(host, capsys):
    pin = _pinned_tf()
    base = (
        f"docker build --file {ROOT}/docker/app_base.Dockerfile --build-arg TF_VERSION={pin} "
        f"--tag my-base:1 {ROOT}"
    )
    app = (
        f"docker build --file {ROOT}/docker/app.Dockerfile --build-arg BASE_IMAGE=my-base:1 "
        f"--build-arg USER_UID=1234 --build-arg USER_GID=5678 --tag cgd-app:latest {ROOT}"
    )
    c = MockContext(run={base: Result(), app: Result()})
    docker_tasks.build_app_base_container(c, tag="my-base:1")
    docker_tasks.build_app_container(c, base_tag="my-base:1")
    assert [call.args[0] for call in c.run.call_args_list] == [base, app]
    assert capsys.readouterr().out.split("\n")[:2] == [base, app]


def test_build_app_as_root_host_keeps_the_default_user(monkeypatch, capsys):
    monkeypatch.setattr(docker_tasks, "host_user_ids", lambda: (0, 0))
    docker_tasks.build_app_container(MockContext(run={}), dry_run=True)
    printed = shlex.split(capsys.readouterr().out)
    assert "USER_UID=0" not in printed and not any(a.startswith("USER_UID") for a in printed)


def test_pinned_version_errors_name_the_file(tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("tensorflow>=2.0\nkeras==3.15.1\n")
    with pytest.raises(ValueError, match=re.escape(str(requirements))):
        docker_tasks.pinned_tensorflow_version(requirements)
    requirements.write_text("# c\nTensorFlow == 2.21.0 ; sys_platform == 'linux'\n")
    assert docker_tasks.pinned_tensorflow_version(requirements) == "2.21.0"


def test_gpu_detection_looks_for_nvidia_smi_or_device(monkeypatch):
    monkeypatch.setattr(docker_tasks.shutil, "which", lambda name: None)
    monkeypatch.setattr(docker_tasks.os.path, "exists", lambda path: path == "/dev/nvidia0")
    assert docker_tasks.host_has_nvidia_gpu()
    monkeypatch.setattr(docker_tasks.os.path, "exists", lambda path: False)
    assert not docker_tasks.host_has_nvidia_gpu()
    monkeypatch.setattr(docker_tasks.shutil, "which", lambda name: f"/usr/bin/{name}")
    assert docker_tasks.host_has_nvidia_gpu()


def test_app_has_git_and_invoke_tab_completion(tmp_path):
    """The app image installs git and bash-completion, writes invoke's completion script where
    bash-completion loads it, and sources bash-completion from /etc/bash.bashrc. The step runs
    here with apt-get stubbed and /etc redirected; the script it writes then completes invoke's
    tasks in a real bash."""
    steps = _interpret(APP_DOCKERFILE)["steps"]
    i = _index(steps, lambda ins: ins.cmd == "RUN" and "bash-completion" in ins.value[0])
    script = steps[i][0].value[0]
    assert re.search(r"apt-get install [^;]*\bbash-completion\b[^;]*\bgit\b", script)
    assert i < _index(steps, lambda ins: ins.cmd == "USER")  # installed as root
    bin_dir, etc = tmp_path / "bin", tmp_path / "etc"
    bin_dir.mkdir()
    etc.mkdir()
    for name, body in (
        ("apt-get", "exit 0"),
        ("git", 'echo "$@" > "$ETC/git-args"'),
        ("invoke", f'exec {sys.executable} -m invoke "$@"'),
    ):
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    script = script.replace("/etc/", f"{etc}/").replace("rm -rf /var/lib/apt/lists/*", "true")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "ETC": str(etc)}
    done = subprocess.run(["/bin/sh", "-c", script], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "/usr/share/bash-completion/bash_completion" in (etc / "bash.bashrc").read_text()
    assert (etc / "git-args").read_text().split() == [
        "config", "--system", "--add", "safe.directory", "/app",
    ]  # fmt: skip
    completion = etc / "bash_completion.d" / "invoke"
    probe = (
        f"source {completion}; complete -p invoke; "
        "COMP_WORDS=(invoke docker.ru); COMP_CWORD=1; _complete_invoke invoke docker.ru; "
        'echo "${COMPREPLY[@]}"'
    )
    shell = subprocess.run(
        ["bash", "-c", probe], cwd=ROOT, env={**env, "PATH": f"{bin_dir}:/usr/bin:/bin"},
        capture_output=True, text=True,
    )  # fmt: skip
    assert "_complete_invoke" in shell.stdout and "docker.run" in shell.stdout, shell

"""Keeps BUILD true: every module of tfq8/, tests/, examples/ and benchmarks/ has a target."""

import glob
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build_targets():
    """Evaluates BUILD (its Starlark subset is valid Python) with recording stubs."""
    targets = []

    def rule(kind):
        def record(**kwargs):
            targets.append((kind, kwargs))
        return record

    def bazel_glob(patterns):
        out = []
        for pattern in patterns:
            out += sorted(os.path.relpath(p, ROOT) for p in
                          glob.glob(os.path.join(ROOT, pattern), recursive=True))
        return out

    scope = {k: rule(k) for k in ("py_library", "py_binary", "py_test", "sh_binary")}
    scope.update(glob=bazel_glob, package=lambda **kw: None)
    with open(os.path.join(ROOT, "BUILD")) as f:
        exec(compile(f.read(), "BUILD", "exec"), scope)  # noqa: S102 - our own BUILD file
    return targets


def test_every_module_belongs_to_a_target():
    covered = {src for _, kw in build_targets() for src in kw.get("srcs", [])}
    modules = set()
    for folder in ("tfq8", "tests", "examples", "benchmarks"):
        for ext in ("py", "sh"):
            modules |= {os.path.relpath(p, ROOT) for p in
                        glob.glob(os.path.join(ROOT, folder, "**", f"*.{ext}"), recursive=True)}
    missing = sorted(modules - covered)
    assert not missing, f"Add these to a target in BUILD: {missing}"
    stale = sorted(src for src in covered if not os.path.exists(os.path.join(ROOT, src)))
    assert not stale, f"BUILD names files that do not exist: {stale}"


def test_every_test_file_is_a_py_test():
    tests = {kw["srcs"][0] for kind, kw in build_targets() if kind == "py_test"}
    on_disk = {os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "tests", "test_*.py"))}
    assert tests == on_disk


def test_target_names_are_unique():
    names = [kw["name"] for _, kw in build_targets()]
    assert len(names) == len(set(names))


@pytest.mark.skipif(not os.path.exists("/usr/bin/bazel"), reason="bazel is not installed")
def test_bazel_query_lists_the_targets(tmp_path):
    import subprocess

    result = subprocess.run(
        ["bazel", "--batch", f"--output_user_root={tmp_path}", "query", "//..."], cwd=ROOT,
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    listed = set(result.stdout.split())
    for _, kw in build_targets():
        assert f"//:{kw['name']}" in listed

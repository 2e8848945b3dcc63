"""ember.atomic: a crash at any point of a publish leaves the old complete content or the new
complete content under the final name (a killed process, not an exception: nothing cleans up)."""

import os
import subprocess
import sys
import textwrap

import pytest

from ember import atomic

# A child process publishes NEW over OLD and dies (os._exit) at the k-th call of the system calls
# a publish makes, as a power cut or kill -9 would stop it there.
_CHILD = textwrap.dedent(
    """
    import importlib.util, os, sys
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("atomic", sys.argv[4])  # without torch: fast
    atomic = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(atomic)
    kind, target, k = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    calls = [0]

    def dying(real):
        def call(*args, **kwargs):
            calls[0] += 1
            if calls[0] == k:
                os._exit(9)
            return real(*args, **kwargs)
        return call

    for name in ("fsync", "replace", "mkdir", "open"):
        setattr(os, name, dying(getattr(os, name)))
    if kind == "file":
        with atomic.atomic_file(target) as f:
            f.write(b"NEW" * 1000)
    else:
        with atomic.atomic_dir(target, replace=True) as tmp:
            for i in range(3):
                (tmp / f"part{i}").write_bytes(b"NEW" * 1000)
    print("done", calls[0])
    """
)


def _publish_dying_at(kind: str, target, k: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", _CHILD, kind, str(target), str(k), atomic.__file__], capture_output=True, text=True
    )


def _content(kind: str, target) -> bytes | None:
    if kind == "file":
        return target.read_bytes() if target.exists() else None
    if not target.exists():
        return None
    return b"".join((target / f"part{i}").read_bytes() for i in range(3))


@pytest.mark.parametrize("kind", ["file", "dir"])
def test_a_crash_at_each_point_leaves_old_or_new(tmp_path, kind):
    old, new = b"OLD" * 1000, (b"NEW" * 1000) * (1 if kind == "file" else 3)
    target = tmp_path / "published"
    seen, k = set(), 1
    while True:
        if kind == "file":
            target.write_bytes(old)
        else:
            target.mkdir(exist_ok=True)
            for i in range(3):
                (target / f"part{i}").write_bytes(b"OLD" * 1000)
        r = _publish_dying_at(kind, target, k)
        content = _content(kind, target)
        old_content = old if kind == "file" else old * 3
        allowed = (old_content, new) if kind == "file" else (old_content, new, None)  # dir: see atomic_dir
        assert content in allowed, (k, content[:20] if content else content)
        seen.add("new" if content == new else "old" if content == old_content else "none")
        if r.returncode == 0:  # ran to the end without reaching the k-th call
            assert content == new
            break
        assert r.returncode == 9, r.stderr
        k += 1
        if kind == "dir" and content is None:  # the window between the two renames: restore the old folder
            (aside,) = tmp_path.glob(".published.tmp-old-*")
            os.replace(aside, target)
    assert k > 4 and {"old", "new"} <= seen, (k, seen)
    # leftovers of the crashed writers never block or leak into the next publish
    if kind == "file":
        atomic.write_bytes(target, b"LAST")
        assert target.read_bytes() == b"LAST"
    else:
        with atomic.atomic_dir(target, replace=True) as tmp:
            (tmp / "only").write_text("x")
        assert [p.name for p in target.iterdir()] == ["only"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["published"]


def test_an_error_keeps_the_old_content_and_no_temporary(tmp_path):
    target = tmp_path / "f.json"
    atomic.write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic.atomic_file(target, "w") as f:
            f.write("partial")
            raise RuntimeError("writer failed")
    assert target.read_text() == '{\n "a": 1\n}\n'
    with pytest.raises(RuntimeError):
        with atomic.atomic_dir(tmp_path / "d") as tmp:
            (tmp / "x").write_text("partial")
            raise RuntimeError("writer failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.json"]


def test_a_folder_is_not_replaced_unless_asked(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep").write_text("mine")
    with pytest.raises(FileExistsError, match="exists and is not an empty folder"):
        with atomic.atomic_dir(tmp_path / "out"):
            pass
    assert (tmp_path / "out" / "keep").read_text() == "mine"
    with atomic.atomic_dir(tmp_path / "empty") as tmp:  # a missing or empty folder is fine
        (tmp / "x").write_text("1")
    assert (tmp_path / "empty" / "x").read_text() == "1"

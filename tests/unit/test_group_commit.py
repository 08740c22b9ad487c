"""Group commit: writers that arrive while a commit is in flight share the next one.

The commit function here is the component's real input (what the SQL store
passes in is its own insert); it blocks the first commit until the other
writers have queued, so the grouping is certain rather than timing-dependent.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest

from conveyor.errors import StoreError
from conveyor.stores.sql_commit import GroupCommit


class Recorder:
    """Commits by appending to ``commits``; the first commit waits for ``release``."""

    def __init__(self, fail_on: object = None, store_down: bool = False) -> None:
        self.commits: list[list[object]] = []
        self.release = threading.Event()
        self.entered = threading.Event()
        self.fail_on = fail_on
        self.store_down = store_down

    def __call__(self, items: Sequence[object]) -> None:
        if not self.commits and not self.entered.is_set():
            self.entered.set()
            self.release.wait(10)
        if self.store_down and len(self.commits) >= 1:
            raise StoreError("database unavailable")
        if self.fail_on in items:
            raise ValueError(f"bad item {self.fail_on}")
        self.commits.append(list(items))


def _run_writers(group: GroupCommit[object], recorder: Recorder, batches: list[list[object]]) -> dict[int, object]:
    """The first batch commits alone and blocks; the others queue behind it, then are released."""
    answers: dict[int, object] = {}

    def writer(i: int) -> None:
        try:
            group.write(batches[i])
            answers[i] = "ok"
        except Exception as e:
            answers[i] = e

    first = threading.Thread(target=writer, args=(0,))
    first.start()
    assert recorder.entered.wait(5)
    rest = [threading.Thread(target=writer, args=(i,)) for i in range(1, len(batches))]
    for t in rest:
        t.start()
    deadline = time.monotonic() + 5
    while len(group._queue) < len(rest) and time.monotonic() < deadline:
        time.sleep(0.001)
    recorder.release.set()
    for t in [first, *rest]:
        t.join(5)
    return answers


def test_writers_queued_behind_a_commit_share_the_next_one() -> None:
    recorder = Recorder()
    group: GroupCommit[object] = GroupCommit(recorder)
    answers = _run_writers(group, recorder, [[0], [1, 2], [3], [4], [5, 6, 7]])
    assert answers == dict.fromkeys(range(5), "ok")
    assert recorder.commits[0] == [0]
    assert len(recorder.commits) == 2
    assert sorted(recorder.commits[1]) == [1, 2, 3, 4, 5, 6, 7]
    assert (group.commits, group.writes) == (2, 5)


def test_one_bad_write_in_a_group_fails_only_its_writer() -> None:
    recorder = Recorder(fail_on=3)
    group: GroupCommit[object] = GroupCommit(recorder)
    answers = _run_writers(group, recorder, [[0], [1, 2], [3], [4]])
    assert answers[0] == answers[1] == answers[3] == "ok"
    assert isinstance(answers[2], ValueError)
    committed = sorted(i for c in recorder.commits for i in c)
    assert committed == [0, 1, 2, 4]


def test_an_unreachable_store_fails_every_writer_of_the_group_at_once() -> None:
    recorder = Recorder(store_down=True)
    group: GroupCommit[object] = GroupCommit(recorder)
    answers = _run_writers(group, recorder, [[0], [1], [2], [3]])
    assert answers[0] == "ok"
    assert all(isinstance(answers[i], StoreError) for i in (1, 2, 3))
    assert recorder.commits == [[0]]


def test_a_lone_writer_commits_at_once_and_sees_its_own_error() -> None:
    recorder = Recorder(fail_on="x")
    recorder.entered.set()  # no first commit held back
    group: GroupCommit[object] = GroupCommit(recorder)
    group.write(["a"])
    with pytest.raises(ValueError, match="bad item x"):
        group.write(["x"])
    group.write(["b"])
    assert recorder.commits == [["a"], ["b"]]

"""The rotation plan and policy, without processes or files."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from safe_rotating._common.units import parse_size
from safe_rotating._engine.plan import (
    Remove,
    Rename,
    RotateCurrent,
    SizePolicy,
    count_backups,
    plan_rollover,
)


def name(n: int) -> str:
    return f"app.log.{n}"


class TestSizePolicy:
    def test_a_record_that_fits_does_not_rotate(self) -> None:
        assert not SizePolicy(100, 3).full(size=60, incoming=40)

    def test_a_record_that_would_cross_the_limit_rotates_first(self) -> None:
        assert SizePolicy(100, 3).full(size=61, incoming=40)

    def test_an_empty_file_takes_any_record_even_one_larger_than_the_limit(self) -> None:
        assert not SizePolicy(100, 3).full(size=0, incoming=500)

    @pytest.mark.parametrize(("max_bytes", "backup_count"), [(0, 5), (100, 0), (0, 0)])
    def test_zero_max_bytes_or_zero_backups_never_rotates(
        self, max_bytes: int, backup_count: int
    ) -> None:
        policy = SizePolicy(max_bytes, backup_count)
        assert not policy.enabled
        assert not policy.full(size=10**9, incoming=10**9)


class TestPlan:
    def test_first_rotation_moves_the_current_file_to_dot_1(self) -> None:
        assert plan_rollover("app.log", 0, 5, name) == [RotateCurrent("app.log", "app.log.1")]

    def test_backups_shift_up_from_the_oldest(self) -> None:
        assert plan_rollover("app.log", 2, 5, name) == [
            Rename("app.log.2", "app.log.3"),
            Rename("app.log.1", "app.log.2"),
            RotateCurrent("app.log", "app.log.1"),
        ]

    def test_the_oldest_backup_is_removed_when_the_count_is_reached(self) -> None:
        assert plan_rollover("app.log", 3, 3, name) == [
            Remove("app.log.3"),
            Rename("app.log.2", "app.log.3"),
            Rename("app.log.1", "app.log.2"),
            RotateCurrent("app.log", "app.log.1"),
        ]

    def test_backups_beyond_a_lowered_count_are_all_removed(self) -> None:
        steps = plan_rollover("app.log", 5, 2, name)
        assert [s for s in steps if isinstance(s, Remove)] == [
            Remove("app.log.5"),
            Remove("app.log.4"),
            Remove("app.log.3"),
            Remove("app.log.2"),
        ]

    def test_plan_size_depends_on_existing_backups_not_on_backup_count(self) -> None:
        assert len(plan_rollover("app.log", 3, 100_000, name)) == 4

    def test_namer_names_every_file(self) -> None:
        steps = plan_rollover("app.log", 1, 5, lambda n: f"app.{n}.log")
        assert steps == [Rename("app.1.log", "app.2.log"), RotateCurrent("app.log", "app.1.log")]

    @pytest.mark.parametrize(("existing", "count"), [(-1, 3), (0, 0)])
    def test_nonsense_input_is_refused(self, existing: int, count: int) -> None:
        with pytest.raises(ValueError, match="must be"):
            plan_rollover("app.log", existing, count, name)


def test_count_backups_probes_only_the_contiguous_run() -> None:
    probed: list[str] = []
    present = {"app.log.1", "app.log.2", "app.log.4"}

    def exists(path: str) -> bool:
        probed.append(path)
        return path in present

    assert count_backups(name, exists) == 2
    assert probed == ["app.log.1", "app.log.2", "app.log.3"]


def apply(files: dict[str, str], steps: list[Rename | Remove | RotateCurrent]) -> None:
    """Run steps on an in-memory directory (name -> content) the way the handler does."""
    for step in steps:
        if isinstance(step, Remove):
            files.pop(step.path, None)
        else:
            assert step.dest not in files, f"plan renames onto existing {step.dest}"
            if step.source in files:
                files[step.dest] = files.pop(step.source)


def test_without_a_current_file_the_plan_is_empty() -> None:
    assert plan_rollover("app.log", 3, 5, name, current_exists=False) == []


@given(
    backup_count=st.integers(1, 6),
    rotations=st.lists(
        st.tuples(st.one_of(st.none(), st.integers(0, 8)), st.booleans()), min_size=1, max_size=25
    ),
)
def test_crash_at_any_step_is_completed_by_the_next_rotation(
    backup_count: int, rotations: list[tuple[int | None, bool]]
) -> None:
    """Files are labelled by their generation. A rotation may crash after any step, and a
    writer may or may not create a new current file before the next one; after one clean
    rotation the numbering is contiguous, newest first, within backupCount, and only the oldest
    files were ever removed."""
    files = {"app.log": "g0"}
    generation = 0
    for crash_after, writer_reopens in [*rotations, (None, True)]:
        before = set(files.values())
        existing = count_backups(name, files.__contains__)
        steps = plan_rollover("app.log", existing, backup_count, name, "app.log" in files)
        apply(files, steps if crash_after is None else steps[:crash_after])
        if (crash_after is None or writer_reopens) and "app.log" not in files:
            generation += 1
            files["app.log"] = f"g{generation}"
        # Nothing disappears except through a planned removal of the oldest backups.
        survivors = set(files.values())
        gone = before - survivors
        assert all(int(g[1:]) < min(int(s[1:]) for s in survivors) for g in gone)
    numbers = sorted(int(k.rsplit(".", 1)[1]) for k in files if k != "app.log")
    assert numbers == list(range(1, len(numbers) + 1)), files
    assert len(numbers) <= backup_count
    ages = [int(files[name(n)][1:]) for n in numbers]
    assert ages == sorted(ages, reverse=True), "backup 1 must be the newest"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("16384", 16384),
        ("16KiB", 16 * 1024),
        ("16k", 16 * 1024),
        ("10MB", 10_000_000),
        ("10MiB", 10 * 1024**2),
        ("1 GiB", 1024**3),
        ("512b", 512),
    ],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "ten", "-5", "1.5MB", "5 XB"])
def test_parse_size_names_the_bad_value(text: str) -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)


# -- the staged set: O(1) rotation, renumbering later ----------------------------------------------
from safe_rotating._engine.staging import IndexState, Slot, from_names, next_move, normal  # noqa: E402


def slot_name(slot: Slot) -> str:
    return f"app.log.{slot.number}" if slot.kind == "n" else f"app.log.pending.{slot.number}"


def rescan(files: dict[str, int], hi: int) -> IndexState:
    """What the next lock holder does after a crash: rebuild the state from the names."""
    numbers = [int(k.split(".")[2]) for k in files if k.count(".") == 2 and k != "app.log"]
    pending = [int(k.split(".")[3]) for k in files if ".pending." in k]
    renames, state = from_names(numbers, pending, hi)
    for source, dest in renames:
        assert slot_name(dest) not in files
        files[slot_name(dest)] = files.pop(slot_name(source))
    return state


def order(files: dict[str, int], state: IndexState) -> list[int]:
    """Generations of the backups, oldest first, as the state orders them."""
    return [files[slot_name(slot)] for slot in state.oldest_first()]


@given(
    keep=st.integers(1, 8),
    script=st.lists(
        st.tuples(st.sampled_from(["rotate", "move", "move", "crash"]), st.integers(0, 3)),
        min_size=1,
        max_size=60,
    ),
)
def test_staged_rotation_keeps_order_and_limits_through_crashes(
    keep: int, script: list[tuple[str, int]]
) -> None:
    """Rotations stage the current file in one rename; renumbering steps interleave with them
    in any order; a process may die between a rename and recording it. At every moment the
    state orders the files by generation, holds at most ``keep`` backups, and only the oldest
    were ever removed; once renumbering finishes, names are the stdlib's."""
    files: dict[str, int] = {}
    state = IndexState()
    generation = 0
    removed: list[int] = []
    for op, n in script:
        if op == "rotate":
            generation += 1
            state, slot = state.rotated()
            assert slot_name(slot) not in files
            files[slot_name(slot)] = generation
            while state.total > keep:
                oldest = state.oldest()
                assert oldest is not None
                removed.append(files.pop(slot_name(oldest)))
                state = state.without_oldest()
        elif op == "move":
            for _ in range(n + 1):
                move = next_move(state)
                if move is None:
                    break
                assert slot_name(move.dest) not in files
                files[slot_name(move.dest)] = files.pop(slot_name(move.source))
                state = move.after
        else:  # a step's rename happened, its record did not: the state is rebuilt from names
            move = next_move(state)
            if move is not None:
                files[slot_name(move.dest)] = files.pop(slot_name(move.source))
            state = rescan(files, state.hi)
        ages = order(files, state)
        assert ages == sorted(ages), (state, files)
        assert len(files) == state.total <= keep
        assert all(r < min(ages, default=generation + 1) for r in removed)
    while (move := next_move(state)) is not None:
        files[slot_name(move.dest)] = files.pop(slot_name(move.source))
        state = move.after
    state = normal(state)
    assert state.at_rest
    assert sorted(files) == sorted(f"app.log.{k}" for k in range(1, len(files) + 1))
    assert [files[f"app.log.{k}"] for k in range(1, len(files) + 1)] == sorted(
        files.values(), reverse=True
    )


def test_a_renumbering_pass_costs_one_rename_per_backup_however_many_rotations() -> None:
    state = IndexState(a=1000, b=1001, c=1000, lo=1, hi=1)
    for _ in range(50):
        state, _slot = state.rotated()
    moves = 0
    while (move := next_move(state)) is not None:
        state = move.after
        moves += 1
    assert moves == 1000 + 50
    assert normal(state) == IndexState(a=1050, b=1051, c=1050, lo=51, hi=51)


def test_names_left_by_hand_deletions_are_compacted_in_order() -> None:
    renames, state = from_names([1, 2, 5, 9, 10], [4, 6], 1)
    assert state == IndexState(a=5, b=6, c=5, lo=4, hi=6)
    assert renames == [
        (Slot("p", 6), Slot("p", 5)),
        (Slot("n", 5), Slot("n", 3)),
        (Slot("n", 9), Slot("n", 4)),
        (Slot("n", 10), Slot("n", 5)),
    ]

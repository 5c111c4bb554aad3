"""Duplicates within a split and overlap with the test split, counted and (by default) removed from training.

A row's input is its ``prompt`` and its target its ``completion``. Two texts are *exact* duplicates when
equal and *normalized* duplicates when equal after case folding and collapsing whitespace. Test rows are
never removed: they are the benchmark. Train and validation rows that share their normalized input with a
test row, or repeat an earlier row of their split (normalized input and target), are what ``data.overlap``
keeps, drops or refuses.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ..util.errors import DataError

POLICIES = ("keep", "drop", "fail")
TRAINING = ("train", "validation")


def normalize(text: str) -> str:
    return " ".join(text.casefold().split())


def _keys(row: Mapping, fold: Callable[[str], str]) -> tuple[str, tuple[str, str]]:
    source, target = fold(row["prompt"]), fold(row["completion"])
    return source, (source, target)


def _same(text: str) -> str:
    return text


def measure(splits: Mapping[str, list[dict]]) -> tuple[dict, dict[str, set[int]]]:
    """The counts for the manifest and, per training split, the indices of the rows to remove."""
    folds = {"exact": _same, "normalized": normalize}
    duplicates, test_overlap = {}, {}
    remove: dict[str, set[int]] = {split: set() for split in TRAINING}
    test = {name: [_keys(row, fold) for row in splits.get("test", [])] for name, fold in folds.items()}
    test_inputs = {name: {key[0] for key in keys} for name, keys in test.items()}
    test_pairs = {name: {key[1] for key in keys} for name, keys in test.items()}
    for split, rows in splits.items():
        duplicates[split] = {}
        for name, fold in folds.items():
            seen: set[tuple[str, str]] = set()
            repeats = 0
            for index, row in enumerate(rows):
                pair = _keys(row, fold)[1]
                if pair in seen:
                    repeats += 1
                    if split in remove and name == "normalized":
                        remove[split].add(index)
                seen.add(pair)
            duplicates[split][name] = repeats
        if split not in TRAINING:
            continue
        counts = {"input": {}, "input_target": {}}
        for name, fold in folds.items():
            keys = [_keys(row, fold) for row in rows]
            counts["input"][name] = sum(source in test_inputs[name] for source, _ in keys)
            counts["input_target"][name] = sum(pair in test_pairs[name] for _, pair in keys)
            if name == "normalized":
                remove[split].update(i for i, (source, _) in enumerate(keys) if source in test_inputs[name])
        test_overlap[split] = counts
    return {"duplicates": duplicates, "test_overlap": test_overlap}, remove


def apply(task: str, splits: dict[str, list[dict]], policy: str) -> dict:
    """Count duplicates and test overlap, act as ``policy`` says, and return the manifest's account."""
    counts, remove = measure(splits)
    flagged = {split: len(remove[split]) for split in TRAINING}
    if policy == "fail" and any(flagged.values()):
        raise DataError(
            f"{task}: {flagged['train']} train and {flagged['validation']} validation rows repeat a row of their split "
            "or share their input with a test row (case and whitespace ignored); remove them from the source or set "
            "data.overlap to drop or keep."
        )
    if policy == "drop":
        for split in TRAINING:
            splits[split] = [row for i, row in enumerate(splits.get(split, [])) if i not in remove[split]]
    dropped = {split: flagged[split] if policy == "drop" else 0 for split in TRAINING}
    return {"policy": policy, **counts, "flagged": flagged, "dropped": dropped, "dropped_total": sum(dropped.values())}

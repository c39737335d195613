"""Speaker-disjoint splits and folds, and seeded caps on clips per speaker or class.

Every `client_id` lands in exactly one test fold (speaker-grouped, class-stratified k-fold) or one
split; the order of clips a cap keeps depends only on the seed and the clip names, so a manifest is
reproducible from `data.seed`.
"""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from acento.config import DataConfig
from acento.corpus.manifest import MAX_FOLDS, SPLITS
from acento.errors import StageError


def _seeded_order(keys: pd.Series, seed: int, salt: str) -> pd.Series:
    """A deterministic pseudo-random rank per key, independent of row order and of other keys."""
    return pd.util.hash_pandas_object(keys.astype(str) + f"|{salt}|{seed}", index=False)


def cap_per_group(frame: pd.DataFrame, group: str, cap: int, seed: int) -> tuple[pd.DataFrame, int]:
    """At most `cap` rows per value of `group` (a seeded, order-independent choice); 0 = no cap.
    Returns the kept rows and how many were dropped."""
    if cap <= 0:
        return frame, 0
    order = frame.assign(_rank=_seeded_order(frame["clip"], seed, group)).sort_values([group, "_rank"])
    kept = order.groupby(group, sort=False).head(cap).drop(columns="_rank")
    return frame.loc[frame.index.isin(kept.index)], len(frame) - len(kept)


def split_speakers(frame: pd.DataFrame, data: DataConfig) -> dict[str, str]:
    """Assigns each speaker (`frame.speaker`) to one split, per class, so each split gets its share
    of the class's clips (`data.split` fractions); returns {speaker: split}.

    Speakers go largest first (ties in seeded random order) to the split furthest below its
    target, so a prolific speaker lands in train and dev/test still get several speakers.
    """
    fractions = {"train": data.split.train, "dev": data.split.dev, "test": data.split.test}
    counts = frame.groupby("speaker").agg(n=("clip", "size"), label=("label", lambda s: s.mode().iloc[0]))
    rng = random.Random(data.seed)
    assignment: dict[str, str] = {}
    for label in sorted(counts["label"].unique()):
        speakers = counts[counts["label"] == label]
        order = sorted(speakers.index)
        rng.shuffle(order)
        order.sort(key=lambda s: -speakers.at[s, "n"])
        total = speakers["n"].sum()
        got = dict.fromkeys(SPLITS, 0)
        members: dict[str, list[str]] = {s: [] for s in SPLITS}
        for spk in order:
            target = max(SPLITS, key=lambda s: (fractions[s] * total - got[s]) / (fractions[s] * total))
            got[target] += speakers.at[spk, "n"]
            members[target].append(spk)
        for split in ("test", "dev"):  # every split gets a speaker when the class has enough of them
            if not members[split] and len(members["train"]) > 1:
                moved = min(members["train"], key=lambda s: speakers.at[s, "n"])
                members["train"].remove(moved)
                members[split].append(moved)
        for split, spks in members.items():
            assignment.update(dict.fromkeys(spks, split))
    return assignment


def assign_folds(frame: pd.DataFrame, data: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    """Speaker-grouped cross-validation of every fold at once: each row's test fold (0 .. data.folds-1)
    and the bitmask of the folds for which it is a dev clip (bit f: dev while fold f is the test fold).

    Both cuts use sklearn's StratifiedGroupKFold (groups = speakers, stratified by class, shuffled
    with data.seed): the outer one gives every speaker exactly one test fold; for each fold f, the
    dev split is carved from the other folds' speakers by the inner one, a share of
    dev / (train + dev) of data.split (StageError naming data.split.dev when that share is less than one
    speaker).  No speaker is in two splits of any fold.  The split of any
    `data.fold` is then `manifest.split_of(...)`, at train time: no fold needs its own manifest or cache.
    """
    labels, speakers = frame["label"].to_numpy(), frame["speaker"].to_numpy()
    n_speakers = frame["speaker"].nunique()
    if n_speakers < data.folds:
        raise StageError(f"data.folds = {data.folds} needs at least {data.folds} speakers; {n_speakers} are left "
                         "after filtering: lower data.folds (0 = one split by data.split)")
    if data.folds > MAX_FOLDS:
        raise StageError(f"data.folds = {data.folds}: at most {MAX_FOLDS} folds; lower data.folds")
    outer = StratifiedGroupKFold(n_splits=data.folds, shuffle=True, random_state=data.seed)
    fold = np.full(len(frame), -1, dtype=np.int64)
    dev_folds = np.zeros(len(frame), dtype=np.int64)
    dev_parts = max(2, round((data.split.train + data.split.dev) / data.split.dev))
    for f, (rest, test) in enumerate(outer.split(frame, labels, speakers)):
        fold[test] = f
        if len(np.unique(speakers[rest])) < dev_parts:
            raise StageError(f"data.split.dev = {data.split.dev:g} makes each fold's dev split 1/{dev_parts} of its "
                             f"other speakers (dev / (train + dev)), but fold {f} leaves "
                             f"{len(np.unique(speakers[rest]))} of them; raise data.split.dev")
        inner = StratifiedGroupKFold(n_splits=dev_parts, shuffle=True, random_state=data.seed)
        dev = rest[next(inner.split(rest, labels[rest], speakers[rest]))[1]]
        dev_folds[dev] |= np.int64(1) << np.int64(f)
    return fold, dev_folds


def split_clips(frame: pd.DataFrame, data: DataConfig) -> pd.Series:
    """The original study's random clip split (speakers leak across splits): for comparison only."""
    rank = _seeded_order(frame["clip"], data.seed, "clip-split")
    pos = rank.groupby(frame["label"].values).rank(method="first").values - 1
    size = frame.groupby("label")["clip"].transform("size").values
    cut_train, cut_dev = data.split.train * size, (data.split.train + data.split.dev) * size
    return pd.Series(["train" if p < t else "dev" if p < d else "test" for p, t, d in
                      zip(pos, cut_train, cut_dev)], index=frame.index)

"""Micro-segment discovery: cluster profiles on numeric traits and say each cluster as a segment rule.

Features are trait values: numbers, and booleans as 0/1. Profiles missing a feature (or holding null) are
left out and counted as ``excluded``; a feature with a value of another type anywhere is refused. Features
are standardised, clustered by k-means with a fixed seed (the same data gives the same answer), and ``k``
is either given or the one of 2..8 with the best silhouette score on a sample. Each cluster is then
described by a shallow decision tree (one cluster against the rest, on the unscaled values) whose paths to
the cluster's leaves become a CEL rule over ``traits``; thresholds are rounded to the shortest decimal that
splits the data the same way. Precision and recall are measured by evaluating that very rule (its rounded
thresholds included) on the profiles used.

>>> rule_of([[("orders", ">", 3.0), ("total-spend", "<=", 120.5)]], {"orders", "total-spend"}, set())
'has(traits.orders) && "total-spend" in traits && traits.orders > 3.0 && traits["total-spend"] <= 120.5'
>>> shortest_between(2.0, 3.0), shortest_between(0.12, 0.1275)
(2.0, 0.12)
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import silhouette_score
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier

from kairos.errors import ValidationError

if TYPE_CHECKING:
    from kairos.runtime import Kairos

__all__ = ["K_RANGE", "MAX_FEATURES", "check_request", "discover", "live_traits", "rule_of", "shortest_between"]

K_RANGE = (2, 20)  # what a caller may ask for
AUTO_K = range(2, 9)  # what the silhouette criterion tries
MAX_FEATURES = 20
MIN_PROFILES = 10
SAMPLE = 4000  # profiles the silhouette is computed on (it is quadratic)
MINI_BATCH_ABOVE = 20_000  # profiles beyond which MiniBatchKMeans replaces KMeans
SEED = 0
TREE_DEPTH = 3

Condition = tuple[str, str, float]  # (feature, "<=" | ">", threshold)
Matrix = npt.NDArray[np.float64]

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_RESERVED = {
    *("as", "break", "const", "continue", "else", "false", "for", "function", "if", "import", "in", "let"),
    *("loop", "package", "namespace", "null", "return", "true", "var", "void", "while"),
}


def check_request(features: Any, k: Any) -> tuple[list[str], int | None]:
    """The request's features and k, or a :class:`ValidationError` naming the field."""
    if not isinstance(features, list) or not features:
        raise ValidationError(
            "features must be a non-empty list of trait names", code="invalid_features", field="features"
        )
    if len(features) > MAX_FEATURES:
        raise ValidationError(f"at most {MAX_FEATURES} features", code="invalid_features", field="features")
    for i, name in enumerate(features):
        if not isinstance(name, str) or not 1 <= len(name) <= 200 or any(ord(c) < 32 for c in name):
            raise ValidationError(
                "each feature must be a trait name of 1 to 200 characters, without control characters",
                code="invalid_features",
                field=f"features[{i}]",
            )
    if len(set(features)) != len(features):
        raise ValidationError("features must not repeat", code="invalid_features", field="features")
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or not K_RANGE[0] <= k <= K_RANGE[1]):
        raise ValidationError(
            f"k must be null or an integer from {K_RANGE[0]} to {K_RANGE[1]}", code="invalid_k", field="k"
        )
    return features, k


def _matrix(rows: Iterable[Mapping[str, Any]], features: Sequence[str]) -> tuple[Matrix, int, set[str]]:
    """The feature matrix of the profiles holding every feature, how many were excluded, and which features
    are booleans (every value seen was true or false)."""
    data: list[list[float]] = []
    excluded = 0
    seen = dict.fromkeys(features, False)
    numeric = dict.fromkeys(features, False)
    for traits in rows:
        row: list[float] = []
        lacking = False
        for name in features:
            value = traits.get(name)
            if value is None:
                lacking = True
                continue
            seen[name] = True  # even on a profile left out: "no profile has it" must be true when said
            if lacking:
                continue
            if isinstance(value, bool):
                row.append(float(value))
            elif isinstance(value, int | float) and abs(value) < 1e300 and math.isfinite(value):  # a huge int first
                numeric[name] = True
                row.append(float(value))
            else:
                raise ValidationError(
                    f"feature {name!r} holds a {type(value).__name__} value; features must be numbers or booleans",
                    code="non_numeric_feature",
                    field="features",
                )
        if len(row) == len(features):
            data.append(row)
        else:
            excluded += 1
    for name, found in seen.items():
        if not found:
            raise ValidationError(f"no profile has the trait {name!r}", code="unknown_feature", field="features")
    if not data and features:
        raise ValidationError(
            "no profile has every one of the features together", code="unknown_feature", field="features"
        )
    booleans = {name for name in features if not numeric[name]}
    return np.asarray(data, dtype=np.float64).reshape(len(data), len(features)), excluded, booleans


def live_traits(kairos: Kairos, page: int = 2000) -> Iterable[Mapping[str, Any]]:
    """The traits (from every projection) of each live profile, in key order, read a page at a time."""
    after: int | None = None
    while True:
        rows = kairos.store.state.list_profiles({}, page, after)
        for row in rows:
            yield kairos.codec.traits(kairos.codec.state(row))
        if len(rows) < page:
            return
        after = rows[-1].pk


def _kmeans(k: int, n: int) -> KMeans | MiniBatchKMeans:
    if n > MINI_BATCH_ABOVE:
        return MiniBatchKMeans(n_clusters=k, random_state=SEED, n_init=3, batch_size=4096)
    return KMeans(n_clusters=k, random_state=SEED, n_init=4)


def _choose_k(scaled: Matrix, distinct: int) -> tuple[int, dict[str, float]]:
    rng = np.random.default_rng(SEED)
    sample = scaled if len(scaled) <= SAMPLE else scaled[np.sort(rng.choice(len(scaled), SAMPLE, replace=False))]
    scores: dict[str, float] = {}
    for k in AUTO_K:
        if k > distinct or k >= len(sample):
            break
        labels = _kmeans(k, len(sample)).fit_predict(sample)
        if len(set(labels.tolist())) < 2:
            break
        scores[str(k)] = round(float(silhouette_score(sample, labels)), 4)
    if not scores:
        raise ValidationError(
            "the profiles do not differ enough on these features to form clusters",
            code="too_few_profiles",
            field="features",
        )
    best = max(scores, key=lambda key: (scores[key], -int(key)))  # ties: the fewer clusters
    return int(best), scores


def shortest_between(lo: float, hi: float) -> float:
    """The number with the fewest decimals in ``[lo, hi)``: ``x <= t`` splits the data as any value there."""
    for decimals in range(0, 10):
        scale = 10.0**decimals
        candidate = math.ceil(lo * scale) / scale
        if lo <= candidate < hi:
            return candidate
    return lo


def _paths(tree: DecisionTreeClassifier, features: Sequence[str], x: Matrix) -> list[list[Condition]]:
    """Conditions of each path to a leaf the tree predicts as the cluster, thresholds rounded."""
    t = tree.tree_
    positive = list(tree.classes_).index(True) if True in tree.classes_ else None
    out: list[list[Condition]] = []

    def verdict(node: int) -> bool | None:
        """True/False when every leaf under ``node`` says so, None when they differ."""
        left, right = int(t.children_left[node]), int(t.children_right[node])
        if left == right:
            return positive is not None and int(np.argmax(t.value[node][0])) == positive
        a, b = verdict(left), verdict(right)
        return a if a == b else None

    def walk(node: int, path: list[Condition]) -> None:
        left, right = int(t.children_left[node]), int(t.children_right[node])
        decided = verdict(node)
        if decided is not None:  # a leaf, or a split whose sides agree: no condition needed below
            if decided:
                out.append(path)
            return
        f = int(t.feature[node])
        threshold = float(t.threshold[node])
        column = x[:, f]
        below, above = column[column <= threshold], column[column > threshold]
        cut = shortest_between(float(below.max()), float(above.min())) if len(below) and len(above) else threshold
        walk(left, [*path, (features[f], "<=", cut)])
        walk(right, [*path, (features[f], ">", cut)])

    walk(0, [])
    return [_tighten(p) for p in out]


def _tighten(path: list[Condition]) -> list[Condition]:
    """One lower and one upper bound per feature: ``x > 1 && x > 3`` is ``x > 3``."""
    upper: dict[str, float] = {}
    lower: dict[str, float] = {}
    for name, op, value in path:
        if op == "<=":
            upper[name] = min(value, upper.get(name, math.inf))
        else:
            lower[name] = max(value, lower.get(name, -math.inf))
    out: list[Condition] = [(n, ">", v) for n, v in lower.items()]
    out += [(n, "<=", v) for n, v in upper.items()]
    return sorted(out, key=lambda c: (c[0], c[1] == "<="))


def _ref(name: str) -> str:
    if _IDENT.fullmatch(name) and name not in _RESERVED:
        return f"traits.{name}"
    return f"traits[{json.dumps(name)}]"


def _guard(name: str) -> str:
    if _IDENT.fullmatch(name) and name not in _RESERVED:
        return f"has(traits.{name})"
    return f"{json.dumps(name)} in traits"


def _condition(name: str, op: str, value: float, booleans: set[str]) -> str:
    if name in booleans:  # 0/1: a threshold between them is a truth value
        return f"{_ref(name)} == {'true' if op == '>' else 'false'}"
    return f"{_ref(name)} {op} {value!r}"


def rule_of(paths: list[list[Condition]], features: set[str], booleans: set[str]) -> str:
    """The CEL rule matching any of ``paths``; keys are guarded so a profile missing one does not match."""
    if not paths:
        return "false"
    if any(not p for p in paths):
        return " && ".join(_guard(f) for f in sorted(features)) or "true"
    texts = []
    for path in paths:
        used = sorted({name for name, _, _ in path})
        terms = [_guard(n) for n in used] + [_condition(n, op, v, booleans) for n, op, v in path]
        texts.append(" && ".join(terms))
    return texts[0] if len(texts) == 1 else " || ".join(f"({t})" for t in texts)


def _matches(paths: list[list[Condition]], x: Matrix, index: Mapping[str, int]) -> npt.NDArray[np.bool_]:
    """The rule's predicate on the matrix: every profile here holds every feature, so the guards are true."""
    out = np.zeros(len(x), dtype=bool)
    for path in paths:
        hit = np.ones(len(x), dtype=bool)
        for name, op, value in path:
            column = x[:, index[name]]
            hit &= column <= value if op == "<=" else column > value
        out |= hit
    return out


def discover(rows: Iterable[Mapping[str, Any]], features: Sequence[str], k: int | None) -> dict[str, Any]:
    """Clusters of the profiles whose traits are ``rows``; see the module docstring for the method."""
    x, excluded, booleans = _matrix(rows, features)
    n = len(x)
    distinct = len(np.unique(x, axis=0)) if n else 0
    needed = max(MIN_PROFILES, 2 * (k or 2))
    if n < needed or distinct < (k or 2):
        raise ValidationError(
            f"{n} profiles hold every feature ({distinct} distinct); clustering needs at least {needed}, "
            f"with at least {k or 2} distinct",
            code="too_few_profiles",
            field="features",
        )
    scaled = StandardScaler().fit_transform(x)
    answer: dict[str, Any] = {"features": list(features)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # duplicate points: fewer distinct centres is fine
        if k is None:
            k, scores = _choose_k(scaled, distinct)
            answer.update(k=k, k_chosen_by="silhouette", silhouette=scores)
        else:
            answer.update(k=k, k_chosen_by="given")
        labels = _kmeans(k, n).fit_predict(scaled)
    # Clusters by size, largest first; equal sizes by their first profile: the same data, the same order.
    ids, first, sizes = np.unique(labels, return_index=True, return_counts=True)
    order = sorted(range(len(ids)), key=lambda i: (-int(sizes[i]), int(first[i])))
    index = {name: i for i, name in enumerate(features)}
    clusters = []
    for i in order:
        member = labels == ids[i]
        tree = DecisionTreeClassifier(max_depth=TREE_DEPTH, random_state=SEED, class_weight="balanced")
        tree.fit(x, member)
        paths = _paths(tree, features, x)
        hit = _matches(paths, x, index)
        true_pos = int(np.sum(hit & member))
        centroid = x[member].mean(axis=0)
        clusters.append(
            {
                "size": int(sizes[i]),
                "share": round(int(sizes[i]) / n, 4),
                "centroid": {name: round(float(centroid[j]), 4) for j, name in enumerate(features)},
                "rule": rule_of(paths, set(features), booleans),
                "precision": round(true_pos / int(np.sum(hit)), 4) if hit.any() else 0.0,
                "recall": round(true_pos / int(sizes[i]), 4),
            }
        )
    answer.update(profiles=n, excluded=excluded, clusters=clusters)
    return answer

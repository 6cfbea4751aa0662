"""Compare CEL runtimes for segment rules: compile and evaluation time per rule.

    python bench/cel_compare.py [--repeats 5] [--evals 20000]

Libraries (each skipped with a message when not installed; only the first is a Kairos dependency):

- ``cel-expr-python`` (import ``cel_expr_python``): Google's binding of cel-cpp. Type-checks at compile.
- ``common-expression-language`` (import ``cel``): cel-rust. Parses only; no type check.
- ``cel-python`` (import ``celpy``): pure Python (lark parser).

Each figure is the median over ``--repeats`` runs, with the spread (min-max) beside it. Evaluation uses each
library's cheapest documented path with the variables converted once (an Activation for cel-cpp, CEL values
for celpy); cel-cpp is also shown given a plain dict per call.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import statistics
import time
from collections.abc import Callable
from typing import Any

RULES = {
    "plan+ltv": 'traits.plan == "pro" && traits.ltv >= 1000.0',
    "segment|country": '"vip" in segments || (has(traits.country) && traits.country in ["NO", "SE", "DK"])',
    "exists": 'traits.tags.exists(t, t.startsWith("beta")) && traits.orders > 3',
}
DATA: dict[str, Any] = {
    "traits": {
        "plan": "pro",
        "ltv": 1200,
        "country": "SE",
        "tags": ["alpha", "beta-tester", "newsletter"],
        "orders": 5,
        "email": "a@example.com",
        "name": "Ada",
        "age": 36,
        "city": "Malmö",
        "referrer": "ads",
    },
    "segments": ["new", "engaged"],
}


def _optional(name: str) -> Any | None:
    try:
        return importlib.import_module(name)
    except ImportError:
        print(f"skip {name}: not installed")
        return None


def _per_call_us(fn: Callable[[], Any], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


class Library:
    name = ""
    offers = ""

    def compile(self, source: str) -> Any:
        raise NotImplementedError

    def evaluators(self, program: Any) -> dict[str, Callable[[], Any]]:
        raise NotImplementedError


class CelCpp(Library):
    name = "cel-expr-python (cel-cpp)"
    offers = "type check at save; error line:column; AST via serialize() (CheckedExpr) for static references"

    def __init__(self, module: Any) -> None:
        cel = module
        t = cel.Type
        self.env = cel.NewEnv(variables={"traits": t.Map(t.STRING, t.DYN), "segments": t.List(t.STRING)})
        self.activation = self.env.Activation(DATA)

    def compile(self, source: str) -> Any:
        return self.env.compile(source)

    def evaluators(self, program: Any) -> dict[str, Callable[[], Any]]:
        return {"": lambda: program.eval(self.activation).value(), " (dict per call)": lambda: program.eval(data=DATA)}


class CelRust(Library):
    name = "common-expression-language (cel-rust)"
    offers = "no type check (parse errors only, line:column); Program.variables()/references() for static names"

    def __init__(self, module: Any) -> None:
        self.cel = module

    def compile(self, source: str) -> Any:
        return self.cel.compile(source)

    def evaluators(self, program: Any) -> dict[str, Callable[[], Any]]:
        return {"": lambda: program.execute(DATA)}


class CelPy(Library):
    name = "cel-python (celpy, pure Python)"
    offers = "no static check of names/overloads; parse errors with a caret; int vs double compare is an error"

    def __init__(self, module: Any) -> None:
        self.celpy = module
        self.env = module.Environment()
        self.activation = {k: module.json_to_cel(v) for k, v in DATA.items()}

    def compile(self, source: str) -> Any:
        return self.env.program(self.env.compile(source))

    def evaluators(self, program: Any) -> dict[str, Callable[[], Any]]:
        return {"": lambda: program.evaluate(self.activation)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--evals", type=int, default=20_000)
    parser.add_argument("--compiles", type=int, default=300)
    args = parser.parse_args()

    libraries: list[Library] = []
    for module_name, cls in (("cel_expr_python.cel", CelCpp), ("cel", CelRust), ("celpy", CelPy)):
        module = _optional(module_name)
        if module is not None:
            libraries.append(cls(module))

    rows: list[tuple[str, str, str, list[float]]] = []
    for lib in libraries:
        for rule, source in RULES.items():
            program = lib.compile(source)
            try:
                for fn in lib.evaluators(program).values():
                    fn()  # warm up, and find a library that cannot run the rule
            except Exception as e:
                print(f"{lib.name} cannot evaluate {rule!r}: {str(e).splitlines()[0][:100]}")
                continue
            compile_n = max(args.compiles // (100 if isinstance(lib, CelPy) else 1), 3)
            eval_n = max(args.evals // (100 if isinstance(lib, CelPy) else 1), 100)
            compile_once = functools.partial(lib.compile, source)
            samples = [_per_call_us(compile_once, compile_n) for _ in range(args.repeats)]
            rows.append((lib.name, rule, "compile", samples))
            for label, fn in lib.evaluators(program).items():
                rows.append((lib.name, rule, "eval" + label, [_per_call_us(fn, eval_n) for _ in range(args.repeats)]))

    best: dict[tuple[str, str], float] = {}
    for _, rule, what, samples in rows:
        key = (rule, what.split(" ")[0])
        best[key] = min(best.get(key, float("inf")), statistics.median(samples))
    print(f"{'library':40} {'rule':16} {'what':22} {'median µs':>10} {'spread':>17} {'x fastest':>9}")
    for lib_name, rule, what, samples in rows:
        median = statistics.median(samples)
        ratio = median / best[(rule, what.split(" ")[0])]
        spread = f"{min(samples):.2f}-{max(samples):.2f}"
        print(f"{lib_name:40} {rule:16} {what:22} {median:10.2f} {spread:>17} {ratio:9.1f}")
    print()
    for lib in libraries:
        print(f"{lib.name}: {lib.offers}")


if __name__ == "__main__":
    main()

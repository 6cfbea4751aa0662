"""``kairos microsegments discover``: the clusters of ``POST /v1/microsegments:discover``, as a table."""

from __future__ import annotations

from typing import Annotated

import typer

from kairos.cli._common import Table, console, open_kairos, print_json
from kairos.segments.discover import K_RANGE, check_request, discover, live_traits

__all__ = ["microsegments"]

microsegments = typer.Typer(help="Find micro-segments in the profiles' traits.", no_args_is_help=True)


@microsegments.command("discover")
def discover_(
    features: Annotated[str, typer.Option(help="Comma-separated numeric or boolean trait names, e.g. orders,spend.")],
    k: Annotated[
        int | None,
        typer.Option(min=K_RANGE[0], max=K_RANGE[1], help="Number of clusters (default: best silhouette of 2..8)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Cluster live profiles on traits; print each cluster's size, centre and a CEL rule that finds it."""
    with open_kairos(as_json) as kairos:
        names, k = check_request([f.strip() for f in features.split(",")], k)
        answer = discover(live_traits(kairos), names, k)
    if as_json:
        print_json(answer)
        return
    how = "given" if answer["k_chosen_by"] == "given" else "best silhouette"
    console.print(
        f"{answer['k']} clusters ({how}) of {answer['profiles']} profiles; "
        f"{answer['excluded']} excluded for missing a feature",
        highlight=False,
    )
    table = Table("#", "size", "share", "centroid", "rule", "precision", "recall")
    for i, c in enumerate(answer["clusters"], start=1):
        centroid = ", ".join(f"{name}={value:g}" for name, value in c["centroid"].items())
        table.add_row(
            str(i),
            str(c["size"]),
            f"{c['share']:.1%}",
            centroid,
            c["rule"],
            f"{c['precision']:.2f}",
            f"{c['recall']:.2f}",
        )
    console.print(table)

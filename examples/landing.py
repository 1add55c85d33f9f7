"""Data that lands from outside: an external asset with an observe function, metadata values and hooks.

    raw_orders (external, observed) ──> clean_orders ──> revenue_by_region ──(success hook)──> announce

Another system drops `raw_orders.csv` into ./.rivers-demo/landing/ (this module stands in for it by
writing a sample file when there is none). rivers never computes `raw_orders`: it loads the file through
`LandingCsv`, and `repo.observe()` calls its observe function, which reports how many rows landed and a
data version that changes with the content. `rivers materialize examples.landing:repo` computes the rest;
`python -m examples.landing` observes first, then materializes.
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path
from typing import Any

from obstore.store import LocalStore

import rivers as rs

DATA_DIR = Path(".rivers-demo") / "landing"
SAMPLE = """order_id,region,amount
1,north,12.50
2,south,8.00
3,north,not-a-number
4,east,30.25
5,south,4.75
"""


def land_sample_file() -> Path:
    """What the outside system does: put a CSV file where rivers expects it."""
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    path = DATA_DIR / "raw_orders.csv"
    if not path.exists():
        path.write_text(SAMPLE)
    return path


class LandingCsv(rs.BaseIOHandler):
    """Loads `<directory>/<asset>.csv` as a list of rows; the files belong to another system."""

    directory: str = str(DATA_DIR)

    def handle_output(self, context: rs.OutputContext, obj: Any) -> None:
        raise NotImplementedError(f"'{context.asset_name}' lands from outside; rivers never writes it")

    def load_input(self, context: rs.InputContext) -> list[dict[str, str]]:
        with open(Path(self.directory) / f"{context.asset_name}.csv", newline="") as f:
            return list(csv.DictReader(f))


@rs.Asset.external(io_handler=LandingCsv(), tags=["landing"], kinds="csv")
def raw_orders(context: rs.AssetExecutionContext) -> rs.Observation:
    """Observed, never computed: the rows that landed and a version of their content."""
    data = (DATA_DIR / "raw_orders.csv").read_bytes()
    context.add_output_metadata({"file": rs.MetadataValue.text("raw_orders.csv")})
    return rs.Observation(
        metadata={"rows": rs.MetadataValue.int(data.count(b"\n") - 1), "bytes": rs.MetadataValue.int(len(data))},
        data_version=hashlib.sha256(data).hexdigest()[:12],
    )


@rs.Hook.success(name="announce")
def announce(hc: rs.HookContext) -> None:
    print(f"{hc.asset_name} is ready: {hc.output}")


HANDLER = rs.PickleIOHandler(LocalStore(str(DATA_DIR), mkdir=True))


@rs.Asset(io_handler=HANDLER)
def clean_orders(context: rs.AssetExecutionContext, raw_orders: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Rows with a numeric amount; the others are counted and dropped."""
    clean: list[dict[str, Any]] = []
    for row in raw_orders:
        try:
            clean.append({"region": row["region"], "amount": float(row["amount"])})
        except ValueError:
            context.log.warning("dropping order %s: amount %r", row["order_id"], row["amount"])
    context.add_output_metadata({"kept": rs.MetadataValue.int(len(clean)),
                                 "dropped": rs.MetadataValue.int(len(raw_orders) - len(clean))})
    return clean


@rs.Asset(io_handler=HANDLER, hooks=[announce])
def revenue_by_region(clean_orders: list[dict[str, Any]]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for row in clean_orders:
        totals[row["region"]] = round(totals.get(row["region"], 0.0) + row["amount"], 2)
    return dict(sorted(totals.items()))


land_sample_file()
repo = rs.CodeRepository(assets=[raw_orders, clean_orders, revenue_by_region])

if __name__ == "__main__":
    observed = repo.observe().step_results["raw_orders"].outputs[0]
    print("observed raw_orders:", {key: value.raw_value() for key, value in observed.metadata.items()})
    print(repo.materialize().materialized_assets)

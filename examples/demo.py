"""A small shop's daily revenue report, end to end, with nothing to start (no Redis, no cluster).

    raw_orders ──> clean_orders ──┐
                                  ├──> enriched_orders ──> daily_revenue ──> revenue_report
    raw_customers ─> clean_customers ┘          │
                                                └──> customer_stats (multi-asset: top_customers, country_totals)
    check_report (a task) runs after revenue_report.

Values are pickled under ./.rivers-demo/ so that you can look at them (or load them with
`repo.load_node("daily_revenue")`) after the run. Run it with `rivers materialize examples.demo:repo`;
after one full run, `--job reports` recomputes only the report, loading its inputs from those files.
"""

from __future__ import annotations

import datetime as dt
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

from obstore.store import LocalStore
from pydantic import BaseModel

import rivers as rs

DATA_DIR = Path(".rivers-demo")
Row = dict[str, Any]


class ReportConfig(BaseModel):
    """Run config of `revenue_report`: `{"assets": {"revenue_report": {"config": {"currency": "USD"}}}}`."""

    currency: str = "EUR"
    top_days: int = 3


class ExchangeRates(rs.Resource):
    """A resource: fixed rates here; a real one would call an API in `setup()`."""

    rates: dict[str, float] = {"EUR": 1.0, "USD": 1.08, "GBP": 0.86}

    def convert(self, amount_eur: float, currency: str) -> float:
        return round(amount_eur * self.rates[currency], 2)


# -- sources -------------------------------------------------------------------------------------
@rs.Asset(group="raw", kinds="python")
def raw_orders() -> list[Row]:
    """Pretend extract: a week of orders, a few of them broken."""
    rng = random.Random(7)
    start = dt.date(2024, 3, 1)
    orders: list[Row] = []
    for order_id in range(1, 201):
        orders.append({
            "order_id": order_id,
            "customer_id": rng.randint(1, 20),
            "day": (start + dt.timedelta(days=rng.randint(0, 6))).isoformat(),
            "amount": round(rng.uniform(5, 250), 2) if order_id % 37 else None,  # some rows lack an amount
        })
    return orders


@rs.Asset(group="raw", kinds="python")
def raw_customers() -> list[Row]:
    countries = ["DE", "FR", "NL", "IT", "ES"]
    return [{"customer_id": i, "name": f"customer-{i:02d}", "country": countries[i % 5]} for i in range(1, 21)]


# -- cleaning ------------------------------------------------------------------------------------
@rs.Asset(group="clean")
def clean_orders(context: rs.AssetExecutionContext, raw_orders: list[Row]) -> list[Row]:
    kept = [order for order in raw_orders if order["amount"] is not None]
    context.log.info("dropped %d orders without an amount", len(raw_orders) - len(kept))
    context.add_output_metadata({"rows": len(kept), "dropped": len(raw_orders) - len(kept)})
    return kept


@rs.Asset(group="clean")
def clean_customers(raw_customers: list[Row]) -> dict[int, Row]:
    return {row["customer_id"]: row for row in raw_customers}


@rs.Asset(group="clean")
def enriched_orders(clean_orders: list[Row], clean_customers: dict[int, Row]) -> list[Row]:
    """Orders joined with their customer."""
    return [{**order, **clean_customers[order["customer_id"]]} for order in clean_orders]


# -- marts ---------------------------------------------------------------------------------------
@rs.Asset(group="marts")
def daily_revenue(enriched_orders: list[Row]) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for order in enriched_orders:
        totals[order["day"]] += order["amount"]
    return {day: round(total, 2) for day, total in sorted(totals.items())}


@rs.Asset.from_multi(
    output_defs=[rs.AssetDef("top_customers"), rs.AssetDef("country_totals")],
    name="customer_stats",
    group="marts",
)
def customer_stats(enriched_orders: list[Row]) -> dict[str, Any]:
    """One pass over the orders, two assets."""
    by_customer: dict[str, float] = defaultdict(float)
    by_country: dict[str, float] = defaultdict(float)
    for order in enriched_orders:
        by_customer[order["name"]] += order["amount"]
        by_country[order["country"]] += order["amount"]
    top = sorted(by_customer.items(), key=lambda item: item[1], reverse=True)[:5]
    return {
        "top_customers": [(name, round(total, 2)) for name, total in top],
        "country_totals": {country: round(total, 2) for country, total in sorted(by_country.items())},
    }


@rs.Asset(group="reports")
def revenue_report(
    context: rs.AssetExecutionContext[ReportConfig],
    daily_revenue: dict[str, float],
    top_customers: list[tuple[str, float]],
    exchange_rates: ExchangeRates,
) -> str:
    """A plain-text report in the configured currency."""
    cfg = context.config
    total = exchange_rates.convert(sum(daily_revenue.values()), cfg.currency)
    best = sorted(daily_revenue.items(), key=lambda item: item[1], reverse=True)[: cfg.top_days]
    lines = [f"Revenue {min(daily_revenue)} .. {max(daily_revenue)}: {total:.2f} {cfg.currency}"]
    lines += [f"  best day {day}: {exchange_rates.convert(v, cfg.currency):.2f} {cfg.currency}" for day, v in best]
    lines += [f"  top customer {name}: {exchange_rates.convert(v, cfg.currency):.2f}" for name, v in top_customers[:3]]
    context.add_output_metadata({"currency": cfg.currency, "total": total})
    return "\n".join(lines)


@rs.Task
def check_report(revenue_report: str) -> int:
    """A task: checks the report and returns its line count (no asset is produced)."""
    if "Revenue" not in revenue_report:
        raise ValueError("revenue report has no headline")
    return len(revenue_report.splitlines())


repo = rs.CodeRepository(
    assets=[raw_orders, raw_customers, clean_orders, clean_customers, enriched_orders, daily_revenue,
            customer_stats, revenue_report],
    tasks=[check_report],
    jobs=[rs.Job("reports", [daily_revenue, revenue_report], allow_incomplete_deps=True)],
    resources={"exchange_rates": ExchangeRates()},
    # Files, not process memory: so the default executor (parallel) can run every step in its worker processes.
    default_io_handler=rs.PickleIOHandler(LocalStore(str(DATA_DIR.resolve()), mkdir=True)),
)


if __name__ == "__main__":  # `python -m examples.demo`: show the report of the last run
    print(repo.load_node("revenue_report"))

"""Graph assets and fan-out: word statistics over a handful of documents.

    documents ──> word_stats (graph) ──────────────────────────────────> summary
                    split_into_chunks ─map─> count_words xN ─collect─> merge_counts

`word_stats` is one asset made of tasks: its internal steps are `word_stats/split_into_chunks`,
one `word_stats/count_words__<key>` per chunk (keys come from `DynamicOutput`), the collect step
`word_stats/count_words__collect` and `word_stats/merge_counts`, whose value is the graph's value.
Run it with `rivers materialize examples.fanout:repo`; values land under ./.rivers-demo/fanout/.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from obstore.store import LocalStore

import rivers as rs

STORE = LocalStore(str(Path(".rivers-demo") / "fanout"), mkdir=True)
HANDLER = rs.PickleIOHandler(STORE)

TEXTS = {
    "river": "A river flows to the sea; the sea does not flow back to the river.",
    "queue": "A queue hands work to workers; workers take work from the queue and report back.",
    "asset": "An asset is data worth keeping: a table, a file, a model. Assets depend on assets.",
}


@rs.Asset(io_handler=HANDLER)
def documents() -> dict[str, str]:
    return TEXTS


@rs.Task
def split_into_chunks(docs: dict[str, str]) -> list[rs.DynamicOutput]:
    """One chunk per document, keyed by its name (the instance names use the keys)."""
    return [rs.DynamicOutput(name, text) for name, text in sorted(docs.items())]


@rs.Task
def count_words(text: str) -> dict[str, int]:
    return dict(Counter(re.findall(r"[a-z]+", text.lower())))


@rs.Task
def merge_counts(counts: list[dict[str, int]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for count in counts:
        total.update(count)
    return dict(total.most_common())


@rs.Asset.from_graph(io_handler=HANDLER, node_io_handler=HANDLER)
def word_stats(documents: dict[str, str]) -> dict[str, int]:
    chunks = split_into_chunks(documents)
    return merge_counts(chunks.map(count_words, max_concurrency=2).collect())


@rs.Asset(io_handler=HANDLER)
def summary(context: rs.AssetExecutionContext, word_stats: dict[str, int]) -> str:
    top = ", ".join(f"{word} ({n})" for word, n in list(word_stats.items())[:5])
    context.add_output_metadata({"distinct_words": len(word_stats)})
    return f"top words: {top}"


repo = rs.CodeRepository(assets=[documents, word_stats, summary])

if __name__ == "__main__":
    result = repo.materialize()
    print(result.materialized_assets)
    print(repo.load_node("summary"))

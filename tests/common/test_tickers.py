"""Sharding the ticker list: parallel workers together cover every ticker exactly once."""

from __future__ import annotations

import argparse
import random

import pytest

from common.tickers import parse_shard, shard_tickers

#: The snapshot's seven tickers plus more symbols of Yahoo's syntax.
TICKERS = [
    "PETR4.SA", "VALE3.SA", "BBAS3.SA", "CMIG4.SA", "AAPL", "MSFT", "SPY",
    "BRK-B", "^BVSP", "BRL=X", "ITUB4.SA", "WEGE3.SA", "GOOG",
]  # fmt: skip


@pytest.mark.parametrize("count", [1, 2, 3, 5, 13, 20])
def test_every_ticker_lands_in_exactly_one_shard_of_balanced_size(count: int) -> None:
    shards = [shard_tickers(TICKERS, index=i, count=count) for i in range(count)]
    flat = [ticker for shard in shards for ticker in shard]
    assert sorted(flat) == sorted(TICKERS)  # each exactly once
    sizes = [len(shard) for shard in shards]
    assert max(sizes) - min(sizes) <= 1


def test_workers_agree_whatever_order_or_duplicates_they_were_given() -> None:
    """Each pod reads the list from its own config; the order must not matter."""
    shuffled = TICKERS[:]
    random.Random(7).shuffle(shuffled)
    noisy = [*shuffled, " aapl ", "petr4.sa"]
    for index in range(3):
        assert shard_tickers(noisy, index=index, count=3) == shard_tickers(
            TICKERS, index=index, count=3
        )
    assert sum(len(shard_tickers(noisy, index=i, count=3)) for i in range(3)) == len(TICKERS)


def test_more_shards_than_tickers_leaves_the_extra_shards_empty() -> None:
    assert shard_tickers(["AAPL", "MSFT"], index=2, count=4) == []


@pytest.mark.parametrize(("index", "count"), [(2, 2), (-1, 2), (0, 0)])
def test_a_shard_outside_the_count_is_refused(index: int, count: int) -> None:
    with pytest.raises(ValueError, match=f"shard {index}/{count}"):
        shard_tickers(TICKERS, index=index, count=count)


def test_parse_shard_reads_index_over_count() -> None:
    assert parse_shard("0/2") == (0, 2)
    assert parse_shard("7/8") == (7, 8)


@pytest.mark.parametrize("value", ["2/2", "-1/2", "0/0", "1", "a/b", "$(JOB_COMPLETION_INDEX)/4"])
def test_parse_shard_refuses_what_is_not_index_over_count(value: str) -> None:
    """An unexpanded ``$(JOB_COMPLETION_INDEX)`` (a manifest without the env var) is refused."""
    with pytest.raises(argparse.ArgumentTypeError, match="use INDEX/COUNT with 0 <= INDEX < COUNT"):
        parse_shard(value)

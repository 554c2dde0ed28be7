"""bench.follow: what a poll of a run's progress reads, counted from the query's own pages."""

from __future__ import annotations

import json

from bench import follow


def test_a_poll_reads_every_metric_the_old_way_and_only_the_new_round_the_new_way(capsys, monkeypatch):
    # inline_moto points this process's clients at its server; set here first so that the test's
    # end takes it away again (monkeypatch undoes a setenv, not a variable it never saw).
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    follow.main(["--rounds", "3,6", "--polls", "2"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rows = {(r["rounds"], r["way"]): r for r in out["results"]}
    assert {k: r["items_per_poll"] for k, r in rows.items()} == {(3, "all"): 3, (3, "new"): 1, (6, "all"): 6,
                                                                   (6, "new"): 1}
    # The bytes are the responses' as received: more items, more bytes, by about an item's size each.
    one = rows[(3, "new")]["response_bytes_per_poll"]
    assert one > 0 and rows[(6, "all")]["response_bytes_per_poll"] > rows[(3, "all")]["response_bytes_per_poll"] > one
    assert all(r["moto_busy_ms_per_poll"] > 0 and r["client_ms_per_poll"] > 0 for r in out["results"])

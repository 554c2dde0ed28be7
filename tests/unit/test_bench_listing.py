"""bench.listing: what listing the runs examines, counted from the scan's and the query's own pages."""

from __future__ import annotations

import json

from bench import listing


def test_the_scan_examines_every_item_and_the_index_one_per_run(capsys, monkeypatch):
    # inline_moto points this process's clients at its server; set here first so that the test's
    # end takes it away again (monkeypatch undoes a setenv, not a variable it never saw).
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    listing.main(["--runs", "1,3", "--rounds", "4", "--workers", "2", "--lists", "2"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rows = {(r["runs"], r["way"]): r for r in out["results"]}
    # A run of 4 rounds at N = 2: its META item, and per round a ROUND, 2 RESULT and a METRIC item.
    assert {k: (r["table_items"], r["examined_items_per_list"]) for k, r in rows.items()} == {
        (1, "scan"): (17, 17), (1, "index"): (17, 1), (3, "scan"): (51, 51), (3, "index"): (51, 3)}
    # Both ways return the same META items: the same bytes, give or take the pages' framing.
    assert abs(rows[(3, "scan")]["response_bytes_per_list"] - rows[(3, "index")]["response_bytes_per_list"]) < 100
    assert all(r["moto_busy_ms_per_list"] > 0 and r["client_ms_per_list"] > 0 for r in out["results"])

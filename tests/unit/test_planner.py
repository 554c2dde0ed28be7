"""The planner's arithmetic (constants given), its plot file, and its calibration on a tiny model."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from lambdatrain.planning import calibration, codec_timing
from lambdatrain.planning import planner
from lambdatrain.planning import plot
from lambdatrain.planning.plot import plot_plan
from lambdatrain.planning.recipes import EVIDENCE, RECIPES, NoBackedRecipe, Recipe, backing, evidence_for, narrow
from lambdatrain.planning.transports import TRANSPORTS
from lambdatrain.planning.recommend import accuracy_note, recipe_of, recommend
from lambdatrain.protocol.config import TRANSPORTS as config_transports
from lambdatrain.training.data import open_prepared
from lambdatrain.protocol.config import RunConfig
from lambdatrain.training.trainer import rounds_per_epoch

CAL = planner.Calibration(seconds_per_image=0.01, read_bps=1e9, write_bps=1e9, compute_fixed_s=0.0,
                          cold_start_s=0.0, update_s_per_param=0.0, worker_fixed_s=0.0, combiner_fixed_s=0.0,
                          invoke_latency_s=0.0, per_invoke_s=0.0)
FAST = planner.Storage(client_read=1e9, client_write=1e9, fs_read=1e12, fs_write=1e12)


def _predict(cal=CAL, **kw):
    s = planner.Scenario(**{"params": 1_000_000, "workers": 1, "memory_mb": 1769, **kw})
    return planner.predict(s, cal, FAST)


def test_vcpus_follow_lambda_memory_scaling():
    assert planner.vcpus(1769) == 1
    assert planner.vcpus(3538) == 2
    assert planner.vcpus(10240) == 6


@pytest.mark.parametrize("workers,batch,n", [(1, 256, 45_000), (4, 256, 45_000), (17, 256, 45_000), (3, 64, 1000)])
def test_rounds_per_epoch_matches_the_trainer(workers, batch, n):
    config = RunConfig(workers=workers, batch_size=batch)
    assert planner.rounds_per_epoch(planner.Scenario(1, workers, 1769, batch_size=batch, train_samples=n)) == \
        rounds_per_epoch(config, n)


def test_compute_splits_over_workers_and_vcpus():
    one = _predict(workers=1, batch_size=256)
    assert one["compute_s"] == pytest.approx(256 * 0.01)
    assert _predict(workers=4, batch_size=256)["compute_s"] == pytest.approx(64 * 0.01)
    assert _predict(workers=1, memory_mb=3538, batch_size=256)["compute_s"] == pytest.approx(128 * 0.01)


def test_per_round_compute_is_single_threaded():
    cal = replace(CAL, compute_fixed_s=0.1)
    assert _predict(cal, batch_size=256)["compute_s"] == pytest.approx(256 * 0.01 + 0.1)
    # Two vCPUs halve the per-image part but not the weight copies; half a vCPU doubles both.
    assert _predict(cal, memory_mb=3538, batch_size=256)["compute_s"] == pytest.approx(128 * 0.01 + 0.1)
    assert _predict(cal, memory_mb=1769 // 2, batch_size=256)["compute_s"] == pytest.approx(
        256 * 0.01 / (884 / 1769) + 0.1 / (884 / 1769))


def test_first_round_pays_one_worker_cold_start_whatever_the_workers_then_the_combiners():
    cal = replace(CAL, cold_start_s=5.0)
    for workers in (1, 8):
        row = _predict(cal, workers=workers, combiner_memory_mb=3008)
        assert row["cold_start_s"] == pytest.approx(5.0 + 5.0)
        assert row["first_round_s"] == pytest.approx(row["round_s"] + 10.0)
        assert row["first_epoch_s"] == pytest.approx(row["epoch_s"] + 10.0)


def test_provisioned_concurrency_has_no_cold_start():
    row = _predict(replace(CAL, cold_start_s=5.0), provisioned=True)
    assert row["cold_start_s"] == 0.0
    assert row["first_epoch_s"] == pytest.approx(row["epoch_s"])


def test_cold_start_slows_below_one_vcpu_and_gains_nothing_above():
    cal = replace(CAL, cold_start_s=4.0)
    # The combiner (3008 MB: 1.7 vCPUs) pays the plain 4 s either way.
    assert _predict(cal, memory_mb=884)["cold_start_s"] == pytest.approx(4.0 * 1769 / 884 + 4.0)
    assert _predict(cal, memory_mb=10240)["cold_start_s"] == pytest.approx(4.0 + 4.0)


def test_cold_start_is_not_in_the_warm_epoch_or_its_cost():
    warm, cold = _predict(workers=2), _predict(replace(CAL, cold_start_s=30.0), workers=2)
    assert cold["epoch_s"] == pytest.approx(warm["epoch_s"])
    assert cold["cost_usd"] == pytest.approx(warm["cost_usd"])


def test_combine_grows_with_workers_and_shrinks_with_shards():
    assert _predict(workers=8)["combine_s"] == pytest.approx(8 * 4e6 / 1e9 + 4e6 / 1e9)
    assert _predict(workers=8, shards=4)["combine_s"] == pytest.approx(8 * 4e6 / 4e9 + 1e6 / 1e9)


def test_shared_file_system_limit_slows_the_workers_load():
    limited = planner.Storage(client_read=1e9, client_write=1e9, fs_read=4e9, fs_write=1e12)
    row = planner.predict(planner.Scenario(1_000_000, 16, 1769), CAL, limited)
    assert row["load_s"] == pytest.approx(4e6 / (4e9 / 16))


def test_epoch_is_rounds_times_round():
    row = _predict(workers=2)
    assert row["epoch_s"] == pytest.approx(row["rounds_per_epoch"] * row["round_s"])
    assert row["round_s"] == pytest.approx(row["worker_s"] + row["combine_s"] + row["invoke_s"])


def test_cost_adds_lambda_requests_efs_and_dynamodb():
    row = _predict(workers=2, memory_mb=1024, combiner_memory_mb=1024)
    r, p = row["rounds_per_epoch"], planner.Prices()
    gb_s = r * (2 * row["worker_s"] + row["combine_s"])
    # Read: the workers' weights and the combiner's two results (it keeps its weights and momentum
    # warm); written: two results, the new weights and momentum.
    efs = r * (2 * 4e6 + 2 * 4e6) / 1e9 * 0.03 + r * (2 * 4e6 + 2 * 4e6) / 1e9 * 0.06
    expected = gb_s * p.gb_second + r * 3 * p.request + efs + r * 9 * p.dynamodb_wru
    assert row["cost_usd"] == pytest.approx(expected)


def test_arm_is_cheaper_per_gb_second():
    assert planner.Prices.for_arch("arm64").gb_second < planner.Prices.for_arch("x86_64").gb_second


def test_best_finds_the_fastest_worker_count():
    rows = planner.plan(20_000_000, CAL, planner.Storage(), workers=[1, 2, 4, 8, 16, 32, 64], memories=[10240],
                        shards=[1], recipes=[Recipe("float32", batch_size=256)])
    fastest = planner.best(rows, 1, 10240)
    assert fastest["epoch_s"] == min(r["epoch_s"] for r in rows)
    assert 1 < fastest["workers"] < 64  # the combine makes the curve turn up


def test_plot_writes_a_small_png(tmp_path):
    rows = planner.plan(1_000_000, CAL, FAST, workers=[1, 2, 4], memories=[1769], shards=[1, 4])
    path = plot_plan(rows, tmp_path / "plan.png", "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size < 200_000


def test_plot_draws_each_shard_line_beside_the_others():
    xs = [plot.shifted(8, j, 3) for j in range(3)]
    assert xs[0] < xs[1] == 8 < xs[2]  # distinct positions, centred on N
    assert xs[2] < 8 * 2 ** 0.25  # well short of the next power of two's half-way mark


def test_relative_error():
    assert planner.relative_error(11.0, 10.0) == pytest.approx(0.1)
    assert math.isnan(planner.relative_error(1.0, 0.0))


def test_generated_data_is_cifar_shaped():
    data = calibration.generated_data(8)
    assert data.train_x.shape == (8, 32, 32, 3) and data.train_x.dtype == np.uint8
    assert data.train_y.tolist() == list(range(8)) and len(data.classes) == 10


def test_compute_is_measured_on_the_workers_path_of_a_prepared_dataset(tiny_dataset):
    spi, fixed = calibration.measure_compute("vgg19_cifar", 0.0625, micro_batch=8, data=open_prepared(tiny_dataset))
    assert 0 < spi < 1 and 0 <= fixed < 1


def test_compute_calibration_separates_a_rounds_fixed_cost_from_its_images(monkeypatch):
    # A compute that costs 20 ms a call plus 1 ms an image: one micro-batch's time over its 8 images
    # (about what the calibration measured before) would say 3.5 ms an image; the line says 1 ms and 20 ms.
    from lambdatrain.training import trainer

    seen = []

    def compute_sync(config, data, model, layout, weights, indices, *, round_no, worker):
        seen.append(len(indices))
        return trainer.WorkResult(weights, len(indices), 0.0, 0, False, 0.020 + 0.001 * len(indices))

    monkeypatch.setattr(trainer, "compute_sync", compute_sync)
    spi, fixed = calibration.measure_compute("vgg19_cifar", 0.0625, micro_batch=8, repeats=3,
                                             data=calibration.generated_data(5))
    assert spi == pytest.approx(0.001) and fixed == pytest.approx(0.020)
    # A warm-up, then both sizes in turn; a dataset smaller than the batch repeats its images.
    assert seen == [32] + [8, 32] * 3


def test_calibrate_skips_what_is_given(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("measured although given")

    monkeypatch.setattr(calibration, "measure_compute", refuse)
    monkeypatch.setattr(calibration, "measure_cold_start", refuse)
    params, cal = calibration.calibrate("vgg19_cifar", 0.0625, tmp_path, seconds_per_image=0.02, cold_start_s=3.0,
                                    worker_fixed_s=None)
    assert params == calibration.model_params("vgg19_cifar", 0.0625)
    assert (cal.seconds_per_image, cal.cold_start_s, cal.worker_fixed_s) == (0.02, 3.0, 0.15)
    assert cal.compute_fixed_s >= 0 and cal.read_bps > 0 and cal.write_bps > 0
    assert list(tmp_path.iterdir()) == []


def test_calibrate_times_files_and_codecs_on_at_most_timed_elements(tmp_path, monkeypatch):
    """A model larger than TIMED_ELEMENTS is timed on a vector of that size (its per-element time),
    not allocated whole, several times over, by the codecs' timing."""
    seen = {}

    def record(name, answer):
        return lambda *args: seen.setdefault(name, args[:2] if name != "file" else args[0]) and answer

    monkeypatch.setattr(calibration, "model_params", lambda model, width: 143_000_000)
    monkeypatch.setattr(calibration, "model_sizes", lambda model, width: (143_000_000, 5_000))
    monkeypatch.setattr(calibration, "measure_file_bandwidth", record("file", (1e9, 1e9)))
    monkeypatch.setattr(calibration, "measure_codecs", record("codecs", {}))
    monkeypatch.setattr(calibration, "measure_sum_efficiency", record("sum", 0.5))
    params, cal = calibration.calibrate("vgg19", 1.0, tmp_path, seconds_per_image=0.02, compute_fixed_s=0.01,
                                        cold_start_s=3.0)
    limit = calibration.TIMED_ELEMENTS
    assert params == 143_000_000 and cal.sum_thread_efficiency == 0.5
    assert seen == {"file": limit, "codecs": (limit, limit - 5_000), "sum": (limit, limit - 5_000)}


def test_a_calibration_survives_strict_json_and_back_unlimited_fields_included():
    import json

    cal = replace(CAL, host_cores=math.inf, s3_bps=85e6)
    text = json.dumps(calibration.calibration_dict(cal), allow_nan=False)  # strict JSON: no Infinity
    assert json.loads(text)["host_cores"] is None and json.loads(text)["s3_bps"] == 85e6
    assert calibration.calibration_from_dict(json.loads(text)) == cal


def test_cold_start_probe_imports_a_worker_in_a_fresh_process(tiny_dataset):
    seconds = calibration.measure_cold_start("vgg19_cifar", 0.0625, data=tiny_dataset, timeout_s=240)
    assert 0 < seconds < 240


P = 1_000_003  # not a multiple of any block: the codecs' partial last block counts
B = 5_501  # of P, batch-norm buffers: float32 in every transport, no momentum or residual


def _result_bytes(transport: str) -> int:
    """One result counted independently of the planner: dtype widths, and the codecs' records as
    the compress package documents them (ternary: 48 code bytes + a float32 scale per 240
    elements; sign: 32 + 4 per 256), a partial last block taking a whole record, over the
    parameters only; the buffers as float32."""
    widths = {"float32": 4, "float16": 2, "bfloat16": 2}
    if transport in widths:
        return P * widths[transport]
    block, record = {"ternary_ef": (240, 52), "sign_ef": (256, 36)}[transport]
    return -(-(P - B) // block) * record + 4 * B


@pytest.mark.parametrize("transport", ["float32", "float16", "bfloat16", "ternary_ef", "sign_ef"])
@pytest.mark.parametrize("mode,steps", [("sync", 1), ("average", 4)])
@pytest.mark.parametrize("shards", [1, 4])
def test_efs_bytes_per_round_count_who_reads_and_writes_what(transport, mode, steps, shards):
    n, model, result = 3, 4 * P, _result_bytes(transport)
    compressed = transport.endswith("_ef")
    # The combiner's files on EFS: weights (whole vector) and a float transport's momentum
    # (parameters, sync); a compressed run's momentum, residual and update are in the bucket.
    files = model + 4 * (P - B) * (mode == "sync" and not compressed)
    row = planner.predict(planner.Scenario(P, n, 1769, shards=shards, transport=transport, mode=mode,
                                           local_steps=steps, buffers=B), CAL, FAST)
    # Shares write their slices (and of a compressed update), the last reads them back.
    slices = files + compressed * result if shards > 1 else 0
    expected = {"worker_read": 0 if compressed else n * model, "worker_write": n * result,
                # S = 1: kept warm; S > 1: each share reads its slice of the files, then the last the slices
                "combiner_read": n * result + (files + slices if shards > 1 else 0),
                "combiner_write": files + slices}
    assert row["result_bytes"] == result and row["model_bytes"] == model
    assert row["efs_bytes"] == expected
    assert row["efs_bytes_per_round"] == sum(expected.values())
    assert row["runnable"] is True
    # In the bucket: momentum (sync) and residual PUT every round, read back by S > 1 shares; the update PUT.
    arrays = 4 * (P - B) * ((mode == "sync") + 1) if compressed else 0
    bucket = arrays * (2 if shards > 1 else 1) + compressed * result
    assert row["combiner_state_bytes_per_round"] == pytest.approx(bucket, rel=1e-5)
    # A worker's time moves its own share of those bytes at the 1 GB/s the storage allows; a
    # compressed one's update comes from the bucket instead.
    update_s = CAL.s3_request_s + result / CAL.s3_bps if compressed else 0.0
    assert row["load_s"] == pytest.approx(expected["worker_read"] / n / 1e9 + update_s)
    assert row["write_s"] == pytest.approx(result / 1e9)


@pytest.mark.parametrize("transport,fraction", [("ternary_ef", 1 / 15), ("sign_ef", 1 / 28)])
def test_a_compressed_worker_moves_a_small_fraction_of_float32s_efs_bytes(transport, fraction):
    """Issue 14's goal, per worker and warm round, each direction: vgg19_cifar's real sizes."""
    def per_worker(name):
        row = planner.predict(planner.Scenario(20_051_546, 8, 10240, transport=name, buffers=11_024), CAL, FAST)
        return row["efs_bytes"]["worker_read"] / 8, row["efs_bytes"]["worker_write"] / 8  # the update: S3

    (f_down, f_up), (c_down, c_up) = per_worker("float32"), per_worker(transport)
    assert c_down <= fraction * f_down and c_up <= fraction * f_up


def test_compressed_state_goes_to_s3_in_time_and_cost():
    """Per worker-round 4P PUT and 4P GET (the residual, its GET planned as always happening) and the
    update's GET; per round the combiner's momentum and residual PUTs, 4P each, and the update's;
    at the S3 constants in time, at S3's request prices in dollars, with a listing and one
    DeleteObjects a round."""
    cal = replace(CAL, s3_bps=100e6, s3_request_s=0.05)
    plain = planner.predict(planner.Scenario(P, 4, 1769, buffers=B), cal, FAST)
    ef = planner.predict(planner.Scenario(P, 4, 1769, transport="ternary_ef", buffers=B), cal, FAST)
    residual, update = 4 * (P - B), ef["result_bytes"]
    assert (plain["state_store"], plain["state_bytes_per_worker_round"], plain["state_s"]) == ("none", 0, 0.0)
    assert (plain["combiner_state_bytes_per_round"], plain["combiner_state_s"]) == (0, 0.0)
    assert ef["state_store"] == "s3" and ef["state_bytes_per_worker_round"] == 2 * residual + update
    assert ef["combiner_state_bytes_per_round"] == 2 * residual + update
    # In 16 MiB parts, up to 8 at once: each transfer a request's latency, then its bytes at 8x.
    parts = -(-residual // (16 << 20))
    one, small = 0.05 + residual / (100e6 * min(8, parts)), 0.05 + update / 100e6
    assert ef["state_s"] == pytest.approx(2 * one + small)
    assert ef["combiner_state_s"] == pytest.approx(2 * one + small)  # one after another, on the combine's path
    # The residual's GET runs beside the update's GET and compute; the PUT before the result's write.
    assert ef["load_s"] == pytest.approx(small)
    assert ef["worker_s"] == pytest.approx(cal.worker_fixed_s + max(small + ef["compute_s"], one) + ef["write_s"] + one)
    rounds = ef["rounds_per_epoch"]
    # A transfer in one part is one request; in k parts a PUT is create + parts + complete and a
    # GET two HEADs and a GET per part. Then a listing of versions and one DeleteObjects a round.
    many = 1 if parts == 1 else parts + 2
    per_worker = many * 0.005 + (many + 1) * 0.0004
    combiner = (2 * many + 1) * 0.005
    assert ef["cost_breakdown"]["s3_requests"] == pytest.approx(
        rounds * (4 * per_worker + combiner + 2 * 0.005) / 1000, abs=1e-6)
    # The others deleted within rounds, the epoch boundary's state (4 workers' residuals, the
    # combiner's two arrays and update) stays billed 15 days (the lifecycle rule's 14, and a day
    # of rounding).
    stored = 4 * residual + 2 * residual + update
    assert ef["cost_breakdown"]["s3_storage"] == pytest.approx(stored / 1e9 * 0.023 * 15 / 30.4, abs=1e-6)
    assert "s3_requests" not in plain["cost_breakdown"] and "s3_storage" not in plain["cost_breakdown"]
    assert ef["cost_per_epoch"] == pytest.approx(sum(ef["cost_breakdown"].values()), abs=1e-5)


@pytest.mark.parametrize("shards", [1, 4])
def test_a_put_pays_what_it_costs_beyond_a_get_per_byte_and_a_get_does_not(shards):
    """The local stack's moto mirrors each PUT to disk (lambdatrain/local/durable.py), so a PUT
    takes longer than a GET of the same bytes: the worker's residual PUT and the combiner's PUTs
    (its slices and the update) pay ``s3_put_s_per_byte`` each, the GETs nothing more."""
    per_byte = 2e-9
    cal = replace(CAL, s3_bps=100e6, s3_request_s=0.05)
    dear = replace(cal, s3_put_s_per_byte=per_byte)
    scenario = planner.Scenario(P, 4, 1769, transport="ternary_ef", buffers=B, shards=shards)
    plain, mirrored = planner.predict(scenario, cal, FAST), planner.predict(scenario, dear, FAST)
    residual, update = 4 * (P - B), plain["result_bytes"]
    assert mirrored["state_s"] - plain["state_s"] == pytest.approx(residual * per_byte)
    assert mirrored["load_s"] == plain["load_s"]  # the update's GET
    slices = 2 * (residual // shards) * per_byte  # one share's momentum and residual slices
    assert mirrored["combiner_state_s"] - plain["combiner_state_s"] == pytest.approx(slices + update * per_byte,
                                                                                       rel=1e-6)


@pytest.mark.parametrize("workers,shards", [(4, 1), (64, 1), (64, 4)])
def test_a_compressed_round_pays_its_codecs_per_worker_and_per_result_in_each_share(workers, shards):
    """A warm worker applies the update (before compute) and packs its result (after); each share
    of the combiner adds its slice of the N results, then packs and applies its slice of the update:
    seconds per parameter, single-threaded (one vCPU at most, slower below one)."""
    pack, apply_, add = 3e-9, 2e-9, 1.5e-9
    # A bucket without latency: the residual's GET, which runs beside apply and compute, never outlasts them
    instant = replace(CAL, s3_bps=1e18, s3_request_s=0.0)
    cal = replace(instant, pack_s_per_param=pack, apply_s_per_param=apply_, decode_add_s_per_param=add)
    for transport in ("ternary_ef", "sign_ef"):
        s = planner.Scenario(P, workers, 10240, shards=shards, transport=transport, buffers=B, combiner_memory_mb=885)
        without, ef = planner.predict(s, instant, FAST), planner.predict(s, cal, FAST)
        p = P - B  # the buffers travel as float32: no codec
        assert ef["worker_s"] - without["worker_s"] == pytest.approx(p * (apply_ + pack))  # 6 vCPUs: one used
        assert ef["codec_s"] == pytest.approx(p * (apply_ + pack))
        # 885 MB: half a vCPU, so the combiner's single-threaded codec takes about twice as long
        slower = 1769 / 885
        share = p / shards
        assert ef["combine_s"] - without["combine_s"] == pytest.approx(slower * share * (workers * add + pack + apply_))
    plain = planner.Scenario(P, workers, 10240, shards=shards, buffers=B)
    assert planner.predict(plain, cal, FAST)["round_s"] == planner.predict(plain, instant, FAST)["round_s"]
    assert planner.predict(plain, cal, FAST)["codec_s"] == 0.0


@pytest.mark.parametrize("combiner_mb,vcpus", [(3008, 3008 / 1769), (10240, 6.0)])
def test_the_combiners_sum_of_a_large_slice_takes_a_thread_per_vcpu_its_step_one(combiner_mb, vcpus):
    """training/reduce.py's compressed_sum decodes in a thread per core, each on at least
    MIN_DECODE_SPAN elements, each thread past the first adding the measured efficiency of one; the
    update's pack and apply stay single-threaded."""
    from lambdatrain.training.reduce import MIN_DECODE_SPAN

    pack, apply_, add, efficiency = 3e-9, 2e-9, 1.5e-9, 0.6
    instant = replace(CAL, s3_bps=1e18, s3_request_s=0.0)
    cal = replace(instant, pack_s_per_param=pack, apply_s_per_param=apply_, decode_add_s_per_param=add,
                  sum_thread_efficiency=efficiency)
    params, buffers = 20_051_546, 11_024
    for shards in (1, 4):
        s = planner.Scenario(params, 64, 10240, shards=shards, transport="ternary_ef", buffers=buffers,
                             combiner_memory_mb=combiner_mb)
        share = (params - buffers) / shards
        threads = min(8, int(share) // MIN_DECODE_SPAN)
        expected = share * 64 * add / (1 + (min(vcpus, threads) - 1) * efficiency) + share * (pack + apply_)
        extra = planner.predict(s, cal, FAST)["combine_s"] - planner.predict(s, instant, FAST)["combine_s"]
        assert extra == pytest.approx(expected)


def test_the_sums_second_thread_is_timed_on_the_combiners_own_sum(monkeypatch):
    """measure_sum_efficiency times training/reduce.py's SpanSum (what compressed_sum adds each
    result with) in one thread and in two: a sum doctored to cost 10 ms a result alone and 6.25 ms
    in two threads gives 10 / 6.25 - 1 = 0.6. The cost is a clock the doctored sum advances, not
    sleeps: timed sleeps on a loaded machine (CI's 3 test processes on 2 cores) overshoot by more
    than the difference being measured."""
    from lambdatrain.training import reduce

    real, clock = reduce.SpanSum.add, [0.0]

    def doctored(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        clock[0] += 0.01 if self.pool is None else 0.00625
        return out

    def timed(fn):
        t0 = clock[0]
        fn()
        return clock[0] - t0

    monkeypatch.setattr(reduce.SpanSum, "add", doctored)
    monkeypatch.setattr(codec_timing, "timed", timed)
    monkeypatch.setattr(reduce, "cores_available", lambda: 2)
    size = 2 * reduce.MIN_DECODE_SPAN // 100  # small: the real decode's time does not count here
    assert codec_timing.measure_sum_efficiency(size, size - 7, repeats=3) == pytest.approx(0.6)
    monkeypatch.setattr(reduce, "cores_available", lambda: 1)
    assert codec_timing.measure_sum_efficiency(size, size - 7) == 1.0  # one core: nothing to try


def test_the_codecs_are_timed_on_the_functions_a_round_runs(monkeypatch):
    """measure_codecs times training/feedback.py's own pack, apply_update and add_slice: each one's
    cost shows up, per parameter, in its own constant and no other. The costs are a clock the
    doctored functions advance, not sleeps (which overshoot on a loaded machine); the real
    functions run too, and timed for real they give positive constants."""
    from lambdatrain.training import feedback

    size, n_params = 40_000, 39_000
    assert all(v > 0 for v in codec_timing.measure_codecs(size, n_params, repeats=3).values())
    clock, costs = [0.0], {"pack": 0.003, "apply_update": 0.002, "add_slice": 0.001}

    def costed(name):
        real = getattr(feedback, name)

        def run(*args, **kwargs):
            out = real(*args, **kwargs)
            clock[0] += costs[name]
            return out
        return run

    def timed(fn):
        t0 = clock[0]
        fn()
        return clock[0] - t0

    for name in costs:
        monkeypatch.setattr(feedback, name, costed(name))
    monkeypatch.setattr(codec_timing, "timed", timed)
    expected = {"pack_s_per_param": 0.003 / n_params, "apply_s_per_param": 0.002 / n_params,
                "decode_add_s_per_param": 0.001 / n_params}
    assert codec_timing.measure_codecs(size, n_params, repeats=3) == pytest.approx(expected)
    costs["add_slice"] += 0.02  # add_slice slowed: decode-and-add's constant, and only it, moves
    assert codec_timing.measure_codecs(size, n_params, repeats=3) == pytest.approx(
        {**expected, "decode_add_s_per_param": 0.021 / n_params})


def test_the_residuals_billed_days_follow_the_buckets_lifecycle_rule():
    storage = pytest.importorskip("components.storage")
    assert planner.STATE_EXPIRY_DAYS == storage.STATE_EXPIRY_DAYS  # both take roles/settings.py's
    assert planner.STATE_KEPT_DAYS == storage.STATE_EXPIRY_DAYS + 1  # and the day S3 may round up


def test_buffers_must_fit_in_the_vector():
    with pytest.raises(ValueError, match="buffers"):
        planner.Scenario(10, 2, 1769, buffers=11)


def test_compressed_results_are_the_codecs_fraction_of_float32():
    sizes = {t: planner.predict(planner.Scenario(20_000_000, 1, 1769, transport=t), CAL, FAST)["result_bytes"]
             for t in ("float32", "ternary_ef", "sign_ef")}
    assert sizes["float32"] / sizes["ternary_ef"] == pytest.approx(32 / 1.7333, rel=1e-3)
    assert sizes["float32"] / sizes["sign_ef"] == pytest.approx(32 / 1.125, rel=1e-3)


def test_average_mode_takes_k_steps_per_round_and_k_times_fewer_rounds():
    sync = _predict(workers=4, batch_size=128)
    local = _predict(workers=4, batch_size=128, mode="average", local_steps=4)
    assert local["compute_s"] == pytest.approx(4 * sync["compute_s"])
    assert local["rounds_per_epoch"] == sync["rounds_per_epoch"] // 4
    assert local["efs_bytes_per_round"] < sync["efs_bytes_per_round"]  # no momentum file; per-round bytes else equal
    assert local["efs_bytes"]["worker_write"] == sync["efs_bytes"]["worker_write"]
    config = RunConfig(workers=4, batch_size=128, mode="average", local_steps=4)
    assert local["rounds_per_epoch"] == rounds_per_epoch(config, 45_000)


def test_fixed_per_round_compute_is_paid_once_in_average_mode():
    cal = replace(CAL, compute_fixed_s=0.1)
    row = _predict(cal, batch_size=128, mode="average", local_steps=3)
    assert row["compute_s"] == pytest.approx(3 * 128 * 0.01 + 0.1)


def test_rows_carry_the_recipe_and_the_per_round_and_per_epoch_figures():
    rows = planner.plan(P, CAL, FAST, workers=[1, 2], memories=[1769], shards=[1, 4])
    assert len(rows) == len(RECIPES) * 2 * 2
    for row in rows:
        for field in ("workers", "memory_mb", "shards", "transport", "mode", "local_steps", "batch_size",
                      "round_s", "epoch_s", "cost_per_epoch", "efs_bytes_per_round", "runnable", "cost_per_round",
                      "state_store", "state_bytes_per_worker_round", "state_s"):
            assert field in row, field
        assert row["cost_per_epoch"] == pytest.approx(row["cost_per_round"] * row["rounds_per_epoch"])
    assert {(r["transport"], r["mode"], r["local_steps"], r["batch_size"]) for r in rows} == \
        {(r.transport, r.mode, r.local_steps, r.batch_size) for r in RECIPES}


def test_runnable_transports_are_the_ones_a_run_accepts():
    assert {name for name, t in TRANSPORTS.items() if t.runnable} == set(config_transports)
    assert all(t.runnable for t in TRANSPORTS.values())  # the compressed ones included, now


def test_every_planned_recipe_has_a_line_in_the_evidence_table():
    """The one place a measurement is recorded: a recipe without a line would be silently unmeasured."""
    assert {(r.transport, r.mode, r.local_steps) for r in RECIPES} <= set(EVIDENCE)
    measured = {k for k, studies in EVIDENCE.items() if studies}
    assert {("float32", "sync", 1), ("float16", "sync", 1), ("bfloat16", "sync", 1), ("ternary_ef", "sync", 1)} <= measured
    assert all(backing(Recipe(t, m, k), 1) is None for t, m, k in set(EVIDENCE) - measured)


def test_a_measurement_backs_its_recipe_up_to_its_batch_and_within_the_tolerance():
    (e,) = EVIDENCE[("float16", "sync", 1)]
    assert backing(Recipe("float16", batch_size=128), 64) is e and backing(Recipe("float16", batch_size=256), 2) is e
    assert backing(Recipe("float16", batch_size=512), 2) is None  # a larger batch was not measured
    assert replace(e, gap_pp=e.control_gap_pp - 1.0).shown
    assert not replace(e, gap_pp=e.control_gap_pp - 1.01).shown


def test_a_recipe_is_spoken_for_by_the_study_at_the_smallest_batch_that_covers_its_own(monkeypatch):
    """Studies at two batches: each recipe takes the nearest one at or above its batch, shown or not."""
    from lambdatrain.planning import recipes

    (small,) = EVIDENCE[("float16", "sync", 1)]
    large = replace(small, batch_size=2048, gap_pp=small.control_gap_pp - 5)  # measured, short
    monkeypatch.setitem(recipes.EVIDENCE, ("float16", "sync", 1), (large, small))
    assert evidence_for(Recipe("float16", batch_size=small.batch_size), 64) is small
    assert evidence_for(Recipe("float16", batch_size=small.batch_size + 1), 64) is large
    assert backing(Recipe("float16", batch_size=small.batch_size + 1), 64) is None  # short there
    assert backing(Recipe("float16", batch_size=128), 64) is small
    assert evidence_for(Recipe("float16", batch_size=4096), 1) is None


def test_a_compressed_sync_measurement_backs_its_recipe_up_to_its_workers_only():
    """Each worker compresses its share with its own residual: N workers are N residuals."""
    ternary = EVIDENCE[("ternary_ef", "sync", 1)][0]
    assert backing(Recipe("ternary_ef"), ternary.workers) is ternary
    assert backing(Recipe("ternary_ef"), ternary.workers + 1) is None
    (float16,) = EVIDENCE[("float16", "sync", 1)]
    assert backing(Recipe("float16"), 64) is float16  # a float transport's step does not depend on N


def test_a_large_batch_study_on_many_workers_does_not_speak_for_a_small_batch_beyond_its_studys_workers(monkeypatch):
    """With a study at batch 256 on 2 workers (shown) and one at batch 2048 on 64 (short), ternary_ef
    at batch 128 on 4 workers is not measured, not condemned by the large batch's verdict."""
    from lambdatrain.planning import recipes

    studies = {(e.batch_size, e.workers): e for e in EVIDENCE[("ternary_ef", "sync", 1)]}
    small, large = studies[256, 2], studies[2048, 64]
    monkeypatch.setitem(recipes.EVIDENCE, ("ternary_ef", "sync", 1), (small, large))
    assert (small.batch_size, small.workers, small.shown) == (256, 2, True)
    assert (large.batch_size, large.workers, large.shown) == (2048, 64, False)
    assert evidence_for(Recipe("ternary_ef"), 2) is small
    assert evidence_for(Recipe("ternary_ef"), 4) is None and evidence_for(Recipe("ternary_ef"), 64) is None
    assert evidence_for(Recipe("ternary_ef", batch_size=2048), 4) is large  # at its batch, fewer workers: short
    assert evidence_for(Recipe("ternary_ef", batch_size=2048), 65) is None


def test_a_short_study_on_more_workers_does_not_overrule_a_shown_one_on_as_few_at_a_larger_batch(monkeypatch):
    """ternary_ef at batch 128: shown on 2 workers at batch 256, short on 64 at batch 128 (the
    table's studies). On 2 workers the shown study is at least as hard and speaks; on 3 to 64 the
    batch-128 study does."""
    from lambdatrain.planning import recipes

    studies = {(e.batch_size, e.workers): e for e in EVIDENCE[("ternary_ef", "sync", 1)]}
    many, small, large = studies[128, 64], studies[256, 2], studies[2048, 64]
    assert [e.shown for e in (many, small, large)] == [False, True, False]
    monkeypatch.setitem(recipes.EVIDENCE, ("ternary_ef", "sync", 1), (many, small, large))
    assert backing(Recipe("ternary_ef"), 2) is small
    assert [evidence_for(Recipe("ternary_ef"), n) for n in (3, 4, 64)] == [many] * 3
    assert backing(Recipe("ternary_ef"), 4) is None and evidence_for(Recipe("ternary_ef"), 65) is None
    assert evidence_for(Recipe("ternary_ef", batch_size=2048), 4) is large
    shown = replace(many, gap_pp=many.control_gap_pp)  # the same study, shown: it backs every N up to 64
    monkeypatch.setitem(recipes.EVIDENCE, ("ternary_ef", "sync", 1), (large, shown, small))
    assert [backing(Recipe("ternary_ef"), n) for n in (2, 3, 64)] == [shown] * 3


def test_a_shown_study_at_a_larger_batch_does_not_overrule_a_short_one_at_the_recipes_batch(monkeypatch):
    """ternary_ef on 64 workers: short at batch 128, shown at batch 256 (a study whose rate was
    scaled with its batch). Batch 256 is backed from 3 to 64 workers; batch 128 stays short there,
    and on 2 workers the 2-worker study still backs both."""
    from lambdatrain.planning import recipes

    studies = {(e.batch_size, e.workers): e for e in EVIDENCE[("ternary_ef", "sync", 1)]}
    many, two, big = studies[128, 64], studies[256, 2], studies[2048, 64]
    assert (many.shown, two.shown, big.shown) == (False, True, False)
    scaled = replace(many, batch_size=256, gap_pp=many.control_gap_pp + 1, variant={"batch_size": 256, "lr": 0.1})
    monkeypatch.setitem(recipes.EVIDENCE, ("ternary_ef", "sync", 1), (big, scaled, two, many))
    assert [evidence_for(Recipe("ternary_ef"), n) for n in (3, 17, 64)] == [many] * 3
    assert [backing(Recipe("ternary_ef", batch_size=256), n) for n in (3, 17, 64)] == [scaled] * 3
    assert backing(Recipe("ternary_ef"), 2) is two and backing(Recipe("ternary_ef", batch_size=256), 2) is two
    assert backing(Recipe("ternary_ef", batch_size=256), 65) is None
    assert evidence_for(Recipe("ternary_ef", batch_size=257), 64) is big


def test_a_local_sgd_measurement_backs_its_recipe_up_to_its_workers_only(monkeypatch):
    """Local SGD's workers drift apart more the more there are; sync's step does not depend on N."""
    from lambdatrain.planning import recipes

    (sync,) = EVIDENCE[("float16", "sync", 1)]
    local = replace(sync, workers=16)
    monkeypatch.setitem(recipes.EVIDENCE, ("float16", "average", 4), (local,))
    assert backing(Recipe("float16", "average", 4), 16) is local
    assert backing(Recipe("float16", "average", 4), 17) is None
    assert backing(Recipe("float16"), 1024) is sync


def _rows(**kw):
    return planner.plan(20_051_546, CAL, planner.Storage(), workers=[1, 2, 4, 8, 16, 64], memories=[10240],
                        shards=[1, 4], buffers=11_024, **kw)


def test_recommend_picks_the_fastest_backed_row_within_the_budget():
    rows = _rows()
    budget = 10.0
    picked = recommend(rows, budget)
    best_row, evidence = picked[0]

    def study(r):  # a shown study at least as hard as the row (batch, and N where workers carry state): the nearest
        own_state = r["mode"] == "average" or r["transport"] in ("ternary_ef", "sign_ef")
        harder = sorted((e for e in EVIDENCE[(r["transport"], r["mode"], r["local_steps"])]
                         if e.shown and e.batch_size >= r["batch_size"] and (not own_state or e.workers >= r["workers"])),
                        key=lambda e: (e.batch_size, e.workers))
        return harder[0] if harder else None

    oracle = min((r for r in rows if study(r) is not None and r["cost_per_epoch"] <= budget), key=lambda r: r["epoch_s"])
    assert best_row is oracle and evidence is study(oracle)
    assert [r["epoch_s"] for r, _ in picked] == sorted(r["epoch_s"] for r, _ in picked)
    assert len({r["recipe"] for r, _ in picked}) == len(picked)  # one row per recipe
    # An unmeasured recipe is never picked, even where it is faster within the budget.
    assert any(r["epoch_s"] < best_row["epoch_s"] and r["cost_per_epoch"] <= budget for r in rows
               if backing(recipe_of(r), r["workers"]) is None)


def test_recommend_refuses_when_no_backed_row_fits_the_budget():
    with pytest.raises(NoBackedRecipe, match=r"at most \$0.01 per epoch; the cheapest is"):
        recommend(_rows(), 0.01)
    with pytest.raises(NoBackedRecipe, match="no recipe in this plan has a measured accuracy"):
        recommend(_rows(recipes=[Recipe("ternary_ef", "average", 4), Recipe("float16", "average", 16)]), 1000.0)


@pytest.mark.parametrize("kw,message", [({"transport": "int8"}, "unknown transport"),
                                        ({"mode": "async"}, "unknown mode"),
                                        ({"local_steps": 2}, "must be 1 in sync mode")])
def test_bad_scenarios_are_one_line_errors(kw, message):
    with pytest.raises(ValueError, match=message):
        planner.Scenario(P, 2, 1769, **kw)


def test_narrow_keeps_matching_recipes_and_overrides_the_batch():
    kept = narrow(RECIPES, transports=["float16"], modes=["average"], batch_size=512)
    assert [(r.transport, r.mode, r.local_steps, r.batch_size) for r in kept] == \
        [("float16", "average", 4, 512), ("float16", "average", 16, 512)]
    assert [(r.transport, r.local_steps) for r in narrow(RECIPES, local_steps=[16])] == \
        [("float16", 16), ("ternary_ef", 16)]
    with pytest.raises(ValueError, match="no recipe matches"):
        narrow(RECIPES, transports=["sign_ef"], modes=["average"])
    with pytest.raises(ValueError, match="unknown mode"):
        narrow(RECIPES, modes=["async"])


def test_fanout_costs_one_invoke_latency_per_pool_wave_not_per_worker():
    from lambdatrain.planning.planner import fanout_waves
    from lambdatrain.roles.runtime import INVOKE_POOL

    assert fanout_waves(1, 1) == 2  # the single share's invoke, then the workers'
    assert fanout_waves(INVOKE_POOL, 1) == 2
    assert fanout_waves(INVOKE_POOL + 1, 1) == 3
    assert fanout_waves(256, 4) == 1 + 256 // INVOKE_POOL


def test_a_service_serving_one_request_at_a_time_adds_its_time_once_per_worker():
    """The local stack's moto: N workers queue for it; AWS's services (the default, 0) add nothing."""
    serial = replace(CAL, serial_s_per_worker=0.02)
    for n in (1, 4):
        alone, queued = _predict(workers=n), _predict(cal=serial, workers=n)
        assert queued["invoke_s"] - alone["invoke_s"] == pytest.approx(0.02 * n)
        assert queued["round_s"] - alone["round_s"] == pytest.approx(0.02 * n)


def test_workers_sharing_a_machine_take_at_least_their_cpu_over_its_cores():
    """The local stack: N workers on 2 cores. Alone each computes on its own core; four of them, each
    also costing the machine CPU besides its compute, need their CPU seconds over the 2 cores. On AWS
    (host_cores inf, the default) nothing is shared."""
    shared = replace(CAL, host_cores=2, cpu_s_per_worker=0.1)
    one = _predict(cal=shared, workers=1, batch_size=256)  # 2.56 s of compute; 2.66 s of CPU over 2 cores
    assert one["host_cpu_s"] == pytest.approx((2.56 + 0.1) / 2)
    assert one["worker_s"] == _predict(workers=1, batch_size=256)["worker_s"]  # its own round is the longer
    four = _predict(cal=shared, workers=4, batch_size=256)  # 0.64 s each on a vCPU of its own
    assert four["compute_s"] == pytest.approx(0.64)
    assert four["worker_s"] == pytest.approx(4 * (0.64 + 0.1) / 2)
    alone = _predict(workers=4, batch_size=256)
    assert four["round_s"] - alone["round_s"] == pytest.approx(four["worker_s"] - alone["worker_s"])
    assert alone["host_cpu_s"] == 0.0


def test_the_last_workers_delivery_follows_the_phase_and_is_not_charged_to_the_cores():
    """The stack reads each worker's ledger writes (the local stack's poller, ``delivery_cpu_s`` of
    its CPU per invocation); the last worker's read comes after the phase and starts the combine,
    so the cores' bound counts N - 1 of them. On AWS nothing is shared and it changes nothing."""
    shared = replace(CAL, host_cores=2, cpu_s_per_worker=0.1)
    read = replace(shared, delivery_cpu_s=0.04)
    for n in (2, 4):
        assert _predict(cal=read, workers=n, batch_size=256)["host_cpu_s"] == \
            pytest.approx(_predict(cal=shared, workers=n, batch_size=256)["host_cpu_s"] - 0.04 / 2)
    four = _predict(cal=read, workers=4, batch_size=256)
    assert four["worker_s"] == pytest.approx((4 * (0.64 + 0.1) - 0.04) / 2)
    on_aws = replace(CAL, delivery_cpu_s=0.04)
    assert _predict(cal=on_aws, workers=4) == _predict(workers=4)


def test_a_recipes_accuracy_is_said_per_n_only_where_its_rows_differ():
    def row(n, shown, measured):
        return {"workers": n, "accuracy_shown": shown, "accuracy_measured": measured}

    assert accuracy_note([row(1, True, True), row(64, True, True)]) == ""
    assert accuracy_note([row(1, False, False), row(64, False, False)]) == " (accuracy not measured)"
    assert accuracy_note([row(64, False, False), row(1, True, True), row(2, True, True), row(2, True, True)]) == \
        " (accuracy shown at N = 1, 2; not measured at N = 64)"
    assert accuracy_note([row(1, False, True), row(4, False, False)]) == \
        " (accuracy measured short of float32's at N = 1; not measured at N = 4)"

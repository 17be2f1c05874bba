"""Pure parts of the sim-to-real benchmark (bench/bench_sim_to_real.py): the table rows read from the
post-training records, the steps ratio from two validation-loss curves, the aims' verdicts. No training."""

from __future__ import annotations

import bench_sim_to_real as bench


def _record(prefix_values: dict[str, float]) -> dict:
    return {"metrics": prefix_values}


def _metrics(prefix: str, who: str, psnr: float, ssim: float) -> dict[str, float]:
    out = {}
    for h in bench.HORIZONS:
        out[f"{prefix}{who}_h{h}_psnr_vs_real"] = psnr - h
        out[f"{prefix}{who}_h{h}_ssim_vs_real"] = ssim
        out[f"{prefix}{who}_h{h}_psnr_vs_decoded"] = psnr + 1
    return out


def test_rows_come_from_each_methods_record_and_missing_figures_show_a_dash():
    full = {
        **_metrics("val_", "model", 24.0, 0.7),
        **_metrics("val_", "copy_last", 23.0, 0.65),
        **_metrics("base_val_", "model", 18.0, 0.4),
        **_metrics("scratch_val_", "model", 20.0, 0.5),
    }
    del full["scratch_val_model_h4_ssim_vs_real"]
    lora = _metrics("val_", "model", 22.0, 0.6)
    rows = {r[0]: r[1:] for r in bench.quality_rows({"full": _record(full), "lora": _record(lora)})}
    assert list(rows) == ["base (before)", "full", "lora", "scratch", "copy-last frame"]  # heads did not run
    assert rows["full"][:2] == ["23.00", "0.700"] and rows["full"][4] == "20.00"  # h1 PSNR/SSIM, h4 PSNR
    assert rows["lora"][0] == "21.00" and rows["base (before)"][0] == "17.00"
    assert rows["copy-last frame"][0] == "22.00"
    assert rows["scratch"][5] == "-"
    decoded = {r[0]: r[1:] for r in bench.quality_rows({"full": _record(full)}, "decoded")}
    assert decoded["full"][0] == "25.00" and decoded["full"][1] == "-"  # no SSIM vs decoded in this record


def test_ratio_from_two_curves_and_a_scratch_that_never_gets_there():
    post = [(0, 1.0), (10, 0.5), (20, 0.3), (30, 0.3)]
    scratch = [(0, 2.0), (10, 1.0), (20, 0.6), (30, 0.29)]
    r = bench.ratio_to_reach(post, scratch, 0.3)
    assert (r["posttrained_steps"], r["scratch_steps"], r["ratio"]) == (20, 30, 1.5)
    r = bench.ratio_to_reach(post, scratch[:3], 0.3)
    assert r["scratch_steps"] is None and "ratio" not in r and r["ratio_lower_bound"] == 1.0
    r = bench.ratio_to_reach([(0, 0.2)], scratch, 0.3)  # already there before training: counts as 1 step
    assert r["ratio"] == 30.0
    assert "ratio" not in bench.ratio_to_reach(post, scratch, 0.01)


def test_aims_say_met_or_missed_with_the_margins():
    full = {
        **_metrics("val_", "model", 24.0, 0.7),
        **_metrics("val_", "copy_last", 24.5, 0.6),
        **_metrics("scratch_val_", "model", 20.0, 0.5),
    }
    lines = bench.aims({"full": _record(full)}, {"ratio": 2.5})
    assert lines[0].startswith("MET: full post-trained vs scratch, PSNR") and "h1 +4.00" in lines[0]
    assert lines[2].startswith("MISSED: full post-trained vs copy-last frame, PSNR") and "h4 -0.50" in lines[2]
    assert lines[3].startswith("MET: full post-trained vs copy-last frame, SSIM")
    assert lines[-1] == "MET: scratch needs 2.50x the steps (aim >= 2x)"
    assert bench.aims({}, {"ratio_lower_bound": 1.5})[-1].startswith("UNDECIDED")
    assert bench.aims({}, {"ratio": 1.2})[-1].startswith("MISSED")


def test_ratio_at_targets_read_off_the_post_trained_curve():
    post = [(0, 1.0), (10, 0.5), (20, 0.4), (30, 0.3), (40, 0.3)]
    scratch = [(0, 2.0), (10, 1.0), (20, 0.8), (30, 0.5), (40, 0.45)]
    rows = bench.ratio_targets(post, scratch)
    assert [r["at_step"] for r in rows] == [0, 10, 20, 40]  # nearest logged steps to 1/10, 1/4, 1/2, all of 40
    assert rows[1]["target"] == 0.5 and rows[1]["ratio"] == 3.0  # scratch reaches 0.5 at 30, post at 10
    assert rows[3]["target"] == 0.3 and rows[3]["posttrained_steps"] == 30 and rows[3]["ratio_lower_bound"] == 40 / 30
    assert bench.ratio_targets([], scratch) == []

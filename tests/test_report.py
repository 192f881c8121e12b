import json
import re
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest

from slm_jax import report, results

ROOT = Path(__file__).resolve().parent.parent
H100, H200, A100 = "NVIDIA H100 80GB HBM3", "NVIDIA H200", "NVIDIA A100-SXM4-80GB"
RATIO = {A100: 1.46, H100: 2.53, H200: report.hardware.gpu("H200").paper_price_ratio,
         "NVIDIA A100-SXM4-40GB": 1.0}


def record(model="100m", attention="cudnn", strategy="ddp", batch=16, devices=1,
           kind=A100, tps_per_device=1000.0, status="ok", breakdown=None, campaign=None,
           commit="a" * 40, timestamp="2026-01-01T00:00:00", stack="jax", tag=None):
  r = {k: None for k in results.REQUIRED}
  ok = status == "ok"
  median = batch * 1024 / tps_per_device
  r.update(status=status, message="", model=model, attention=attention, strategy=strategy,
           per_device_batch=batch, num_devices=devices, global_batch=batch * devices,
           device_kind=kind, tokens_per_s_per_device=tps_per_device if ok else None,
           tokens_per_s=tps_per_device * devices if ok else None, mfu=0.4,
           token_per_dollar=123.0 if ok else None,
           token_per_dollar_paper=tps_per_device / RATIO[kind] if ok else None,
           price_source="test", peak_memory_bytes=batch * 2**30, params=1, seq_len=1024,
           step_time_s={"median": median} if ok else None,
           step_times_s=[median] * 30 if ok else None, breakdown=breakdown,
           git_commit=commit, timestamp=timestamp, stack=stack, tag=tag)
  if campaign:
    r["campaign"] = campaign
  return r


def write(path, rows):
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return path


def run_report(*args):
  return subprocess.run([sys.executable, "-m", "slm_jax.report", *map(str, args)], cwd=ROOT,
                        capture_output=True, text=True)


def test_best_takes_the_max_over_everything_off_the_axes():
  rs = report.prepare([
      record(batch=4, tps_per_device=100), record(batch=4, attention="xla", tps_per_device=300),
      record(batch=8, tps_per_device=200), record(batch=8, devices=2, tps_per_device=250),
      record(batch=8, status="oom"), record(model="1b", batch=4, tps_per_device=50)])
  by_batch = report.best(rs, ("model", "per_device_batch"))
  assert by_batch[("100m", 4)]["attention"] == "xla"  # 300 beats 100
  assert by_batch[("100m", 8)]["num_devices"] == 2    # 250 beats 200; the oom has no value
  assert by_batch[("1b", 4)]["tokens_per_s_per_device"] == 50
  by_att = report.best(rs, ("model", "attention_series"))
  assert by_att[("100m", "flash_attention")]["tokens_per_s_per_device"] == 250
  assert by_att[("100m", "vanilla_attention")]["value"] == pytest.approx(300 / 1.46)
  assert len(by_att) == 3


def test_a_run_of_few_timed_steps_is_not_a_point():
  short = dict(record(batch=64, tps_per_device=900), config={"steps": 3, "repeats": 1})
  timed = dict(record(batch=32, tps_per_device=500), config={"steps": 5, "repeats": 2})
  points = report.prepare([short, timed])
  assert [r["per_device_batch"] for r in points] == [32]
  assert report.best(points, ("model",))[("100m",)]["tokens_per_s_per_device"] == 500


def test_a_run_with_an_xla_option_beyond_its_preset_is_not_a_point():
  h200 = "NVIDIA H200"
  preset, fewer, extra = (record(kind=h200, devices=2, tag=t) for t in ("p", "f", "x"))
  preset["config"] = {"xla_options": "xla_gpu_enable_triton_gemm=false"}
  fewer["config"] = {"xla_options": ""}  # before the preset gained its option
  extra["config"] = {"xla_options": "xla_gpu_enable_triton_gemm=false "
                                    "xla_gpu_enable_latency_hiding_scheduler=true"}
  assert [r["tag"] for r in report.prepare([preset, fewer, extra])] == ["p", "f"]


def test_a_one_gpu_run_has_no_scheme_and_no_node_count():
  multi, single, ddp_on_one = report.prepare([
      record(strategy="fsdp_grad_op", devices=16, kind=H100), record(strategy="single"),
      record(strategy="ddp", devices=1)])
  assert (multi["gpu_series"], multi["scheme"], multi["num_nodes"]) == (
      "H100-80GB", "FSDP-Grad+Optimizer", 2)
  assert multi["attention_series"] == "flash_attention"
  for r in (single, ddp_on_one):  # `strategy: ddp` on one device is still a one-GPU run
    assert (r["scheme"], r["num_nodes"], r["strategy_series"]) == (None, None, report.ONE_GPU)
  assert "single" not in report.STRATEGY_SERIES


def test_a_record_without_a_campaign_is_in_its_commits():
  new, old = record(campaign="grid-h200"), record(commit="b" * 40)
  assert report.campaign_of(new) == "grid-h200" and report.campaign_of(old) == "b" * 40
  assert report.campaign_label("b" * 40) == "commit bbbbbbbb"
  assert report.in_campaigns("b" * 40, ("bbbbbbb",)) and not report.in_campaigns(
      "grid-h200", ("grid",))


def mixed_records():
  """Two GPU types and three campaigns, each with its own speed, so any mixing shows."""
  rows = []
  speed = {("H200", "early"): 1.0, ("H200", "late"): 1.5, ("H100", "early"): 0.7}
  stamps = {"H200-early": "2026-01-01", "H200-late": "2026-01-02", "H100-early": "2025-12-31"}
  for (gpu, campaign), s in speed.items():
    kind = H200 if gpu == "H200" else H100
    stamp = stamps[f"{gpu}-{campaign}"] + "T00:00:00"
    for model in ("100m", "2b"):
      for att, k in (("cudnn", 2.0), ("xla", 1.0)):
        if campaign == "late" and att == "xla":
          continue  # the later campaign re-measured flash alone (as issue 20 describes)
        for batch in (4, 8, 16):
          rows.append(record(model, att, "single", batch, 1, kind, s * k * 1000 * batch ** 0.1,
                             campaign=f"{gpu}-{campaign}", timestamp=stamp))
      for strategy in ("ddp", "fsdp_full"):  # 2-GPU runs, only in the early campaigns
        if campaign == "early":
          rows.append(record(model, "cudnn", strategy, 8, 2, kind, s * 900,
                             campaign=f"{gpu}-{campaign}", timestamp=stamp))
  rows.append(record("2b", "xla", "single", 32, 1, H200, status="oom", campaign="H200-early"))
  return rows


def test_no_figure_curve_mixes_gpu_types_or_campaigns():
  ours = report.prepare(mixed_records(), oom=True)
  paper = report.read_paper()
  for make in report.FIGURES:
    fig = make(ours, paper)
    assert fig.curves, fig.id
    for c in fig.curves:
      sources = {(r["gpu_series"], r["campaign"]) for r in c.selection.records}
      sources |= {(p.record["gpu_series"], p.record["campaign"]) for p in c.points}
      assert len(sources) == 1, (fig.id, c.model, c.series, sources)
    # Curves compared in one figure (attentions in Fig 1, schemes in Fig 3/4) share a source.
    if fig.id in ("Fig1", "Fig3"):
      assert len({(c.selection.gpu, c.selection.campaign) for c in fig.curves}) == 1
    # The title says where each curve is from and how many runs each point is the best of.
    assert fig.selections and "best of" in fig.runs_note()


def test_no_ratio_mixes_gpu_types_or_campaigns(tmp_path):
  records = mixed_records()
  ours = report.prepare(records, oom=True)
  fig1 = report.fig1_attention(ours, report.read_paper())
  # Fig 1 needs both attentions: the early H200 campaign has every point, the late one half.
  assert fig1.selections[0][1].campaign == "H200-early"
  # Mixing the late campaign's flash with the early one's vanilla would give 3x.
  assert report.attention_ratios(fig1) == {"100m": pytest.approx(2.0), "2b": pytest.approx(2.0)}
  # PyTorch ratios: only from the same campaign and GPU type.
  torch_new = dict(record("100m", "sdpa", "single", 16, 1, H200, 500, campaign="H200-late",
                          stack="torch"), torch_compile_scope="model+loss",
                   torch_sdpa_backend="cudnn")
  torch_elsewhere = dict(torch_new, campaign="H200-other", tokens_per_s_per_device=1.0)
  table = report.stacks_table(report.prepare(records), report.prepare(
      [torch_new, torch_elsewhere], stack="torch"), [])
  [row] = table.rows
  jax_best = max(r["tokens_per_s_per_device"] for r in records
                 if r.get("campaign") == "H200-late" and r["model"] == "100m")
  assert row[3] == "H200-late" and row[7] == f"{jax_best / 500:.2f}"
  # On two GPUs each stack's best is over its schemes, in a row of its own, named.
  two = [dict(record("100m", "cudnn", s, 16, 2, H200, v, campaign="H200-late"))
         for s, v in (("ddp", 900.0), ("fsdp_full", 950.0))]
  torch_two = [dict(torch_new, strategy=s, num_devices=2, tokens_per_s_per_device=v)
               for s, v in (("ddp", 700.0), ("fsdp_grad_op", 760.0))]
  table = report.stacks_table(report.prepare(records + two), report.prepare(
      [torch_new, *torch_two], stack="torch"), [])
  one, pair = table.rows
  assert one[2] == "1" and pair[2] == "2"
  assert pair[7] == f"{950 / 760:.2f}"
  assert "fsdp_grad_op, sdpa" in pair[5] and "fsdp_full, cudnn" in pair[6]
  assert "ddp" not in one[5] + one[6]
  # Q2 compares GPU types only within one campaign: these campaigns each hold one.
  text, _ = report.q2(report.fig2_gpu_types(ours, []))
  assert text.startswith("not measured: no campaign measured two GPU types")
  shared = [dict(r, campaign="both") for r in records if r.get("campaign") in
            ("H200-early", "H100-early")]
  text, _ = report.q2(report.fig2_gpu_types(report.prepare(shared), []))
  assert text.startswith("In both,") and "100M H200" in text


def test_campaign_flag_chooses_what_is_drawn(tmp_path):
  ours = report.prepare(mixed_records(), oom=True)
  fig1 = report.fig1_attention(ours, [], campaigns=("H200-late",))
  assert {c.selection.campaign for c in fig1.curves} == {"H200-late"}
  assert {c.series for c in fig1.curves} == {"flash_attention"}
  path = write(tmp_path / "r.jsonl", mixed_records())
  proc = run_report(path, f"--out={tmp_path / 'out'}", "--campaign=H200-late")
  assert proc.returncode == 0, proc.stderr
  md = (tmp_path / "out/report.md").read_text()
  assert "On H200, H200-late" in md and "100M only flash attention measured" in md
  proc = run_report(path, f"--out={tmp_path / 'out'}", "--campaign=nope")
  assert proc.returncode == 2 and proc.stderr.startswith("error: --campaign")


def test_the_campaign_with_the_most_points_is_drawn_ties_to_the_newest():
  old = [record(batch=b, kind=H200, campaign="old", timestamp="2026-01-01T00:00:00")
         for b in (4, 8, 16)]
  new = [record(batch=b, kind=H200, campaign="new", timestamp="2026-02-01T00:00:00")
         for b in (4, 8)]
  oom = record(batch=16, kind=H200, status="oom", campaign="new",
               timestamp="2026-02-01T00:00:00")
  key = ("model", "global_batch")
  assert report.choose(report.prepare(old + new, oom=True), key).campaign == "old"
  # An out-of-memory point is a measured point: now both have three, and the newer wins.
  assert report.choose(report.prepare(old + new + [oom], oom=True), key).campaign == "new"
  assert report.choose(report.prepare(old + new + [oom], oom=True), key,
                       campaigns=("old",)).campaign == "old"


def test_a_scheme_figure_is_drawn_from_the_campaign_whose_schemes_share_points():
  # "apart" ran more points, each scheme at its own batch; "side" ran both schemes at one batch.
  apart = [record(strategy=s, batch=b, devices=2, kind=H200, campaign="apart",
                  timestamp="2026-02-01T00:00:00")
           for s, b in (("ddp", 4), ("ddp", 8), ("fsdp_full", 16), ("fsdp_grad_op", 32))]
  side = [record(strategy=s, batch=8, devices=2, kind=H200, campaign="side")
          for s in ("ddp", "fsdp_full")]
  ours = report.prepare(apart + side, oom=True)
  schemes = [r for r in ours if r["scheme"]]
  key = ("model", "scheme", "global_batch")
  assert report.choose(schemes, key).campaign == "apart"
  assert report.choose(schemes, key, compared="scheme").campaign == "side"
  assert report.fig4_schemes(ours, []).selections[0][1].campaign == "side"


def test_a_scheme_figure_shares_points_on_one_host_not_across_hosts():
  # "hosts" ran each scheme at both batches, but every scheme on a host of its own: its ratios
  # would pair machines. "one" ran both schemes at one batch on one host.
  def on(host, **kw):
    return dict(record(devices=2, kind=H200, **kw), gpus=[{"index": "0", "uuid": host}])
  hosts = [on(f"GPU-{s}", strategy=s, batch=b, campaign="hosts", timestamp="2026-02-01T00:00:00")
           for s in ("ddp", "fsdp_full") for b in (8, 16)]
  one = [on("GPU-x", strategy=s, batch=8, campaign="one") for s in ("ddp", "fsdp_full")]
  ours = report.prepare(hosts + one, oom=True)
  schemes = [r for r in ours if r["scheme"]]
  key = ("model", "scheme", "global_batch")
  assert report.choose(schemes, key, compared="scheme").campaign == "one"
  # Records that do not name their GPUs count as one host, as before the field.
  for r in hosts:
    del r["gpus"]
  ours = report.prepare(hosts + one, oom=True)
  assert report.choose([r for r in ours if r["scheme"]], key, compared="scheme").campaign == "hosts"


def test_scheme_curves_and_questions_come_from_multi_gpu_runs_only():
  one_gpu = [record(m, "cudnn", s, b, 1, H200, 1000 * b ** 0.1)
             for m in ("100m", "1b") for s in ("single", "ddp", "fsdp_full") for b in (4, 8)]
  ours = report.prepare(one_gpu, oom=True)
  fig3, fig4 = report.fig3_nodes(ours, []), report.fig4_schemes(ours, [])
  assert fig3.curves == [] and report.unmeasured_panels(fig3) == list(report.MODELS)
  assert {c.series for c in fig4.curves} == {report.ONE_GPU}
  assert report.unmeasured_panels(fig4) == ["500m", "2b"]
  assert report.q3(fig3)[0].startswith("not measured")
  assert "Schemes: not measured" in report.q4(fig4)[0]
  assert "DDP" not in report.q4(fig4)[0]
  findings = report.verdicts({f.id: f for f in (report.fig1_attention(ours, []),
                                                report.fig2_gpu_types(ours, []), fig3, fig4)},
                             [])
  assert [v for _, v, _ in findings][1:6] == ["not measured"] * 5  # no vanilla, one GPU type


def test_a_scheme_ratio_across_commits_of_one_campaign_names_both_commits():
  # A campaign can span commits (runs added later under its name): a ratio between two of its
  # runs says when they ran different code; one commit says nothing more.
  paper = report.read_paper()
  rows = [record("500m", "cudnn", "single", 4, 1, H200, 1000, campaign="c"),
          record("500m", "cudnn", "ddp", 4, 2, H200, 1100, campaign="c", commit="a" * 40),
          record("500m", "cudnn", "fsdp_full", 4, 2, H200, 1000, campaign="c",
                 commit="b" * 40)]
  ours = report.prepare(rows, oom=True)
  figs = {f.id: f for f in (make(ours, paper) for make in report.FIGURES)}
  v = [how for _, _, how in report.verdicts(figs, paper)]
  assert "500M best DDP, 1.100x FSDP-Full, commits aaaaaaa / bbbbbbb" in v[3]
  assert "1.10x at global batch 8 (DDP over FSDP-Full, commits aaaaaaa / bbbbbbb)" in v[5]
  rows[2]["git_commit"] = "a" * 40
  ours = report.prepare(rows, oom=True)
  figs = {f.id: f for f in (make(ours, paper) for make in report.FIGURES)}
  assert not any("commits" in how for _, _, how in report.verdicts(figs, paper))


def test_q4_names_the_scheme_spread_of_other_campaigns_on_the_drawn_gpu_type_apart():
  drawn = [record("100m", "cudnn", s, b, 2, H200, t, campaign="drawn")
           for s, t in (("ddp", 1000.0), ("fsdp_full", 900.0)) for b in (8, 16)]
  other = [record("1b", "cudnn", "ddp", 64, 2, H200, 1100.0, campaign="best-batch"),
           record("1b", "cudnn", "fsdp_full", 64, 2, H200, 1000.0, campaign="best-batch"),
           record("1b", "cudnn", "ddp", 64, 2, A100, 500.0, campaign="elsewhere"),
           record("1b", "cudnn", "fsdp_full", 64, 2, A100, 400.0, campaign="elsewhere"),
           record("500m", "cudnn", "ddp", 16, 2, H200, 700.0, campaign="one-scheme")]
  fig4 = report.fig4_schemes(report.prepare(drawn + other, oom=True), [])
  assert dict(fig4.selections)["schemes"].campaign == "drawn"
  assert {c.model for c in fig4.curves} == {"100m"}  # the other campaigns are not drawn
  text = report.q4(fig4)[0]
  assert "100M: 1.11x at global batch 16 (DDP over FSDP-Full)" in text
  assert "Also, on H200, best-batch (not drawn): 1B: 1.10x at global batch 128 (DDP over " \
      "FSDP-Full)." in text
  assert "elsewhere" not in text and "one-scheme" not in text  # another GPU type; one scheme
  findings = report.verdicts({f.id: f for f in (report.fig1_attention(report.prepare(
      drawn + other, oom=True), []), report.fig2_gpu_types(report.prepare(drawn + other,
      oom=True), []), report.fig3_nodes(report.prepare(drawn + other, oom=True), []), fig4)},
      [])
  assert all("best-batch" not in how for _, _, how in findings)


def test_verdicts_follow_the_numbers():
  paper = report.read_paper()
  rows = []
  for m, (att_gain, rising) in {"100m": (2.5, True), "2b": (1.5, True)}.items():
    for att, k in (("cudnn", att_gain), ("xla", 1.0)):
      for b in (4, 8, 16):
        rows.append(record(m, att, "single", b, 1, H200, 1000 * k * (b if rising else 1)))
    rows.append(record(m, "xla", "single", 32, 1, H200, status="oom"))
    rows.append(record(m, "cudnn", "single", 32, 1, H200, status="oom"))
    for s, speed in (("ddp", 1000), ("fsdp_full", 1200), ("fsdp_grad_op", 1300)):
      rows.append(record(m, "cudnn", s, 4, 2, H200, speed,
                         breakdown={"ms": {}, "collectives_exposed_ms": speed / 100,
                                    "compute_skew_ms": speed / 1000}))
  ours = report.prepare(rows, oom=True)
  figs = {f.id: f for f in (make(ours, paper) for make in report.FIGURES)}
  v = {i: (verdict, how) for i, (_, verdict, how) in enumerate(report.verdicts(figs, paper), 1)}
  table = report.q3(figs["Fig3"])[1]
  col = table.headers.index("exposed collectives ms/step")
  assert [row[col] for row in table.rows if row[0] == "100M"] == ["10.0", "12.0", "13.0"]
  col = table.headers.index("GPU compute skew ms/step")
  assert [row[col] for row in table.rows if row[0] == "100M"] == ["1.0", "1.2", "1.3"]
  assert v[1][0] == "agrees" and "100M 2.50x" in v[1][1]
  assert v[2][0] == "disagrees"  # both attentions ran out of memory at the same batch
  assert v[3][0] == "not measured"
  assert v[4][0] == "disagrees" and "100M best FSDP-Grad+Optimizer" in v[4][1]
  assert v[5] == ("agrees", v[5][1]) and "grad_op / full = 1.08x" in v[5][1]
  assert v[6][0] == "disagrees" and "1.30x at global batch 8" in v[6][1]
  assert v[7][0] == "disagrees" and "keeps rising up to the largest batch that ran at every " \
      "size" in v[7][1] and "OOM at 32" in v[7][1]
  flat = [dict(r, tokens_per_s_per_device=1000.0, token_per_dollar_paper=1000 / RATIO[H200])
          if r["status"] == "ok" and r["num_devices"] == 1 else r for r in rows]
  ours = report.prepare(flat, oom=True)
  figs = {f.id: f for f in (make(ours, paper) for make in report.FIGURES)}
  assert report.verdicts(figs, paper)[6][1] == "agrees"


def test_error_bars_span_the_middle_half_of_the_steps_and_oom_is_no_zero():
  r = record(batch=8)
  r["step_times_s"] = [1.0] * 10 + [2.0] * 10 + [4.0] * 10 + [100.0]
  r["step_time_s"] = {"median": 2.0}
  low, high = report.spread(r, 10.0)
  assert low == pytest.approx(5.0) and high == pytest.approx(20.0)  # quartiles 1 and 4 s
  ours = report.prepare([record(batch=4), record(batch=8, status="oom")], oom=True)
  [curve] = report.fig1_attention(ours, []).curves
  assert [p.x for p in curve.points] == [4] and curve.oom == [8]
  paper_oom = [p for p in report.read_paper() if p["oom"]]
  assert paper_oom and all(p["token_per_dollar"] is None for p in paper_oom)


def test_rows_that_are_not_run_records_are_skipped_with_a_note(tmp_path):
  path = write(tmp_path / "mixed.jsonl", [
      {"impl": "cudnn", "heads": 13, "median_ms": 1.0, "device_kind": H200},
      record(model="1b", kind=H200)])
  (tmp_path / "mixed.jsonl").write_text(path.read_text() + "not json\n")
  proc = run_report(path, f"--out={tmp_path / 'out'}")
  assert proc.returncode == 0, proc.stderr
  md = (tmp_path / "out/report.md").read_text()
  # The row that is not a run record is noted in the report; the unreadable line is skipped by
  # results.read with one warning naming the file and line.
  assert "1 run records" in md and "mixed.jsonl (1)" in md
  assert "mixed.jsonl" in proc.stderr and "line 3" in proc.stderr


def test_old_torch_records_are_left_out_and_counted(tmp_path):
  old = record("1b", "sdpa", "single", 16, 1, H200, 10.0, stack="torch")
  new = dict(record("1b", "sdpa", "single", 32, 1, H200, 500.0, stack="torch"),
             torch_compile_scope="model+loss", torch_sdpa_backend="flash")
  assert report.prepare([old, new], stack="torch") == report.prepare([new], stack="torch")
  path = write(tmp_path / "r.jsonl", [old, new, record("1b", kind=H200, tps_per_device=600.0)])
  assert run_report(path, f"--out={tmp_path / 'out'}").returncode == 0
  md = (tmp_path / "out/report.md").read_text()
  assert md.count("1 PyTorch records from before `torch_compile_scope`") == 1
  [row] = [l for l in md.splitlines() if l.startswith("| 1B | H200 | 1 | commit aaaaaaaa |")]
  assert "sdpa (flash), compiled model+loss, b32" in row and "| 1.20 |" in row


def test_aligned_width_variants_are_compared_within_one_campaign():
  records = [record(model="2b", tps_per_device=100, campaign="c1"),
             record(model="2b-w128", tps_per_device=90, campaign="c1"),
             record(model="2b-w128", tps_per_device=95, campaign="c2",
                    timestamp="2026-02-01T00:00:00"),
             record(model="custom", tps_per_device=500)]
  assert [r["model"] for r in report.prepare(records)] == ["2b"]
  variants = report.prepare(records, variants=True)
  assert {r["model"] for r in variants} == {"2b-w128"}
  [row] = report.variants_table(variants, report.prepare(records)).rows
  # c2 is newer but never measured the 2B model: the pair comes from c1.
  assert row[3] == "90" and row[6] == "0.900" and row[10] == "c1"


def test_report_from_a_fixture_has_every_figure_table_and_answer(tmp_path):
  records = []
  for model in ("100m", "500m", "1b", "2b"):
    for att, speed in (("xla", 1.0), ("cudnn", 2.0)):
      for strategy in ("ddp", "fsdp_full", "fsdp_grad_op"):
        for devices in (1, 8, 16):
          for batch in (4, 16, 64):
            records.append(record(model, att, strategy, batch, devices,
                                  tps_per_device=speed * batch ** 0.5 * (1 + devices / 100)))
  records.append(record("1b", "cudnn", "ddp", 64, 1, kind=H100,
                        breakdown={"ms": {"matmul": 60.0, "attention": 20.0, "other": 5.0}}))
  records.append(record("2b", "xla", "ddp", 64, 1, status="oom"))
  path = write(tmp_path / "results.jsonl", records)
  proc = run_report(path, f"--out={tmp_path / 'out'}")
  assert proc.returncode == 0, proc.stderr
  out = tmp_path / "out"
  for name in ("fig1.png", "fig2.png", "fig3.png", "fig4.png", "breakdown.png"):
    assert (out / name).stat().st_size > 10_000, name
  # Drawn 1200 px wide, so the page (at most 1200 px) shows the text at its size.
  assert matplotlib.image.imread(out / "fig1.png").shape[1] == 1200
  md = (out / "report.md").read_text()
  assert "| 1B | 16 | cudnn |" in md  # best 1B on A100-80GB: most GPUs, batch 64
  assert "100M flash / vanilla = 2.00x (paper 2.72x)" in md
  assert md.count("- Paper:") == 4 and md.count("- slm_jax:") == 4
  assert md.count("| agrees |") + md.count("| disagrees |") + md.count("| not measured |") == 7
  page = (out / "index.html").read_text()
  assert page.count("<img") == 5 and "Q4." in page
  assert "|---" not in page and "<pre>" not in page  # tables as HTML, no raw markdown
  # Each question's table sits between its heading and its figure, with where values came from.
  for q in ("Q1", "Q3", "Q4"):
    section = page.split(f"<h2>{q}.")[1].split("<img")[0]
    assert "<table>" in section, q
    for column in ("GPU", "stack", "commit", "campaign", "tag"):
      assert f"<th>{column}</th>" in section, (q, column)


def test_missing_results_file_is_a_clear_error(tmp_path):
  proc = run_report(tmp_path / "nope.jsonl")
  assert proc.returncode == 2 and "no such results file" in proc.stderr


def test_a_record_of_a_newer_schema_or_with_strings_for_numbers_is_read_not_fatal(tmp_path):
  newer = dict(record(model="1b", kind=H200), schema_version=results.SCHEMA_VERSION + 1)
  strings = dict(record(model="1b", kind=H200, batch=32), tokens_per_s_per_device="1000",
                 mfu="high", step_time_s={"median": "1.0"})
  path = write(tmp_path / "r.jsonl", [newer, strings])
  proc = run_report(path, f"--out={tmp_path / 'out'}")
  assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
  warnings = proc.stderr.strip().splitlines()
  assert len(warnings) == 2 and all(w.startswith("warning: ") for w in warnings), warnings
  assert "newer than this slm_jax reads" in warnings[0]
  assert "mfu" in warnings[1] and "tokens_per_s_per_device" in warnings[1]


def test_an_out_that_cannot_be_a_folder_is_one_error_line_and_the_file_is_kept(tmp_path):
  path = write(tmp_path / "r.jsonl", [record(model="1b", kind=H200)])
  for out in (path, path / "sub"):
    proc = run_report(path, f"--out={out}")
    assert proc.returncode == 2, proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: --out={out}: cannot make that folder")
  assert results.read(path)[0]["model"] == "1b"


def train_record(model, kind, price, seconds_per_step, steps=200, tag=None, eval_shift=0.1):
  r = record(model=model, kind=kind)
  losses = [6.0 * 0.99 ** i + 2.0 for i in range(steps)]
  dollars = [price * seconds_per_step * (i + 1) / 3600 for i in range(steps)]
  r.update(mode="train", tag=tag, price_per_device_hour=price, steps_trained=steps,
           final_loss=losses[-1], final_eval_loss=losses[-1] + eval_shift, tokens_per_s=1e5,
           loss_vs_dollars=[list(p) for p in zip(dollars, losses)],
           eval_losses=[[i + 1, dollars[i], losses[i] + eval_shift] for i in range(0, steps, 50)])
  return r


def test_loss_vs_dollars_figure_and_dollars_to_held_out_target_table(tmp_path):
  # Same losses per step; the A100 run is 2x slower per step at 1.30/3.00 of the H100's price.
  records = [train_record("100m", H100, 3.0, 1.0),
             train_record("100m", A100, 1.3, 2.0, steps=100),
             record()]  # a benchmark record: not a training curve
  path = write(tmp_path / "results.jsonl", records)
  proc = run_report(path, f"--out={tmp_path / 'out'}", "--reprice=A100-40GB")
  assert proc.returncode == 0, proc.stderr
  assert (tmp_path / "out/loss_vs_dollars.png").stat().st_size > 10_000
  md = (tmp_path / "out/report.md").read_text()
  curves = report.train_curves(records, ("A100-40GB",))
  assert len(curves) == 4 and sum(c["repriced"] for c in curves) == 2
  # The default target is held-out: the lowest every evaluated run reaches (the A100's step 51).
  kind, held = report.loss_targets(curves, None)
  assert kind == "held-out" and held == pytest.approx(6.0 * 0.99 ** 50 + 2.1)
  assert f"USD to held-out loss {held:.3f}" in md
  assert report.eval_dollars_to(curves[2], held) == pytest.approx(51 * 2 * 1.3 / 3600)
  train = report.common_target(curves)  # the shorter A100 run's lowest training loss
  assert train == pytest.approx(min(curves[2]["loss"])) and f"training loss {train:.3f}" in md
  # Rows ordered by dollars to the held-out target: the A100 (cheapest) first.
  table = report.loss_dollar_table(curves, held)
  col = table.headers.index(f"USD to held-out loss {held:.3f}")
  dollars = [float(row[col]) for row in table.rows]
  assert dollars == sorted(dollars)
  assert table.rows[0][0] == "100M on 1 x H100 at A100-40GB price (re-priced)"
  rows = [l for l in md.splitlines() if l.startswith("| 100M on 1 x")]
  assert len(rows) == 4 and "at A100-40GB price (re-priced)" in md
  assert "loss_vs_dollars.png" in (tmp_path / "out/index.html").read_text()
  # --target_loss sets the held-out target; without evaluations the training loss is used.
  assert report.loss_targets(curves, 4.5) == ("held-out", 4.5)
  for c in curves:
    c["eval"] = []
  assert report.loss_targets(curves, None) == ("training", train)
  # --runs picks training runs by tag; untagged ones match no pattern.
  tagged = [train_record("100m", H100, 3.0, 1.0, tag=t)
            for t in ("100m_h100_loss_dollar", "gap-100m/train")]
  chosen = report.train_curves(records + tagged, (), ("*loss_dollar",))
  assert [c["record"]["tag"] for c in chosen] == ["100m_h100_loss_dollar"]
  proc = run_report(path, "--reprice=TPU")
  assert proc.returncode == 2 and "no price for ['TPU']" in proc.stderr


def test_usd_spent_is_the_records_whole_run_final_evaluation_included():
  r = train_record("100m", H100, 3.0, 1.0)
  r["dollars_spent"] = r["loss_vs_dollars"][-1][0] + 0.01  # the last evaluation and checkpoint
  curves = report.train_curves([r], ("A100-40GB",))
  table = report.loss_dollar_table(curves, 5.0)
  assert table.headers[-1] == "USD spent"
  spent = [float(row[-1]) for row in table.rows]
  scale = report.hardware.gpu("A100-40GB").usd_per_hour / 3.0
  assert spent == pytest.approx(sorted([r["dollars_spent"], r["dollars_spent"] * scale]),
                                abs=1e-4)


def test_the_report_of_the_committed_benchmarks_runs(tmp_path):
  paths = sorted(str(p) for p in (ROOT / "benchmarks").glob("*.jsonl"))
  proc = run_report(*paths, f"--out={tmp_path}")
  assert proc.returncode == 0, proc.stderr
  md = (tmp_path / "report.md").read_text()
  assert "Skipped rows that are not run records" in md
  assert not re.search(r"best DDP at 1 GPU", md)


def test_the_cpu_demo_is_drawn_in_a_panel_of_its_own_and_answers_the_questions(tmp_path):
  def cpu(batch, tps):
    r = dict(record(model="tiny", attention="xla", strategy="single", batch=batch,
                    tps_per_device=tps), config={"steps": 5, "repeats": 2})
    r.update(device_kind="cpu", token_per_dollar=None, token_per_dollar_paper=None,
             peak_memory_bytes=None)
    return r
  records = [cpu(2, 900.0), cpu(4, 1200.0), cpu(8, 1500.0)]
  points = report.prepare(records)
  assert [r["value"] for r in points] == [900.0, 1200.0, 1500.0]  # tokens/s: no CPU price
  assert {r["value_unit"] for r in points} == {"tokens/s per device (no price)"}
  fig1 = report.fig1_attention(points, report.read_paper())
  assert report.sizes_of(fig1) == ["100m", "500m", "1b", "2b", "tiny"]
  [curve] = fig1.curves
  assert curve.model == "tiny" and [p.x for p in curve.points] == [2, 4, 8]
  write(tmp_path / "results.jsonl", records)
  out = tmp_path / "out"
  proc = run_report(tmp_path / "results.jsonl", f"--out={out}")
  assert proc.returncode == 0, proc.stderr
  md = (out / "report.md").read_text()
  assert "tiny only vanilla attention measured" in md
  assert "tiny best at batch 8; largest that fit 8, 1.250x batch 4's" in md
  # The tables' Token/$ column holds a CPU's tokens/s (no price), and each such cell says so.
  best_row = md.split("## Best configuration")[1].split("| tiny |")[1].splitlines()[0]
  assert "| 1,500 | 40.0% | 1,500 tokens/s (no price) | - |" in best_row
  q1_row = md.split("## Q1.")[1].split("| tiny |")[1].splitlines()[0]
  assert q1_row.startswith(" vanilla attention | 1,500 tokens/s (no price) | 1,500 |")
  assert matplotlib.image.imread(out / "fig1.png").shape[1] == 1800  # a fifth panel
  findings = md.split("| 7 |")[1].splitlines()[0]
  assert "| not measured |" in findings  # the paper's findings are about the paper's sizes


def test_loss_vs_dollars_legend_fits_the_figure_with_long_labels(tmp_path, monkeypatch):
  # Campaign names and tags make labels of 80+ characters; two legend columns of them ran past
  # the figure's edges and were cut off.
  records = [train_record(m, H100, 3.0, 1.0, tag=f"fp8-loss-code-{m}/{arm}-a-long-arm-name")
             for m in ("100m", "500m") for arm in ("bf16", "fp8")]
  for r in records:
    r["campaign"] = "h200x2-fp8-loss-code-2026-11-30-with-a-long-campaign-name"
  curves = report.train_curves(records, ())
  closed = []
  monkeypatch.setattr(report.plt, "close", closed.append)
  report.plot_loss_vs_dollars(curves, tmp_path, 4.0)
  fig = closed[0]
  fig.canvas.draw()
  legend = fig.legends[0].get_window_extent()
  assert fig.bbox.x0 <= legend.x0 and legend.x1 <= fig.bbox.x1, (legend, fig.bbox)
  assert fig.bbox.y0 <= legend.y0


def test_against_pytorch_takes_slm_jax_on_pytorchs_chips_and_says_so():
  def on(r, *chips):
    return dict(r, gpus=[{"index": str(i), "uuid": u} for i, u in enumerate(chips)])
  t = on(dict(record("2b", "sdpa", "fsdp_grad_op", 48, 2, H200, 430.0, campaign="c",
                     stack="torch"), torch_compile_scope="layers+loss"), "GPU-a", "GPU-b")
  here = on(record("2b", "cudnn", "ddp", 48, 2, H200, 460.0, campaign="c"), "GPU-a", "GPU-b")
  faster_elsewhere = on(record("2b", "cudnn", "ddp", 48, 2, H200, 475.0, campaign="c"),
                        "GPU-c", "GPU-d")
  torch = report.prepare([t], stack="torch")
  [row] = report.stacks_table(report.prepare([here, faster_elsewhere]), torch, []).rows
  assert row[7] == f"{460 / 430:.2f}" and row[-1] == "same chips"
  [row] = report.stacks_table(report.prepare([faster_elsewhere]), torch, []).rows
  assert row[7] == f"{475 / 430:.2f}" and row[-1] == "other chips"
  [row] = report.stacks_table(report.prepare([dict(faster_elsewhere, gpus=None)]), torch,
                              []).rows
  assert row[-1] == "-"

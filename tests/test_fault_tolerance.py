"""Resume, atomic checkpoints, SLURM requeue, run directories, wandb run ids, DDP equivalence."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from framework.checkpoint import AtomicCheckpointIO
from framework.config import run_name
from framework.errors import UserError
from framework.resume import newest_valid_checkpoint, resolve_resume
from framework.trainer import check_precision, cpu_has_native_bf16
from tests.conftest import ROOT, compose, run_cli

# A tiny run of 2 epochs x 6 batches with dropout on, a checkpoint after every step.
RESUMABLE = (
    "model=tiny", "callbacks=none", "trainer.accelerator=cpu", "trainer.max_epochs=2",
    "trainer.num_sanity_val_steps=0", "trainer.log_every_n_steps=1",
    "data.max_train_samples=96", "data.max_eval_samples=32",
    "callbacks.step_checkpoint.every_n_train_steps=1",
    "+callbacks.final._target_=tests.callbacks.SaveFinalWeights",
    "+callbacks.final.path=${paths.output_dir}/final.pt",
    "+callbacks.rows._target_=tests.callbacks.RecordTrainRows",
    "+callbacks.rows.path=${paths.output_dir}/rows",
)  # fmt: skip


def _start(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "framework.train", *args],
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"run ended before {path} appeared: {proc.stderr.read()[-2000:]}")
        if time.monotonic() > end:
            raise AssertionError(f"{path} did not appear")
        time.sleep(0.02)


def _state(ckpt: Path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, weights_only=False, map_location="cpu")["state_dict"]


def _val(run_dir: Path) -> dict:
    m = json.loads((run_dir / "metrics.json").read_text())
    return {k: v for k, v in m.items() if k.startswith("val/")}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    proc = run_cli(*RESUMABLE, f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


def test_sigkill_then_resume_auto_equals_an_uninterrupted_run(uninterrupted, tmp_path):
    run_dir = tmp_path / "run"
    # Killed inside epoch 1, then again inside epoch 2:
    # a chain of restarts, each from the newest checkpoint.
    for step in (5, 8):
        proc = _start(*RESUMABLE, f"hydra.run.dir={run_dir}", "resume=auto")
        _wait_for(run_dir / "checkpoints" / f"step{step}.ckpt", proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (run_dir / "metrics.json").exists()
    # The same command again continues the run from its newest checkpoint.
    again = run_cli(*RESUMABLE, f"hydra.run.dir={run_dir}", "resume=auto")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Resuming from " + str(run_dir / "checkpoints" / "step") in again.stdout
    # Same weights at the newest step checkpoint (same data order and dropout masks), same metrics.
    a, b = (
        _state(uninterrupted / "checkpoints" / "step11.ckpt"),  # newest: none after an epoch's end
        _state(run_dir / "checkpoints" / "step11.ckpt"),
    )
    assert all(torch.equal(a[k], b[k]) for k in a)
    # ... and at the final step (the end of the run): bit for bit.
    _assert_same_final_weights(uninterrupted, run_dir)
    assert _val(run_dir) == _val(uninterrupted)
    # The CSV log keeps the rows written before the kill.
    steps = [line.split(",")[1] for line in (run_dir / "csv" / "metrics.csv").read_text().split()]
    assert "0" in steps and "11" in steps


def _assert_same_final_weights(a_dir: Path, b_dir: Path) -> None:
    a, b = (torch.load(d / "final.pt", weights_only=False) for d in (a_dir, b_dir))
    assert a["global_step"] == b["global_step"] == 12  # 2 epochs x 6 batches
    assert a["state_dict"].keys() == b["state_dict"].keys()
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])


def test_resume_from_an_end_of_epoch_checkpoint_equals_an_uninterrupted_run(
    uninterrupted, tmp_path
):
    # The only checkpoints the default quickstart writes: best and last, after each validation.
    run_dir = tmp_path / "run"
    args = (*RESUMABLE, "callbacks.step_checkpoint=null", f"hydra.run.dir={run_dir}", "resume=auto")
    proc = _start(*args)
    _wait_for(run_dir / "checkpoints" / "last.ckpt", proc)  # the end of epoch 1
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 6
    assert not (run_dir / "final.pt").exists()
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Resuming from " in again.stdout
    _assert_same_final_weights(uninterrupted, run_dir)
    assert _val(run_dir) == _val(uninterrupted)


def test_sigterm_checkpoints_exits_143_and_resumes_like_an_uninterrupted_run(
    uninterrupted, tmp_path
):
    # No step checkpoints: only the SIGTERM checkpoint holds step 3 (of 6 in epoch 0).
    run_dir = tmp_path / "run"
    args = (*RESUMABLE, "callbacks.step_checkpoint=null", f"hydra.run.dir={run_dir}", "resume=auto")
    stopped = run_cli(*args, "+callbacks.term._target_=tests.callbacks.SigtermAt",
                      "+callbacks.term.step=3")  # fmt: skip
    assert stopped.returncode == 143, stopped.stderr[-3000:]  # a scheduler sees no success
    last = stopped.stderr.strip().splitlines()[-1]
    preempted = run_dir / "checkpoints" / "preempted.ckpt"
    assert last.startswith("error: stopped by SIGTERM") and str(preempted) in last, last
    assert "resume=auto" in last and "Traceback" not in stopped.stderr
    assert torch.load(preempted, weights_only=False)["global_step"] == 3
    assert not (run_dir / "metrics.json").exists()
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"Resuming from {preempted}" in again.stdout
    _assert_same_final_weights(uninterrupted, run_dir)
    assert _val(run_dir) == _val(uninterrupted)
    assert not preempted.exists()  # superseded by the finished run's checkpoints
    # the stopped and the resumed run together trained exactly the uninterrupted run's rows
    trained = (run_dir / "rows.0.jsonl").read_text().splitlines()
    assert trained == (uninterrupted / "rows.0.jsonl").read_text().splitlines()
    assert len(trained) == 12  # 2 epochs x 6 batches: none skipped, none twice


def test_the_epoch_position_is_saved_by_the_data_module(uninterrupted):
    # Lightning's public data-module hook (state_dict), not its private loop layout.
    ckpt = torch.load(uninterrupted / "checkpoints" / "step11.ckpt", weights_only=False)
    assert ckpt["global_step"] == 11  # the 6th batch of epoch 1 trained: 5 before it
    assert ckpt["DataModule"]["train_position"] == {"epoch": 1, "batches": 5}


def test_resume_auto_on_an_empty_directory_starts_the_run(tmp_path):
    run_dir = tmp_path / "fresh"
    proc = run_cli("model=tiny", "debug=fast", "callbacks=none", "trainer.accelerator=cpu",
                   f"hydra.run.dir={run_dir}", "resume=auto")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"Starting {run_dir}" in proc.stdout and (run_dir / "metrics.json").is_file()


def test_a_kill_during_a_save_leaves_the_previous_checkpoint(tmp_path):
    path = tmp_path / "checkpoints" / "last.ckpt"
    good = {"state_dict": {"w": torch.ones(3)}, "global_step": 4, "loops": {}}
    AtomicCheckpointIO().save_checkpoint(good, path)

    class Dies(AtomicCheckpointIO):
        def _write(self, checkpoint, f):
            f.write(b"partial bytes")
            raise KeyboardInterrupt  # the process stops in the middle of the write

    with pytest.raises(KeyboardInterrupt):
        Dies().save_checkpoint({**good, "global_step": 5}, path)
    assert torch.load(path, weights_only=False)["global_step"] == 4
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]


def test_resume_picks_the_newest_valid_checkpoint(tmp_path):
    ckpts = tmp_path / "checkpoints"
    io = AtomicCheckpointIO()
    for step in (2, 6):
        io.save_checkpoint(
            {"state_dict": {}, "global_step": step, "loops": {}}, ckpts / f"s{step}.ckpt"
        )
    (ckpts / "s9.ckpt").write_bytes(b"PK\x03\x04 truncated")  # a newer file, but corrupt
    (ckpts / ".last.ckpt.tmp123").write_bytes(b"left by a SIGKILL")
    torch.save({"state_dict": {}}, ckpts / "weights_only.ckpt")
    assert newest_valid_checkpoint(tmp_path) == ckpts / "s6.ckpt"
    assert resolve_resume(tmp_path, "auto", None) == str(ckpts / "s6.ckpt")
    assert not (ckpts / ".last.ckpt.tmp123").exists()
    assert resolve_resume(tmp_path / "empty", "auto", None) is None
    with pytest.raises(UserError, match="not a complete training checkpoint"):
        resolve_resume(tmp_path, None, str(ckpts / "s9.ckpt"))
    with pytest.raises(UserError, match="use resume=auto"):
        resolve_resume(tmp_path, "yes", None)
    with pytest.raises(UserError, match="not both"):
        resolve_resume(tmp_path, "auto", str(ckpts / "s6.ckpt"))


def test_slurm_pre_timeout_signal_checkpoints_requeues_and_the_requeued_job_resumes(tmp_path):
    stub_dir = tmp_path / "bin"
    stub_dir.mkdir()
    calls = tmp_path / "scontrol_calls"
    stub = stub_dir / "scontrol"  # stands in for SLURM's requeue command
    stub.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    env = {
        "PATH": f"{stub_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NAME": "tasklight", "SLURM_NTASKS": "1", "SLURM_NTASKS_PER_NODE": "1",
        "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0",
        "SLURM_NODELIST": "localhost",
    }  # fmt: skip
    args = (
        *RESUMABLE,
        "trainer.max_epochs=30",
        f"paths.log_dir={tmp_path / 'logs'}",
        "resume=auto",
    )
    run_dir = tmp_path / "logs" / "runs" / "slurm" / "classification_4242"  # the job id, no clock
    proc = _start(*args, env=env)
    _wait_for(run_dir / "checkpoints" / "step3.ckpt", proc)
    proc.send_signal(signal.SIGUSR1)  # SLURM's warning before the time limit
    _wait_for(calls, proc)
    hpc = run_dir / "hpc_ckpt_1.ckpt"
    _wait_for(hpc, proc)
    proc.send_signal(signal.SIGKILL)  # the time limit
    proc.wait()
    assert calls.read_text().split() == ["requeue", "4242"]
    hpc_step = torch.load(hpc, weights_only=False)["global_step"]
    assert hpc_step >= 3
    # The requeued job: same command, same job id -> same directory, resumes and finishes.
    requeued = subprocess.run(
        [sys.executable, "-m", "framework.train", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **env},
    )  # fmt: skip
    assert requeued.returncode == 0, requeued.stderr[-3000:]
    assert "Resuming from " + str(run_dir) in requeued.stdout
    assert json.loads((run_dir / "metrics.json").read_text())["val/acc"] >= 0


def test_wandb_offline_run_keeps_its_id_after_a_restart(tmp_path):
    run_dir = tmp_path / "run"
    args = ("model=tiny", "debug=fast", "callbacks=none", "trainer.accelerator=cpu",
            "logger=wandb", f"hydra.run.dir={run_dir}", "resume=auto")  # fmt: skip
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    run_id = (run_dir / "wandb_run_id").read_text().strip()
    second = run_cli(*args)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Resuming from" in second.stdout
    runs = sorted(p.name for p in (run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(r.endswith(f"-{run_id}") for r in runs), runs


def test_ddp_sim_trains_like_one_process_with_the_same_global_batch(tmp_path):
    # Dropout off: two processes draw different masks than one. 4 global batches of 16.
    common = ("model=tiny", "debug=fast", "callbacks=none", "model.hidden_dropout=0",
              "task.dropout=0", "trainer.limit_val_batches=1.0",
              "data.eval_batch_size=8",
              "+callbacks.grads._target_=tests.callbacks.SaveFirstGradients")  # fmt: skip
    one = tmp_path / "one"
    save = "+callbacks.grads.path={}".format
    p1 = run_cli(*common, "trainer.accelerator=cpu", "data.batch_size=16",
                 save(tmp_path / "grads1.pt"), f"hydra.run.dir={one}")  # fmt: skip
    assert p1.returncode == 0, p1.stderr[-3000:]
    logs = tmp_path / "ddp_logs"
    p2 = run_cli(*common, "trainer=ddp_sim", "data.batch_size=8",
                 save(tmp_path / "grads2.pt"), f"paths.log_dir={logs}")  # fmt: skip
    assert p2.returncode == 0, p2.stderr[-3000:]
    # The first step's gradients (after DDP's all-reduce, before clipping): the mean over the
    # global batch in both runs. AdamW with clipping would hide a sum (2x) here; this does not.
    g1, g2 = torch.load(tmp_path / "grads1.pt"), torch.load(tmp_path / "grads2.pt")
    assert g1.keys() == g2.keys() and len(g1) > 10
    for k in g1:
        assert torch.allclose(g1[k], g2[k], rtol=1e-4, atol=1e-7), k
    run_dirs = [p.parent for p in logs.glob("runs/*/*/.hydra")]
    assert len(run_dirs) == 1, run_dirs  # no duplicate run directory from the second rank
    m1, m2 = _val(one), _val(run_dirs[0])
    assert m1.keys() == m2.keys() and all(abs(m1[k] - m2[k]) <= 1e-4 for k in m1), (m1, m2)
    a, b = (
        _state(one / "checkpoints" / "last.ckpt"),
        _state(run_dirs[0] / "checkpoints" / "last.ckpt"),
    )
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5


def test_a_nan_loss_on_one_process_stops_every_process_with_one_line(tmp_path):
    args = ("model=tiny", "debug=fast", "callbacks=none", "trainer=ddp_sim",
            "+callbacks.nan._target_=tests.callbacks.NanLossOnRank", "+callbacks.nan.rank=1",
            f"hydra.run.dir={tmp_path / 'run'}")  # fmt: skip
    proc = run_cli(*args, timeout=240)  # before: process 0 crashed in gloo (exit 1, traceback)
    assert proc.returncode == 3, proc.stderr[-3000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 2, proc.stderr[-3000:]  # one line from each process
    assert any("training loss is nan at step 1" in e for e in errors)
    assert any("not finite on another process at step 1" in e for e in errors)
    assert "Traceback" not in proc.stderr


def test_run_names_are_shared_by_a_job_and_unique_between_jobs():
    assert run_name("ner", {"SLURM_JOB_ID": "77"}) == "slurm/ner_77"
    array = {"SLURM_JOB_ID": "80", "SLURM_ARRAY_JOB_ID": "79", "SLURM_ARRAY_TASK_ID": "3"}
    assert run_name("ner", array) == "slurm/ner_79_3"
    assert run_name("ner", {"TORCHELASTIC_RUN_ID": "exp1"}) == "torchrun/ner_exp1"
    assert run_name("ner", {"TORCHELASTIC_RUN_ID": "none"}) == f"torchrun/ner_pid{os.getppid()}"
    plain = run_name("ner", {})
    assert plain.endswith(f"_ner_{os.getpid()}") and plain.count("/") == 1
    # Two jobs started in the same second get different directories.
    out = subprocess.run(
        [sys.executable, "-c", "from framework.config import run_name; print(run_name('ner', {}))"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert out.stdout.strip() != plain


def test_bf16_on_a_cpu_without_it_warns(monkeypatch):
    assert cpu_has_native_bf16("flags : fpu avx2 avx512f avx512_bf16") is True
    assert cpu_has_native_bf16("flags : fpu avx2 avx512f") is False
    monkeypatch.setattr("framework.trainer.cpu_has_native_bf16", lambda: False)
    with pytest.warns(UserWarning, match="without native bfloat16"):
        check_precision(compose("trainer=cpu", "trainer.precision=bf16-mixed").trainer)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_precision(compose("trainer=cpu").trainer)  # 32-true: no warning


def test_slurm_launcher_config_composes():
    # `-m hydra/launcher=slurm` submits through hydra-submitit-launcher; here only its config
    # is resolved (no cluster): target, layout and requeue settings.
    args = ("hydra/launcher=slurm", "hydra.launcher.gpus_per_node=4", "--cfg", "hydra")
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "_target_: hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher" in out
    assert "gpus_per_node: 4" in out and "tasks_per_node: ${.gpus_per_node}" in out
    assert "max_num_timeout: 3" in out and "signal_delay_s: 120" in out


def test_ddp_sim_prepares_once_and_the_processes_share_the_files_and_deal_the_epoch(tmp_path):
    # Nothing prepared yet (a fresh cache): rank 0 prepares, rank 1 maps its files.
    record = tmp_path / "rows"
    proc = run_cli("model=tiny", "callbacks=none", "trainer=ddp_sim", "trainer.max_epochs=1",
                   "trainer.limit_val_batches=1", "trainer.num_sanity_val_steps=0",
                   "data.batch_size=8", "data.max_train_samples=100",
                   f"data.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'run'}",
                   "+callbacks.rows._target_=tests.callbacks.RecordTrainRows",
                   f"+callbacks.rows.path={record}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rows.{r}.json").read_text()) for r in (0, 1)]
    assert [r["prepared_here"] for r in ranks] == [True, False]  # tokenized once
    assert proc.stderr.count("prepared train:") == 1
    assert ranks[0]["files"] == ranks[1]["files"]  # both map the same Arrow file
    assert len(list((tmp_path / "cache" / "prepared").glob("*/manifest.json"))) == 1
    seen = [[i for line in (tmp_path / f"rows.{r}.jsonl").read_text().splitlines()
             for i in json.loads(line)] for r in (0, 1)]  # fmt: skip
    assert len(seen[0]) == len(seen[1]) == 50
    assert not set(seen[0]) & set(seen[1])  # disjoint rows ...
    assert sorted(seen[0] + seen[1]) == list(range(100))  # ... whose union is the epoch

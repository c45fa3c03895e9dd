"""Prepared data (framework.prepared, framework.prepare): encoded once, mapped by every later
run, never trusted when damaged or made from other inputs, never left half-written."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import re
import sys
import threading
import time
from pathlib import Path

import pytest

from framework.data import DataModule
from framework.errors import UserError
from framework.fileio import json_checksum
from framework.prepared import locked, prepared_dir
from tasks.classification import Classification

CSV = "text,label\n" + "".join(f"{'word ' * (1 + i % 5)}{i},{'pos' if i % 2 else 'neg'}\n"
                               for i in range(24))  # fmt: skip


@pytest.fixture
def data(tmp_path):
    for name in ("train.csv", "dev.csv"):
        (tmp_path / name).write_text(CSV)
    return tmp_path


def _dm(data, tokenizer, **kw) -> DataModule:
    task = Classification(labels=["neg", "pos"])
    return DataModule(task, tokenizer, path=str(data), cache_dir=str(data / "cache"), **kw)


def _folder(dm: DataModule):
    return prepared_dir(dm.cache_dir, dm.prepare_inputs()[0])


def _rewrite(path: Path, manifest: dict) -> None:
    """Write an edited manifest with a checksum that matches it (as if prepared so): the
    checks after the manifest's own checksum are reached."""
    body = {k: v for k, v in manifest.items() if k != "checksum"}
    path.write_text(json.dumps({**body, "checksum": json_checksum(body)}))


def _no_reading(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("a data file was read although the data is prepared")

    monkeypatch.setattr("framework.readers.read_lines", refuse)
    monkeypatch.setattr("framework.sources.Sources.read_split", refuse)


def test_a_prepared_split_is_mapped_without_reading_the_data(data, tokenizer, monkeypatch):
    first = _dm(data, tokenizer)
    first.setup_data()
    manifest = json.loads((_folder(first) / "manifest.json").read_text())
    assert manifest["splits"]["train"]["rows"] == 24
    assert manifest["splits"]["train"]["tokens"] == int(first.lengths("train").sum())
    assert manifest["task_state"] == {"labels": ["neg", "pos"]}
    _no_reading(monkeypatch)
    again = _dm(data, tokenizer, seed=3)  # another seed without a subset: the same prepared data
    again.setup_data()
    assert again.splits["train"].to_list() == first.splits["train"].to_list()
    assert again.splits["train"].cache_files[0]["filename"].startswith(str(_folder(first)))
    assert again.task.labels == ["neg", "pos"]


def test_a_source_replaced_with_its_size_and_timestamp_kept_is_prepared_again(data, tokenizer):
    first = _dm(data, tokenizer)
    first.setup_data()
    before = _folder(first)
    train = data / "train.csv"
    st = train.stat()
    text = train.read_text()
    swapped = text.replace(",pos", ",tmp").replace(",neg", ",pos").replace(",tmp", ",neg")
    assert len(swapped) == st.st_size and swapped != text  # same size, labels swapped
    train.write_text(swapped)
    os.utime(train, ns=(st.st_atime_ns, st.st_mtime_ns))  # the timestamp restored
    again = _dm(data, tokenizer)
    again.setup_data()
    assert _folder(again) != before  # not "already prepared"
    labels = [r["labels"] for r in again.splits["train"].to_list()]
    assert labels == [1 - r["labels"] for r in first.splits["train"].to_list()]


def test_a_tokenizer_edited_in_place_prepares_again(data, tokenizer, tmp_path):
    from transformers import AutoTokenizer

    tokenizer.save_pretrained(tmp_path / "tok")
    first = _dm(data, AutoTokenizer.from_pretrained(tmp_path / "tok"))
    first.setup_data()
    config = tmp_path / "tok" / "tokenizer_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "do_lower_case": False}))
    edited = AutoTokenizer.from_pretrained(tmp_path / "tok")  # same vocabulary, other ids
    assert edited("Word")["input_ids"] != first.tokenizer("Word")["input_ids"]
    again = _dm(data, edited)
    assert _folder(again) != _folder(first)


def test_a_swapped_arrow_file_or_an_edited_manifest_is_refused(data, tokenizer):
    dm = _dm(data, tokenizer)
    dm.setup_data()
    folder = _folder(dm)
    arrow, manifest = folder / "train.arrow", folder / "manifest.json"
    original, text = arrow.read_bytes(), manifest.read_text()
    arrow.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))  # one bit, the same size
    with pytest.raises(UserError, match=r"train\.arrow is truncated or changed \(same size"):
        _dm(data, tokenizer).setup_data()
    arrow.write_bytes(original)
    manifest.write_text(text.replace('"neg"', '"pos2"'))  # the label list edited by hand
    with pytest.raises(UserError, match=r"manifest\.json was edited after it was written"):
        _dm(data, tokenizer).setup_data()


def test_a_truncated_arrow_file_is_refused_and_prepare_rebuilds_it(data, tokenizer):
    dm = _dm(data, tokenizer)
    dm.setup_data()
    arrow = _folder(dm) / "train.arrow"
    arrow.write_bytes(arrow.read_bytes()[:100])
    with pytest.raises(UserError, match=r"train\.arrow is truncated or changed.*prepare"):
        _dm(data, tokenizer).setup_data()
    # the command a user is told to run: it rebuilds the damaged folder
    code, out = _prepare_main(data)
    folder = Path(out.split("Prepared: ")[1].strip())
    (folder / "train.arrow").write_bytes((folder / "train.arrow").read_bytes()[:100])
    code, out = _prepare_main(data)
    assert code == 0 and f"rebuilding {folder}: {folder}/train.arrow is truncated" in out
    manifest = json.loads((folder / "manifest.json").read_text())
    assert (folder / "train.arrow").stat().st_size == manifest["splits"]["train"]["files"][
        "train.arrow"
    ]


def test_a_corrupted_manifest_is_refused_by_name(data, tokenizer):
    dm = _dm(data, tokenizer)
    dm.setup_data()
    manifest = _folder(dm) / "manifest.json"
    manifest.write_text('{"format_version": 1, "spl')
    with pytest.raises(UserError, match=r"manifest\.json is unreadable.*corrupted"):
        _dm(data, tokenizer).setup_data()


def test_a_manifest_from_another_tokenizer_or_code_version_is_refused(data, tokenizer):
    dm = _dm(data, tokenizer)
    dm.setup_data()
    path = _folder(dm) / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["inputs"]["code"] = "an older version"
    manifest["inputs"]["tokenizer"][0] = "roberta-base"
    _rewrite(path, manifest)
    with pytest.raises(UserError, match=r"other inputs \(code, tokenizer differ"):
        _dm(data, tokenizer).setup_data()


def test_a_manifest_naming_a_file_outside_its_folder_is_refused(data, tokenizer, tmp_path):
    dm = _dm(data, tokenizer)
    dm.setup_data()
    folder = _folder(dm)
    path = folder / "manifest.json"
    original = json.loads(path.read_text())
    planted = tmp_path / "planted.arrow"  # a valid Arrow file elsewhere, of the named size
    planted.write_bytes((folder / "train.arrow").read_bytes())
    size = planted.stat().st_size
    for name in (str(planted), f"../../{planted.name}", "linked.arrow"):
        if name == "linked.arrow":
            (folder / name).symlink_to(planted)
        manifest = json.loads(json.dumps(original))
        manifest["splits"]["train"]["files"] = {name: size}
        _rewrite(path, manifest)
        refused = rf"names the file '{re.escape(name)}', which is not in"
        with pytest.raises(UserError, match=refused):
            _dm(data, tokenizer).setup_data()


def test_two_prepares_of_the_same_data_at_once(data, tokenizer):
    dm = _dm(data, tokenizer)
    key = dm.prepare_inputs()[0]
    with locked(dm.cache_dir, key, wait=True):  # another process is preparing
        with pytest.raises(UserError, match="another process is preparing this data"):
            dm.prepare(wait=False)
    assert not _folder(dm).exists()
    dm.prepare(wait=False)  # the lock released: prepared
    assert (_folder(dm) / "manifest.json").is_file()


def test_a_full_disk_leaves_nothing_behind(data, tokenizer, monkeypatch):
    from datasets import Dataset

    real_map = Dataset.map

    def map_until_full(self, *args, **kw):
        real_map(self, *args, **kw)  # the file is written, then the next write fails
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Dataset, "map", map_until_full)
    dm = _dm(data, tokenizer)
    with pytest.raises(UserError, match=r"the disk is full\); nothing was kept"):
        dm.setup_data()
    assert list((data / "cache" / "prepared").iterdir()) == [
        (data / "cache" / "prepared" / f"{dm.prepare_inputs()[0]}.lock")
    ]  # no folder, no staging folder: only the lock file
    monkeypatch.undo()
    _dm(data, tokenizer).setup_data()  # and a later run prepares from scratch


def test_a_crash_while_preparing_leaves_no_manifest_a_later_run_would_trust(data, tokenizer):
    (data / "dev.csv").write_text("text,label\nfine,maybe\n")  # an unknown label: encode fails
    with pytest.raises(UserError, match="maybe"):
        _dm(data, tokenizer).setup_data()
    assert not list((data / "cache" / "prepared").glob("*/manifest.json"))
    assert not list((data / "cache" / "prepared").glob(".*tmp*"))


def test_the_other_processes_wait_for_the_preparing_one(data, tokenizer, monkeypatch):
    monkeypatch.setenv("RANK", "1")  # not global rank 0: waits for its manifest
    waiting = _dm(data, tokenizer, prepare_timeout=60)
    done = {}
    thread = threading.Thread(target=lambda: done.update(ok=waiting.setup_data() or True))
    thread.start()
    time.sleep(1.0)
    assert thread.is_alive() and not waiting.splits  # still waiting: it prepares nothing
    preparer = _dm(data, tokenizer)
    preparer.prepare()  # what global rank 0 does
    thread.join(30)
    assert done.get("ok") and len(waiting.splits["train"]) == 24
    quick = _dm(data, tokenizer, max_train_samples=5, prepare_timeout=0.5)  # nothing prepared
    with pytest.raises(UserError, match=r"waited 0 s for global rank 0 to prepare"):
        quick.setup_data()


def _prepare_main(data, *overrides: str) -> tuple[int, str]:
    from framework.prepare import main

    err, out = io.StringIO(), io.StringIO()
    argv, sys.argv = sys.argv, ["framework.prepare", f"data.path={data}",
                                f"data.cache_dir={data / 'cache'}", *overrides]  # fmt: skip
    code = 0
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        sys.argv = argv
    return code, err.getvalue() + out.getvalue()


def test_prepare_command_prepares_once_then_train_maps(data, tokenizer, monkeypatch):
    code, out = _prepare_main(data)
    assert code == 0, out
    assert "train: 24 rows -> 24 examples" in out and "bytes/token" in out
    code, again = _prepare_main(data)
    assert code == 0 and "already prepared" in again
    code, err = _prepare_main(data, "data.num_proc=0")
    assert code == 2 and err.startswith("error: data.num_proc must be >= 1")
    code, err = _prepare_main(data, "experiment=pretrain_wikitext2")
    assert code == 2 and "model.train_tokenizer trains a run's vocabulary" in err


def test_ctrl_c_while_preparing_is_one_line_and_leaves_nothing(data, monkeypatch):
    from datasets import Dataset

    def interrupted(self, *args, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(Dataset, "map", interrupted)
    code, out = _prepare_main(data)
    assert code == 130 and "Traceback" not in out, out[-3000:]
    assert "error: interrupted (Ctrl-C): nothing was kept" in out
    prepared = data / "cache" / "prepared"
    assert [p.name for p in prepared.iterdir() if not p.name.endswith(".lock")] == []


def test_a_killed_preparations_temporary_folder_is_removed_by_the_next(data, tokenizer):
    import socket

    dm = _dm(data, tokenizer)
    folder = _folder(dm)
    host = socket.gethostname()
    dead = folder.parent / f".{folder.name}.tmp-{host}-{2**22 + 12345}-0badc0de"  # no such pid
    alive = folder.parent / f".{folder.name}.tmp-{host}-{os.getpid()}-0badc0de"  # a live one
    other = folder.parent / f".{folder.name}.tmp-elsewhere-{2**22 + 12345}-0badc0de"
    for tmp in (dead, alive, other):
        (tmp / "train.arrow").parent.mkdir(parents=True)
        (tmp / "train.arrow").write_bytes(b"half written by a killed prepare")
    dm.setup_data()
    assert not dead.exists() and alive.exists() and other.exists()
    assert (folder / "manifest.json").is_file()

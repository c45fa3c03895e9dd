"""Entry point: ``python -m framework.prepare [the same overrides as framework.train]``.

Reads, checks and encodes the configuration's splits once into memory-mapped Arrow files with a
manifest (``framework.prepared``; docs/data.md), then prints where they are and how big. A run
with the same data, tokenizer and task settings maps them instead of reading the data again
(``framework.train`` prepares by itself when nothing is prepared). Preparing what is prepared
does nothing; a prepared folder found damaged is rebuilt.
"""

from __future__ import annotations

import shutil
import sys

from framework.errors import UserError, print_error


def prepare(overrides: list[str]) -> dict:
    """Prepare as configured by ``overrides``; the manifest."""
    from hydra import compose, initialize_config_dir

    from framework.build import apply_task_defaults, build_data
    from framework.checks import check_config
    from framework.config import CONF_DIR, register_resolvers
    from framework.prepared import DamagedPreparedData, prepared_dir, read_manifest

    register_resolvers()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    apply_task_defaults(cfg)
    check_config(cfg)
    if cfg.model.get("train_tokenizer"):
        raise UserError(
            "model.train_tokenizer trains a run's vocabulary in its run directory, which "
            "framework.prepare has not: let framework.train prepare (it does when nothing is "
            "prepared), or prepare with model.tokenizer=RUN_DIR/tokenizer "
            "model.train_tokenizer=null"
        )
    _, datamodule = build_data(cfg)
    key, inputs = datamodule.prepare_inputs()
    folder = prepared_dir(datamodule.cache_dir, key)
    try:
        manifest = read_manifest(folder, key, inputs)
    except DamagedPreparedData as e:
        print(f"rebuilding {folder}: {e}", file=sys.stderr)
        shutil.rmtree(folder)
        manifest = None
    if manifest is None:
        folder, manifest = datamodule.prepare(wait=False, key_inputs=(key, inputs))
    else:
        print("already prepared (nothing to do)")
    for split, entry in manifest["splits"].items():
        size = sum(entry["files"].values())
        print(
            f"{split}: {entry['source_rows']} rows -> {entry['rows']} examples, "
            f"{entry['tokens']} tokens, {size / 2**20:.2f} MiB on disk "
            f"({size / max(entry['tokens'], 1):.2f} bytes/token)"
        )
    print(f"Prepared: {folder}")
    return manifest


def main() -> None:
    from framework.overrides import check_overrides, expand_task_overrides

    try:
        overrides = expand_task_overrides(sys.argv[1:])
        check_overrides(overrides)
        prepare(overrides)
    except UserError as e:
        print_error(e)
        sys.exit(2)
    except KeyboardInterrupt:  # the temporary folder is gone (Staging): nothing half-written
        print_error("interrupted (Ctrl-C): nothing was kept; run the same command again")
        sys.exit(130)  # 128 + SIGINT, as a shell reports it


if __name__ == "__main__":
    main()

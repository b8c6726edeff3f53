#!/usr/bin/env bash
# The GPU checks in one go: model time, the EM-KTD loss and the training step at the paper's
# shapes (eager, and compiled with CUDA graphs), a two-process DDP run in bf16 (a teacher, then an
# EM-KTD + KD student) and a torch.compile'd teacher run.
#
#     bash training/perf/gpu_checks.sh OUT [BENCH]
#
# OUT: a folder for the logs (every table lands in OUT/<check>.log too).  BENCH: an embedded
# benchmark for the DDP run (`python -m training.embedded.build build --small --formats s4,ms3
# --root BENCH`); without it the DDP run is skipped.  Two processes on a machine with one GPU
# share it over gloo (training/run/distributed.py); with two GPUs or more they use NCCL.
# On one H100: 167 s without the two compiled checks, which took 218 s more (timed in a second
# call before they joined this script).  PYTHON names the interpreter (default python3).
set -u -o pipefail
out=${1:?usage: gpu_checks.sh OUT [BENCH]}
bench=${2:-}
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
mkdir -p "$out"
failed=0

check() {  # check NAME SECONDS COMMAND...: run, tee the output to OUT/NAME.log, report rc and time
    local name=$1 limit=$2
    shift 2
    echo "== $name: $*"
    local start=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee "$out/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc after $((SECONDS - start)) s"
    [ "$rc" -eq 0 ] || failed=1
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$py -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)"

check latency-bf16 120 $py -m emktd.bench latency --device cuda --dtype bf16 --batch 48 --repeats 20
check latency-fp32 120 $py -m emktd.bench latency --device cuda --dtype fp32 --batch 48 --repeats 20
check latency-compiled 240 $py -m emktd.bench latency --device cuda --dtype bf16 --batch 48 --repeats 20 \
    --compile reduce-overhead
check loss 180 $py -m emktd.bench loss --device cuda --batch 48 --dtype bf16 --repeats 20
check throughput 300 $py -m training.perf.throughput --paper --device cuda --batch 48 --bf16 --repeats 10

if [ -n "$bench" ]; then
    runs=$(mktemp -d)
    common=(--data-root "$bench" --device cuda --bf16 true --batch-size 4 --workers 2 --log-every 1)
    check ddp-teacher 240 $py -m torch.distributed.run --standalone --nproc-per-node 2 training/distill.py \
        --task teacher --epochs 4 --eval-split val --out "$runs/teacher" "${common[@]}"
    check ddp-student 240 $py -m torch.distributed.run --standalone --nproc-per-node 2 training/distill.py \
        --teacher "$runs/teacher/student" --method emktd+kd --epochs 4 --probe-epochs 5 --out "$runs/student" \
        "${common[@]}"
    for run in teacher student; do
        echo "-- $run: start record, per-rank weight digests, metrics"
        grep -m1 '"type": "start"' "$runs/$run/log.jsonl"
        head -c 16 "$runs/$run"/final_student_rank*.sha256 && echo
        if [ "$(sort -u "$runs/$run"/final_student_rank*.sha256 | wc -l)" -ne 1 ]; then
            echo "the ranks' weights differ"; failed=1
        fi
        $py -c "import json, sys; m = json.load(open(sys.argv[1])); print({k: m[k] for k in ('hardware', 'world_size', 'train_seconds')})" \
            "$runs/$run/metrics.json"
    done
    cp "$runs/student/log.jsonl" "$out/ddp-student-log.jsonl"
    check compile 180 $py training/distill.py --task teacher --epochs 3 --compile true --eval-split val \
        --out "$runs/compiled" "${common[@]}"
fi
echo "== all checks: $([ $failed -eq 0 ] && echo passed || echo 'SOME FAILED')"
exit $failed

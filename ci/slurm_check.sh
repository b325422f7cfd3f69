#!/usr/bin/env bash
# Real-SLURM check of profiles/slurm.
#
# Brings up a one-node SLURM cluster on localhost from Debian's packages (munge, slurmctld,
# slurmd; no systemd: every daemon is started here, with its files in a temporary directory),
# runs a small saeprobe configuration (stories260K layer 2, a 90-document slice of
# jailbreak_classification, a seeded JumpReLU SAE in SAELens format; SAE, hidden-state and
# TF-IDF probes) through the SLURM profile, runs the same configuration locally, checks that
# the tables are identical, and stops exactly the daemons it started (by the PIDs they
# recorded).
#
# The node advertises one GPU (gres gpu:1 backed by /dev/null). The configuration says
# `device: auto` (compute on the CPU, like the local run: `device: cuda` would stop without CUDA),
# and `--set-resources` gives the GPU stages (extract_activations, encode_sae) the gpu=1 that
# `device: cuda` gives them, so they really ask SLURM for a GPU (sbatch --gpus=1) and are
# scheduled against it.
#
# Needs root (slurmd starts jobs as the submitting user; munged runs as the munge user) and,
# when the packages are missing, apt-get. Usage: ci/slurm_check.sh  (or: make slurm-check)
# Environment: VENV (default .venv), SHARED (default ../shared), KEEP=1 keeps the temporary
# directory (daemon logs, both runs) for inspection.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${VENV:-.venv}
[[ $VENV = /* ]] || VENV=$ROOT/$VENV
PY=$VENV/bin/python
SHARED=${SHARED:-$ROOT/../shared}
T0=$(date +%s)

say() { printf '[slurm-check %3ds] %s\n' "$(($(date +%s) - T0))" "$*"; }
die() { say "FAILED: $*" >&2; exit 1; }

[[ $EUID -eq 0 ]] || die "needs root (slurmd runs jobs as the submitting user, munged as the munge user)"
[[ -x $PY ]] || die "no Python at $PY (create the virtual environment first, e.g. make .venv/bin/.installed, or set VENV)"
[[ -d $SHARED/models/stories260K && -f $SHARED/data/jailbreak_classification.parquet ]] \
    || die "stories260K / jailbreak_classification not found under $SHARED (set SHARED)"

# --- packages ------------------------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null \
        || ! command -v munged >/dev/null; then
    say "installing slurmctld slurmd slurm-client munge (apt-get)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurmctld slurmd slurm-client munge >/dev/null
fi
# The plugin's version (and its dependencies') is the one in constraints/lock.txt; an installed
# plugin of another version is replaced by it.
PLUGIN=$(grep -i '^snakemake-executor-plugin-slurm==' "$ROOT/constraints/lock.txt") \
    || die "constraints/lock.txt pins no snakemake-executor-plugin-slurm (make lock)"
if [[ $("$PY" -m pip show snakemake-executor-plugin-slurm 2>/dev/null | sed -n 's/^Version: //p') != "${PLUGIN#*==}" ]]; then
    say "installing $PLUGIN into $VENV"
    "$PY" -m pip install --quiet -c "$ROOT/constraints/lock.txt" "$PLUGIN"
fi
say "$(slurmctld -V), $("$PY" -m pip show snakemake-executor-plugin-slurm 2>/dev/null | sed -n 's/^Version: /executor plugin /p')"

# --- the cluster ----------------------------------------------------------------------------
T=$(mktemp -d /tmp/saeprobe-slurm.XXXXXX)
chmod 755 "$T"   # munged (the munge user) must reach its files below
mkdir -p "$T"/{bin,etc,state,spool,log,run,munge,slurm,local}
PIDFILES=()
LOCAL_PID=

stop_daemons() {
    local rc=$?
    set +e
    [[ -n $LOCAL_PID ]] && kill "$LOCAL_PID" 2>/dev/null
    if [[ -s $T/run/slurmctld.pid ]]; then
        SLURM_CONF=$T/etc/slurm.conf scancel --quiet --partition=ci 2>/dev/null  # our own cluster's jobs
        sleep 1
    fi
    # Newest first: slurmd, slurmctld, munged; each by the PID it recorded, and only while that
    # process is still the daemon started here (its command line names our temporary directory).
    for ((i = ${#PIDFILES[@]} - 1; i >= 0; i--)); do
        local f=${PIDFILES[i]} pid
        [[ -s $f ]] || continue
        pid=$(<"$f")
        if [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "$T"; then
            kill -TERM "$pid" 2>/dev/null
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
            kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
        fi
    done
    if ((rc != 0)); then
        for log in "$T"/log/slurmctld.log "$T"/log/slurmd.log; do
            [[ -f $log ]] && { echo "--- tail of $log"; tail -n 20 "$log"; }
        done
    fi
    say "daemons stopped"
    if [[ ${KEEP:-0} = 1 ]]; then say "kept $T"; else rm -rf "$T"; fi
    exit "$rc"
}
trap stop_daemons EXIT
trap 'exit 130' INT TERM

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# munge: a key and socket of its own, run as the munge user.
mungekey --create --keyfile="$T/munge/munge.key" 2>/dev/null \
    || dd if=/dev/urandom of="$T/munge/munge.key" bs=1 count=1024 status=none
chown -R munge:munge "$T/munge"
chmod 711 "$T/munge"
chmod 600 "$T/munge/munge.key"
PIDFILES+=("$T/munge/munged.pid")
runuser -u munge -- munged --socket="$T/munge/munge.socket" --key-file="$T/munge/munge.key" \
    --pid-file="$T/munge/munged.pid" --log-file="$T/munge/munged.log" --seed-file="$T/munge/munged.seed"
for _ in $(seq 50); do [[ -S $T/munge/munge.socket ]] && break; sleep 0.1; done
munge --socket="$T/munge/munge.socket" -n | unmunge --socket="$T/munge/munge.socket" >/dev/null \
    || die "munge does not round-trip a credential"

HOST=$(hostname -s)
NODE=$(slurmd -C | head -n 1)   # NodeName=<host> CPUs=... RealMemory=... as slurmd sees this machine
CPUS=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$NODE")
cat >"$T/etc/slurm.conf" <<EOF
ClusterName=saeprobe-ci
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
AuthType=auth/munge
AuthInfo=socket=$T/munge/munge.socket
StateSaveLocation=$T/state
SlurmdSpoolDir=$T/spool
SlurmctldPidFile=$T/run/slurmctld.pid
SlurmdPidFile=$T/run/slurmd.pid
SlurmctldLogFile=$T/log/slurmctld.log
SlurmdLogFile=$T/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
# With CR_Core_Memory a job that asks for no memory would get the node's whole memory.
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
# No accounting storage, so the plugin's status command is squeue, which must still see a
# finished job when Snakemake asks: MinJobAge >= 3 x slurm-init-seconds-before-status-checks
# (else the plugin silently goes back to sacct, which fails, and Snakemake waits forever).
MinJobAge=3600
ReturnToService=2
GresTypes=gpu
$NODE NodeAddr=127.0.0.1 Gres=gpu:1 State=UNKNOWN
PartitionName=ci Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
echo "NodeName=$HOST Name=gpu Count=1 File=/dev/null" >"$T/etc/gres.conf"   # a GPU gres needs a device file
export SLURM_CONF=$T/etc/slurm.conf
# Inside each job the slurm-jobstep plugin starts `srun` with every SLURM_* variable removed,
# SLURM_CONF included. A real cluster keeps its slurm.conf at the compiled-in path
# (/etc/slurm) or serves it configless; ours lives in $T, so srun is wrapped to find it.
printf '#!/bin/sh\nSLURM_CONF=%s exec %s "$@"\n' "$SLURM_CONF" "$(command -v srun)" >"$T/bin/srun"
chmod 755 "$T/bin/srun"
export PATH=$T/bin:$PATH

PIDFILES+=("$T/run/slurmctld.pid")
slurmctld -f "$SLURM_CONF"
PIDFILES+=("$T/run/slurmd.pid")
slurmd -f "$SLURM_CONF"
state=
for _ in $(seq 100); do
    state=$(sinfo --noheader --format=%T 2>/dev/null || true)
    [[ $state = idle ]] && break
    sleep 0.2
done
[[ $state = idle ]] || die "node did not come up (sinfo state: '${state:-none}')"
say "cluster up: node $HOST, $CPUS CPUs, 1 GPU (gres), partition ci"

# --- the two runs ---------------------------------------------------------------------------
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
"$PY" - "$T" "$SHARED" <<'EOF'
import sys
from pathlib import Path

import polars as pl
import torch
import yaml
from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

tmp, shared = Path(sys.argv[1]), Path(sys.argv[2])
src = pl.read_parquet(shared / "data" / "jailbreak_classification.parquet")
small = pl.concat([src.filter(pl.col("split") == s).group_by("label", maintain_order=True).head(n // 2)
                   for s, n in (("train", 60), ("test", 30))])
small.write_parquet(tmp / "jailbreak_small.parquet")
# A JumpReLU SAE for stories260K (d_model 64) in SAELens format, built from a seeded config.
torch.manual_seed(0)
sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=64, d_sae=128, dtype="float32", device="cpu"))
with torch.no_grad():
    sae.W_enc.normal_(0, 0.125)
    sae.W_dec.copy_(sae.W_enc.T)
    sae.threshold.fill_(0.05)
sae.save_model(tmp / "sae_layer_2")
cfg = {
    "seed": 0, "device": "auto",
    "datasets": {"jailbreak": {"path": str(tmp / "jailbreak_small.parquet")}},
    "models": {"stories": {"path": str(shared / "models" / "stories260K"), "layers": [2], "max_length": 64}},
    "saes": {"jumprelu": {"model": "stories", "path": str(tmp / "sae_layer_{layer}")}},
    "features": {"poolings": ["mean"], "binarize": [None], "hidden_poolings": ["mean"]},
    "probe": {"Cs": [0.1, 1.0], "cv_folds": 3},
}
for run in ("slurm", "local"):
    (tmp / run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
EOF

smk() { "$PY" -m snakemake --snakefile "$ROOT/Snakefile" --directory "$T/$1" --configfile "$T/$1/config.yaml" "${@:2}"; }

# The local run (default profile), in the background meanwhile; both runs use 1 thread per job.
smk local --cores "$CPUS" --max-threads 1 >"$T/local/snakemake.out" 2>&1 &
LOCAL_PID=$!

say "SLURM run (profiles/slurm)"
t=$(date +%s)
# No accounting storage here: squeue is the status command (MinJobAge above is large enough).
# Memory requests that fit a small CI machine; 1 thread per job so that jobs share the node.
# --cores/--resources: what one grouped submission may use on this small node.
smk slurm --workflow-profile "$ROOT/profiles/slurm" --jobs 4 --cores "$CPUS" --resources gpu=1 mem_mb=3000 \
    --slurm-status-command squeue --slurm-init-seconds-before-status-checks 5 \
    --max-threads 1 \
    --set-resources extract_activations:gpu=1 encode_sae:gpu=1 \
    extract_activations:mem_mb=1500 encode_sae:mem_mb=1500 pool:mem_mb=1000 fit_probe:mem_mb=1000 \
    prepare_dataset:mem_mb=1000 tokenize:mem_mb=1000 fit_tfidf:mem_mb=1000 tables:mem_mb=1000 \
    >"$T/slurm/snakemake.out" 2>&1 || { tail -n 60 "$T/slurm/snakemake.out"; die "SLURM run failed"; }
slurm_s=$(($(date +%s) - t))
n_sbatch=$(grep -c "has been submitted with SLURM jobid" "$T/slurm/snakemake.out" || true)
say "SLURM run: ${slurm_s}s, $n_sbatch sbatch submissions (jobs grouped by profiles/slurm groups:)"
[[ -n $(find "$T"/slurm/results/logs/slurm -path '*group_gpu_*' -name '*.log' 2>/dev/null) ]] \
    || die "no SLURM log of the gpu group under results/logs/slurm/group_gpu_*/"

# What SLURM was asked for, per submission (finished jobs stay visible for MinJobAge): the GPU
# group (extraction + SAE encoding) must have asked for a GPU, the others not; every one has a
# time limit.
squeue --noheader --states=all --format='%i' | while read -r id; do
    info=$(scontrol show job "$id")
    rule=$(grep -o 'Comment=[^ ]*' <<<"$info")
    rule=${rule#Comment=rule_}
    rule=${rule%%_wildcards*}
    gpus=$(grep -o 'TresPerJob=[^ ]*' <<<"$info" || true)
    echo "$rule ${gpus:-no-gpu} $(grep -o 'TimeLimit=[^ ]*' <<<"$info") $(grep -o 'MinMemoryNode=[^ ]*' <<<"$info")"
done | sort | uniq -c >"$T/slurm/requests.txt"
cat "$T/slurm/requests.txt"
grep -q " gpu_[a-z_]* TresPerJob=gres:gpu:1 " "$T/slurm/requests.txt" || die "the gpu group did not ask SLURM for a GPU"
if grep -v -E " gpu_[a-z_]* " "$T/slurm/requests.txt" | grep -q TresPerJob; then
    die "a CPU submission asked for a GPU"
fi
n_sub=$(awk '{n += $1} END {print n}' "$T/slurm/requests.txt")
[[ $n_sub -eq $n_sbatch ]] || say "note: squeue lists $n_sub submissions, the log $n_sbatch"

wait "$LOCAL_PID" || { tail -n 60 "$T/local/snakemake.out"; die "local run failed"; }
LOCAL_PID=

# --- compare --------------------------------------------------------------------------------
"$PY" - "$T" <<'EOF'
import sys
from pathlib import Path

import polars as pl
from polars.testing import assert_frame_equal

tmp = Path(sys.argv[1])
a, b = (tmp / run / "results" / "tables" for run in ("slurm", "local"))
for name in ("grid", "best"):
    assert (a / f"{name}.csv").read_bytes() == (b / f"{name}.csv").read_bytes(), f"{name}.csv differs"
    assert_frame_equal(pl.read_parquet(a / f"{name}.parquet"), pl.read_parquet(b / f"{name}.parquet"))
grid = pl.read_parquet(a / "grid.parquet")
assert set(grid["family"]) == {"sae", "hidden", "tfidf"}, grid
print(f"tables identical: {grid.height} probes (grid.csv, best.csv byte-identical; parquet frames equal)")
EOF
n_jobs=$(sed -n 's/^total *\([0-9]*\)$/\1/p' "$T/local/snakemake.out" | head -n 1)
say "local run: ${n_jobs:-?} jobs; SLURM run: $n_sbatch sbatch submissions"
[[ -n $n_jobs && $n_sbatch -lt $n_jobs ]] || die "grouping did not reduce the submissions ($n_sbatch sbatch for ${n_jobs:-?} jobs)"
say "OK: the SLURM run (${slurm_s}s, $n_sbatch submissions) and the local run give identical tables"

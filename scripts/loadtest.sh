#!/usr/bin/env bash
# Load test of the running service with real load generators (issue 5): builds the release
# binary, starts it on a fresh data directory with rate limits raised far above the test load
# (durability left at its default), and measures in one run:
#   a. GET /healthz with wrk: the floor of this HTTP stack;
#   b0. POST /v1/rank, one pass over the body pool: the first calls of a cold process;
#   b. POST /v1/rank with wrk through a pool of realistic 4-candidate bodies: saturation;
#   c. the same workload open-loop with oha -q at half the throughput of (b);
#   d. POST /v1/feedback with wrk in batches of 50 unique events on impressions made by a rank
#      pre-pass, every batch sent at most once, every answer checked;
#   e. the server's resident memory at start and after the run.
# A summary table goes to stdout and target/loadtest/results.json.
#
# Usage: scripts/loadtest.sh                  # the full run (DURATION=20s per phase)
#        DURATION=3s WARMUP=1s scripts/loadtest.sh   # a smoke run
# Environment (defaults in brackets): DURATION [20s] per measured phase; WARMUP [2s] of rank
# load before (b), not measured; THREADS [2] and CONNECTIONS [64] of wrk; OPEN_LOOP_CONNECTIONS
# [64] of oha; OPEN_LOOP_RATE [half of (b)]; RANK_POOL [4096] bodies (= users);
# FEEDBACK_BATCH [50]; CALIBRATION [2s] of feedback load that sizes the feedback pool;
# FEEDBACK_POOL_FACTOR [2]: pool = calibrated events/s x DURATION x this; FEEDBACK_ORDER
# [decisions]: the accept and rejects of one impression travel together, as a plugin sends
# them ("events": every event on its own, the workload before 2026-11-23); DURABILITY [unset:
# the default, process; "power" for synchronous=FULL]; PORT [0: any free];
# SKIP_BUILD [0]; KEEP_DATA [0]: keep the data directory and the generated bodies;
# PERF [unset]: phases to profile with `perf record` (for example "bd"): a flat profile of the
# server during that phase, reported to target/loadtest/perf-<phase>.txt.
# The server inherits the environment: MIMALLOC_ALLOW_THP=0 runs it without transparent huge
# pages (about 100 MB less memory, about 10% less rank throughput; BENCHMARKS.md). The summary
# names the kernel's THP mode, which moves the memory figure that much.
# Needs: bash, curl, python3 >= 3.11; installs wrk (apt) and oha (cargo install) if missing.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

DURATION=${DURATION:-20s}
WARMUP=${WARMUP:-2s}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-64}
OPEN_LOOP_CONNECTIONS=${OPEN_LOOP_CONNECTIONS:-64}
OPEN_LOOP_RATE=${OPEN_LOOP_RATE:-}
RANK_POOL=${RANK_POOL:-4096}
FEEDBACK_BATCH=${FEEDBACK_BATCH:-50}
CALIBRATION=${CALIBRATION:-2s}
FEEDBACK_POOL_FACTOR=${FEEDBACK_POOL_FACTOR:-2}
FEEDBACK_ORDER=${FEEDBACK_ORDER:-decisions}
DURABILITY=${DURABILITY:-}
PORT=${PORT:-0}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP_DATA=${KEEP_DATA:-0}
PERF=${PERF:-}

# Far above anything this test sends, so no request is refused with 429 (defaults: per key
# 2,000/s burst 4,000; per user 50/s burst 100).
RL_KEY_PER_S=100000000
RL_KEY_BURST=200000000
RL_USER_PER_S=10000000
RL_USER_BURST=20000000

OUT=$ROOT/target/loadtest
WORK=$OUT/work
LUA=$ROOT/scripts/loadtest
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/guardrank
export PATH="$HOME/.cargo/bin:$PATH"

log() { printf '\n== %s\n' "$*" >&2; }
die() { printf '\nloadtest: FAILED: %s\n' "$*" >&2; exit 1; }

seconds() { # "20s", "3", "2m", "1h" -> seconds
    local v=$1
    case $v in
        *ms) die "durations are whole seconds or more, got $v" ;;
        *s) echo "${v%s}" ;;
        *m) echo $((${v%m} * 60)) ;;
        *h) echo $((${v%h} * 3600)) ;;
        *) echo "$v" ;;
    esac
}
DURATION_S=$(seconds "$DURATION")
CALIBRATION_S=$(seconds "$CALIBRATION")
[[ $DURATION_S =~ ^[0-9]+$ && $DURATION_S -ge 1 ]] || die "DURATION must be like 20s, got $DURATION"
((CALIBRATION_S <= DURATION_S)) || CALIBRATION_S=$DURATION_S

# ---------------------------------------------------------------------------------------------
log "tools"
if ! command -v wrk >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk
fi
if ! command -v curl >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl
fi
if ! command -v oha >/dev/null; then
    # oha builds aws-lc with cmake.
    command -v cmake >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake make
    cargo install oha --locked
fi
python3 -c 'import sys, tomllib; sys.exit(sys.version_info < (3, 11))' || die "python3 >= 3.11 is needed (tomllib)"
WRK_VERSION=$(wrk -v 2>&1 | head -n1 | awk '{print $2}' || true)
OHA_VERSION=$(oha --version | awk '{print $2}')
echo "wrk $WRK_VERSION, oha $OHA_VERSION" >&2

if [[ $SKIP_BUILD != 1 ]]; then
    log "cargo build --release"
    cargo build --release
fi
[[ -x $BIN ]] || die "$BIN is missing"

rm -rf "$WORK"
mkdir -p "$WORK"
DATA=$(mktemp -d -t guardrank-loadtest.XXXXXX)
CFG=$DATA/guardrank.toml
SERVER_PID=
WRK_PID=

cleanup() {
    local rc=$?
    if [[ -n $WRK_PID ]]; then kill -INT "$WRK_PID" 2>/dev/null || true; fi
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ $KEEP_DATA == 1 ]]; then
        echo "kept: data dir $DATA, bodies in $WORK" >&2
    else
        rm -rf "$DATA" "$WORK"/feedback_*.jsonl "$WORK"/impressions_*.tsv
    fi
    if ((rc != 0)); then
        echo "server log: $OUT/server.log" >&2
    fi
}
trap cleanup EXIT

cat >"$CFG" <<EOF
# scripts/loadtest.sh: rate limits far above the test load; everything else at its default
# (durability too, unless DURABILITY is set).
rate_limit_key_per_s = $RL_KEY_PER_S.0
rate_limit_key_burst = $RL_KEY_BURST.0
rate_limit_user_per_s = $RL_USER_PER_S.0
rate_limit_user_burst = $RL_USER_BURST.0
EOF
if [[ -n $DURABILITY ]]; then
    echo "durability = \"$DURABILITY\"" >>"$CFG"
fi
DURABILITY_NAME=${DURABILITY:-process (default)}

log "keys (guardrank keys create)"
PLUGIN_KEY=$("$BIN" keys create --scope plugin --data-dir "$DATA" --config "$CFG" 2>/dev/null)
ADMIN_KEY=$("$BIN" keys create --scope admin --data-dir "$DATA" --config "$CFG" 2>/dev/null)
[[ $PLUGIN_KEY == grk_* && $ADMIN_KEY == grk_* ]] || die "keys create did not print keys"

log "starting guardrank serve on a fresh data dir ($DATA)"
"$BIN" serve --addr "127.0.0.1:$PORT" --data-dir "$DATA" --config "$CFG" >"$OUT/server.log" 2>&1 &
SERVER_PID=$!
BASE=
for _ in $(seq 1 300); do
    BASE=$(sed -n 's/^guardrank listening on \(http:[^ ]*\).*/\1/p' "$OUT/server.log" | head -n1)
    [[ -n $BASE ]] && break
    kill -0 "$SERVER_PID" 2>/dev/null || die "the server exited: $(tail -n 20 "$OUT/server.log")"
    sleep 0.1
done
[[ -n $BASE ]] || die "the server did not report its address"
for _ in $(seq 1 600); do
    curl -fsS "$BASE/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -fsS "$BASE/readyz" >/dev/null || die "/readyz did not become ready"
echo "ready at $BASE (pid $SERVER_PID)" >&2
RSS_START_KB=$(awk '/^VmRSS:/ {print $2}' "/proc/$SERVER_PID/status")
AUTH="Authorization: Bearer $PLUGIN_KEY"

metrics() { curl -fsS -H "Authorization: Bearer $ADMIN_KEY" "$BASE/metrics"; }

# metric_sum FILE NAME [LABEL_FRAGMENT...]: the sum of a metric's samples (Prometheus text in
# FILE) whose labels contain every fragment.
metric_sum() {
    python3 - "$@" <<'PY'
import re, sys
path, name, frags = sys.argv[1], sys.argv[2], sys.argv[3:]
total = 0.0
for line in open(path):
    m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
    if m and m.group(1) == name and all(f in (m.group(2) or "") for f in frags):
        total += float(m.group(3))
print(int(total) if total.is_integer() else total)
PY
}

# wrk's LOADTEST_JSON line -> a file; fails loudly on non-2xx answers or socket errors.
wrk_result() {
    local text=$1 json=$2 phase=$3
    grep '^LOADTEST_JSON ' "$text" | sed 's/^LOADTEST_JSON //' >"$json" || die "$phase: wrk printed no summary (see $text)"
    if grep -q 'Non-2xx or 3xx responses' "$text"; then
        die "$phase: $(grep 'Non-2xx or 3xx responses' "$text" | xargs) (see $text)"
    fi
    if grep -q 'Socket errors' "$text"; then
        echo "warning: $phase: $(grep 'Socket errors' "$text" | xargs)" >&2
    fi
}

# cpu_mark NAME: the server's CPU time so far (user + system, clock ticks) by thread, and
# its bytes through read and write calls (/proc/PID/io rchar and wchar: files, and the socket
# writes of its answers; sockets are read with recvfrom, which is not counted), into
# cpu_NAME.json. Two marks around a phase give its cost per request: where the server's time
# goes, and how many bytes it moves (nearly the same run to run), which throughput alone does
# not say (BENCHMARKS.md, "Where a rank request's writes go").
cpu_mark() {
    python3 - "$SERVER_PID" >"$WORK/cpu_$1.json" <<'PY'
import json, os, sys
kinds = {"tokio-rt-worker": "async", "guardrank-learn": "learner"}
threads = {}
base = f"/proc/{sys.argv[1]}/task"
for tid in os.listdir(base):
    try:
        stat = open(f"{base}/{tid}/stat").read()
    except OSError:
        continue  # a thread that ended meanwhile
    comm = stat[stat.index("(") + 1:stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2:].split()
    kind = "sqlite" if comm.startswith("sqlx-sqlite") else kinds.get(comm, "other")
    threads[tid] = [kind, int(fields[11]) + int(fields[12])]  # utime + stime
io = dict(line.split(": ") for line in open(f"/proc/{sys.argv[1]}/io").read().splitlines())
print(json.dumps({"threads": threads, "hz": os.sysconf("SC_CLK_TCK"), "wchar": int(io["wchar"]), "rchar": int(io["rchar"])}))
PY
}

jget() { # FILE KEY...: a value of a JSON file
    python3 -c $'import json, sys\nv = json.load(open(sys.argv[1]))\nfor k in sys.argv[2:]:\n    v = v[k]\nprint(v)' "$@"
}

# A descriptor that never has input (a pipe this shell holds both ends of): `read -t` on it
# waits without starting a process, as `sleep` would.
exec {NAP_FD}<> <(:)
nap() { # SECONDS
    read -r -t "$1" -u "$NAP_FD" _ || true
}

# Runs wrk in the background until it ends or every thread has left a marker PREFIX.<n>.done
# (a thread whose work is done), then ends it with SIGINT so the run lasts no longer than the
# work.
# With PERF naming PHASE, samples the server with perf for SECONDS in the background.
perf_start() { # PHASE SECONDS
    [[ $PERF == *"$1"* ]] || return 0
    command -v perf >/dev/null || die "PERF is set but perf is not installed"
    perf record -q -F 999 -p "$SERVER_PID" -o "$OUT/perf-$1.data" -- sleep "$2" >/dev/null 2>&1 &
    PERF_PID=$!
}
perf_report() { # PHASE
    [[ $PERF == *"$1"* ]] || return 0
    wait "$PERF_PID" || true
    perf report -q -i "$OUT/perf-$1.data" --no-children --sort symbol --percent-limit 0.5 --stdio \
        >"$OUT/perf-$1.txt" 2>/dev/null || true
    echo "profile of phase $1: $OUT/perf-$1.txt" >&2
}

wrk_until_done() {
    local out=$1 prefix=$2
    shift 2
    wrk "$@" >"$out" 2>&1 &
    WRK_PID=$!
    # Bash builtins only: this loop shares the two cores with the server, and spawning find,
    # wc, dirname, basename and sleep twenty times a second took about 9% of the machine's CPU
    # during phase d (perf record -a, 2026-11-22).
    local done_files
    while kill -0 "$WRK_PID" 2>/dev/null; do
        done_files=("$prefix".*.done)
        [[ -e ${done_files[0]} ]] || done_files=()
        if ((${#done_files[@]} >= THREADS)); then
            kill -INT "$WRK_PID" 2>/dev/null || true
            break
        fi
        kill -0 "$SERVER_PID" 2>/dev/null || die "the server exited: $(tail -n 20 "$OUT/server.log")"
        nap 0.05
    done
    wait "$WRK_PID" || die "wrk failed: $(tail -n 5 "$out")"
    WRK_PID=
}

# Rank calls that record (request_id, body) of every answer into impressions_NAME.<thread>.tsv
# until IMPRESSIONS are captured; START STEP as in prepass.lua.
prepass() { # NAME IMPRESSIONS [START STEP]
    local name=$1 want=$2
    local quota=$(((want + THREADS - 1) / THREADS))
    wrk_until_done "$WORK/prepass_$name.txt" "$WORK/impressions_$name" \
        -t"$THREADS" -c"$CONNECTIONS" -d600s --latency -H "$AUTH" -s "$LUA/prepass.lua" "$BASE/v1/rank" -- \
        "$WORK/rank_bodies.jsonl" "$WORK/impressions_$name" "$quota" "${@:3}"
    wrk_result "$WORK/prepass_$name.txt" "$WORK/prepass_$name.json" "pre-pass $name"
    local captured failed
    captured=$(jget "$WORK/prepass_$name.json" captured)
    failed=$(jget "$WORK/prepass_$name.json" failed)
    ((failed == 0)) || die "pre-pass $name: $failed rank calls failed: $(jget "$WORK/prepass_$name.json" first_error)"
    ((captured >= quota * THREADS)) || die "pre-pass $name captured $captured of $((quota * THREADS)) impressions"
    echo "pre-pass $name: $captured impressions in $(jget "$WORK/prepass_$name.json" duration_us) us" >&2
}
# Feedback batches on the impressions of pre-passes: writes feedback_NAME.<thread>.jsonl and
# prints the generator's summary.
batches_for() { # NAME MAX_BATCHES PREPASS...
    local name=$1 max=$2 ids=()
    shift 2
    for p in "$@"; do ids+=("$WORK"/impressions_"$p".*.tsv); done
    python3 scripts/loadtest_bodies.py feedback --meta "$WORK/rank_meta.json" \
        --ids "${ids[@]}" --out-prefix "$WORK/feedback_$name" --threads "$THREADS" \
        --batch "$FEEDBACK_BATCH" --max-batches "$max" --order "$FEEDBACK_ORDER"
}
# wrk through the batches of batches_for NAME; every answer must be 200 with all its events
# recorded and none a duplicate.
feedback_run() { # NAME DURATION
    local name=$1 dur=$2
    rm -f "$WORK"/feedback_"$name".*.done
    wrk_until_done "$WORK/feedback_$name.txt" "$WORK/feedback_$name" \
        -t"$THREADS" -c"$CONNECTIONS" -d"$dur" --latency -H "$AUTH" -s "$LUA/feedback.lua" "$BASE/v1/feedback" -- \
        "$WORK/feedback_$name"
    wrk_result "$WORK/feedback_$name.txt" "$WORK/feedback_$name.json" "feedback $name"
    python3 - "$WORK/feedback_$name.json" "$FEEDBACK_BATCH" "$name" <<'PY' || die "feedback $name: events were not all recorded (see $WORK/feedback_$name.txt)"
import json, sys
r, batch, name = json.load(open(sys.argv[1])), int(sys.argv[2]), sys.argv[3]
problems = []
if r["non200"]:
    problems.append(f"{r['non200']} answers were not 200, first: {r.get('first_error', '')}")
if r["duplicates"]:
    problems.append(f"{r['duplicates']} events came back as duplicates")
if r["bad_body"]:
    problems.append(f"{r['bad_body']} answers had no recorded/duplicates counts")
if r["recorded"] != r["ok"] * batch:
    problems.append(f"recorded {r['recorded']} events in {r['ok']} answers of {batch}")
if problems:
    print(f"feedback {name}: " + "; ".join(problems), file=sys.stderr)
    sys.exit(1)
PY
}

# ---------------------------------------------------------------------------------------------
log "generating $RANK_POOL rank bodies from data/corpus"
python3 scripts/loadtest_bodies.py rank --out "$WORK" --count "$RANK_POOL" --users "$RANK_POOL" >"$WORK/rank_pool.json"
cat "$WORK/rank_pool.json" >&2
EVENTS_PER_IMPRESSION=$(jget "$WORK/rank_pool.json" feedback_events_per_impression)

log "a. GET /healthz: wrk -t$THREADS -c$CONNECTIONS -d$DURATION"
cpu_mark healthz_start
wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$LUA/healthz.lua" "$BASE/healthz" >"$WORK/healthz.txt" 2>&1
cpu_mark healthz_end
wrk_result "$WORK/healthz.txt" "$WORK/healthz.json" healthz
HEALTHZ_RPS=$(jget "$WORK/healthz.json" rps)
echo "healthz: $HEALTHZ_RPS req/s" >&2

log "b0. POST /v1/rank cold start: one pass over the $RANK_POOL bodies, the first rank calls of this process"
# The regex engine builds its lazy DFA states as it meets new text, per worker thread, so the
# first thousands of calls cost far more than later ones; this pass shows that cost and leaves
# the service warm for (b). Its impressions also serve the feedback calibration.
prepass cold "$RANK_POOL" 0 "$THREADS"

log "b. POST /v1/rank at saturation: warm-up $WARMUP, then wrk -t$THREADS -c$CONNECTIONS -d$DURATION"
wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" -H "$AUTH" -s "$LUA/rank.lua" "$BASE/v1/rank" -- "$WORK/rank_bodies.jsonl" >"$WORK/rank_warmup.txt" 2>&1
wrk_result "$WORK/rank_warmup.txt" "$WORK/rank_warmup.json" "rank warm-up"
perf_start b "$(seconds "$DURATION")"
cpu_mark rank_start
wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -H "$AUTH" -s "$LUA/rank.lua" "$BASE/v1/rank" -- "$WORK/rank_bodies.jsonl" >"$WORK/rank.txt" 2>&1
cpu_mark rank_end
perf_report b
wrk_result "$WORK/rank.txt" "$WORK/rank.json" rank
RANK_RPS=$(jget "$WORK/rank.json" rps)
echo "rank: $RANK_RPS req/s" >&2

RATE=${OPEN_LOOP_RATE:-$(python3 -c "import sys; print(max(1, int(float(sys.argv[1]) / 2)))" "$RANK_RPS")}
log "c. POST /v1/rank open-loop: oha -q $RATE -c $OPEN_LOOP_CONNECTIONS -z $DURATION --latency-correction"
# -Z sends the same pool of bodies as (b), a line each; --latency-correction measures from the
# time each request was due, so a stall shows in the percentiles (no coordinated omission).
cpu_mark open_loop_start
oha -z "$DURATION" -w -q "$RATE" -c "$OPEN_LOOP_CONNECTIONS" --latency-correction --no-tui --output-format json \
    -m POST -H "$AUTH" -T application/json -Z "$WORK/rank_bodies.jsonl" "$BASE/v1/rank" >"$WORK/open_loop.json" \
    2>"$WORK/open_loop.err" || die "oha failed: $(tail -n 5 "$WORK/open_loop.err")"
cpu_mark open_loop_end
python3 - "$WORK/open_loop.json" <<'PY' || die "open-loop run had failures (see $WORK/open_loop.json)"
import json, sys
r = json.load(open(sys.argv[1]))
codes = r.get("statusCodeDistribution", {})
errors = r.get("errorDistribution", {})
bad = {k: v for k, v in codes.items() if not k.startswith("2")}
if bad or errors:
    print(f"open loop: non-2xx {bad}, errors {errors}", file=sys.stderr)
    sys.exit(1)
PY

log "d. POST /v1/feedback in batches of $FEEDBACK_BATCH unique events"
# Impressions first: a rank pre-pass captures request_id and body of every answer (the API
# does not let the client choose request ids). A short calibration run on a first pool tells
# how many events the measured run can consume; its pool is then sized from that, so no batch
# is ever sent twice, and the run stops early (and says so) if the pool runs out anyway.
CAL_BATCHES=$((2000 > THREADS * 50 ? 2000 : THREADS * 50))
CAL_IMPRESSIONS=$(python3 -c "import math,sys; print(math.ceil(int(sys.argv[1]) * int(sys.argv[2]) / float(sys.argv[3]) * 1.05))" "$CAL_BATCHES" "$FEEDBACK_BATCH" "$EVENTS_PER_IMPRESSION")
if ((CAL_IMPRESSIONS > RANK_POOL)); then
    prepass calibration $((CAL_IMPRESSIONS - RANK_POOL))
    batches_for calibration "$CAL_BATCHES" cold calibration >"$WORK/feedback_calibration_pool.json"
else
    batches_for calibration "$CAL_BATCHES" cold >"$WORK/feedback_calibration_pool.json"
fi
feedback_run calibration "${CALIBRATION_S}s"
CAL_EPS=$(python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(r['recorded'] / (r['duration_us'] / 1e6))" "$WORK/feedback_calibration.json")
echo "calibration: $CAL_EPS events/s" >&2

MAIN_BATCHES=$(python3 -c "import math,sys; print(max(int(sys.argv[5]) * 20, math.ceil(float(sys.argv[1]) * int(sys.argv[2]) * float(sys.argv[3]) / int(sys.argv[4]))))" \
    "$CAL_EPS" "$DURATION_S" "$FEEDBACK_POOL_FACTOR" "$FEEDBACK_BATCH" "$THREADS")
MAIN_IMPRESSIONS=$(python3 -c "import math,sys; print(math.ceil(int(sys.argv[1]) * int(sys.argv[2]) / float(sys.argv[3]) * 1.03))" "$MAIN_BATCHES" "$FEEDBACK_BATCH" "$EVENTS_PER_IMPRESSION")
log "d. pool: $MAIN_BATCHES batches ($((MAIN_BATCHES * FEEDBACK_BATCH)) events) on $MAIN_IMPRESSIONS new impressions"
prepass main "$MAIN_IMPRESSIONS"
batches_for main "$MAIN_BATCHES" main >"$WORK/feedback_main_pool.json"
cat "$WORK/feedback_main_pool.json" >&2
sleep 0.2 # the pre-pass's last impressions reach the store (impression_flush_ms = 50 by default)
metrics >"$WORK/metrics_before.txt"
log "d. POST /v1/feedback: wrk -t$THREADS -c$CONNECTIONS -d$DURATION"
perf_start d "$(seconds "$DURATION")"
cpu_mark feedback_start
feedback_run main "$DURATION"
cpu_mark feedback_end
perf_report d
metrics >"$WORK/metrics_after.txt"
LAG_AT_END=$(metric_sum "$WORK/metrics_after.txt" guardrank_learner_lag_events)
EV_BEFORE=$(metric_sum "$WORK/metrics_before.txt" guardrank_feedback_events_total)
EV_AFTER=$(metric_sum "$WORK/metrics_after.txt" guardrank_feedback_events_total)
python3 - "$WORK/feedback_main.json" "$EV_BEFORE" "$EV_AFTER" "$FEEDBACK_BATCH" <<'PY' || die "server metrics disagree with the answers"
import json, sys
r = json.load(open(sys.argv[1]))
before, after, batch = float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
delta = after - before
# Batches in flight when wrk stopped may be recorded without wrk counting their answers.
if not (r["recorded"] <= delta <= r["sent"] * batch):
    print(f"guardrank_feedback_events_total grew by {delta}; the answers say {r['recorded']} "
          f"recorded of {r['sent'] * batch} sent", file=sys.stderr)
    sys.exit(1)
PY
# How long the learner takes to apply what the writer committed.
LEARNER_CATCHUP_S=
T0=$(date +%s.%N)
for _ in $(seq 1 600); do
    metrics >"$WORK/metrics_lag.txt"
    lag=$(metric_sum "$WORK/metrics_lag.txt" guardrank_learner_lag_events)
    if [[ $lag == 0 ]]; then
        LEARNER_CATCHUP_S=$(python3 -c "import sys, time; print(round(time.time() - float(sys.argv[1]), 2))" "$T0")
        break
    fi
    sleep 0.1
done

log "e. resident memory"
STATUS=$(cat "/proc/$SERVER_PID/status")
VMRSS_KB=$(awk '/^VmRSS:/ {print $2}' <<<"$STATUS")
VMHWM_KB=$(awk '/^VmHWM:/ {print $2}' <<<"$STATUS")
metrics >"$WORK/metrics_final.txt"
NON_2XX_SERVER=$(python3 - "$WORK/metrics_final.txt" <<'PY'
import re, sys
bad = 0
for line in open(sys.argv[1]):
    m = re.match(r'^guardrank_http_requests_total\{([^}]*)\}\s+(\S+)', line)
    if m and 'route="/v1/' in m.group(1):
        status = re.search(r'status="(\d+)"', m.group(1))
        if status and not status.group(1).startswith("2"):
            bad += float(m.group(2))
print(int(bad))
PY
)
IMPRESSIONS_DROPPED=$(metric_sum "$WORK/metrics_final.txt" guardrank_impressions_dropped_total)
DB_BYTES=$(du -sb "$DATA" | awk '{print $1}')

# ---------------------------------------------------------------------------------------------
python3 - "$OUT/results.json" "$WORK" <<PY
import json, os, platform, subprocess, sys
out, work = sys.argv[1], sys.argv[2]
def load(n):
    return json.load(open(os.path.join(work, n)))
def ms(us):
    return round(us / 1000.0, 3)
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
mem_kb = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal"))
def git(*a):
    try:
        return subprocess.run(["git", *a], capture_output=True, text=True, check=True).stdout.strip()
    except Exception:
        return None
h, rk, fb, ol = load("healthz.json"), load("rank.json"), load("feedback_main.json"), load("open_loop.json")
pool, fpool, cal = load("rank_pool.json"), load("feedback_main_pool.json"), load("feedback_calibration.json")
cold = load("prepass_cold.json")
lp = ol.get("latencyPercentiles", {})
osum = ol.get("summary", {})
fb_s = fb["duration_us"] / 1e6
events_per_s = fb["recorded"] / fb_s
rss_mb = int("$VMRSS_KB") / 1024
hwm_mb = int("$VMHWM_KB") / 1024
def thp_mode():
    # The kernel's transparent huge page mode: with "madvise" (Debian's default) mimalloc asks
    # for huge pages and the server's RSS is about 100 MB higher (BENCHMARKS.md).
    try:
        text = open("/sys/kernel/mm/transparent_hugepage/enabled").read()
        return text[text.index("[") + 1:text.index("]")]
    except Exception:
        return "unknown"
thp = thp_mode()
allow_thp = os.environ.get("MIMALLOC_ALLOW_THP")
res = {
    "when": subprocess.run(["date", "-u", "+%Y-%m-%dT%H:%M:%SZ"], capture_output=True, text=True).stdout.strip(),
    "machine": {"cpu": cpu, "cores": os.cpu_count(), "ram_gib": round(mem_kb / 1048576, 1),
                "kernel": platform.release(), "transparent_hugepage": thp,
                "mimalloc_allow_thp": allow_thp},
    "git": {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))},
    "tools": {"wrk": "$WRK_VERSION", "oha": "$OHA_VERSION"},
    "settings": {
        "duration_s": $DURATION_S, "warmup": "$WARMUP", "threads": $THREADS, "connections": $CONNECTIONS,
        "open_loop_connections": $OPEN_LOOP_CONNECTIONS,
        "durability": "$DURABILITY_NAME",
        "rate_limit_key_per_s": $RL_KEY_PER_S, "rate_limit_key_burst": $RL_KEY_BURST,
        "rate_limit_user_per_s": $RL_USER_PER_S, "rate_limit_user_burst": $RL_USER_BURST,
    },
    "workload": {"rank_pool": pool, "feedback_pool": fpool},
    "healthz": {"rps": round(h["rps"], 1), "p50_ms": ms(h["latency_p50_us"]), "p99_ms": ms(h["latency_p99_us"])},
    "rank_cold_start": {"requests": cold["captured"], "seconds": round(cold["duration_us"] / 1e6, 2),
                        "rps": round(cold["captured"] / (cold["duration_us"] / 1e6), 1),
                        "p50_ms": ms(cold["latency_p50_us"]), "p99_ms": ms(cold["latency_p99_us"])},
    "rank_saturation": {"rps": round(rk["rps"], 1), "p50_ms": ms(rk["latency_p50_us"]),
                        "p99_ms": ms(rk["latency_p99_us"]), "p999_ms": ms(rk["latency_p999_us"]),
                        "candidates_per_s": round(rk["rps"] * 4, 1)},
    "rank_open_loop": {"target_rps": $RATE, "achieved_rps": round(osum.get("requestsPerSec", 0), 1),
                       "success_rate": osum.get("successRate"),
                       "p50_ms": round(lp.get("p50", 0) * 1000, 3), "p99_ms": round(lp.get("p99", 0) * 1000, 3),
                       "p999_ms": round(lp.get("p99.9", 0) * 1000, 3),
                       },
    "feedback": {"requests_per_s": round(fb["ok"] / fb_s, 1), "events_per_s": round(events_per_s, 1),
                 "events_per_batch": $FEEDBACK_BATCH,
                 "p50_ms": ms(fb["latency_p50_us"]), "p99_ms": ms(fb["latency_p99_us"]),
                 "p999_ms": ms(fb["latency_p999_us"]),
                 "recorded": fb["recorded"], "duplicates": fb["duplicates"], "non_2xx": fb["non200"],
                 "measured_s": round(fb_s, 2), "pool_exhausted": bool(fb["exhausted"]),
                 "calibration_events_per_s": round(cal["recorded"] / (cal["duration_us"] / 1e6), 1),
                 "learner_lag_events_at_end": $LAG_AT_END,
                 "learner_catchup_s": ${LEARNER_CATCHUP_S:-None}},
    "memory": {"vmrss_mb": round(rss_mb, 1), "vmhwm_mb": round(hwm_mb, 1),
               "vmrss_at_start_mb": round(int("$RSS_START_KB") / 1024, 1),
               "users_seen": pool["users"], "data_dir_mb": round($DB_BYTES / 1048576, 1)},
    "server": {"non_2xx_on_v1": $NON_2XX_SERVER, "impressions_dropped": $IMPRESSIONS_DROPPED},
}
def per_request(phase, n):
    # The server's CPU per request (per event for feedback) in a phase, in microseconds, by
    # thread kind: async workers (HTTP, JSON, scoring), SQLite's connection threads, the learner.
    # Per thread, so a thread that ends during the phase (an idle blocking-pool thread) takes
    # only its time in the phase with it, not all of its time before.
    a, b = load(f"cpu_{phase}_start.json"), load(f"cpu_{phase}_end.json")
    us = {"async": 0.0, "sqlite": 0.0, "learner": 0.0, "other": 0.0}
    for tid, (kind, ticks) in b["threads"].items():
        before = a["threads"].get(tid, [kind, 0])[1]
        us[kind] += (ticks - before) / b["hz"] * 1e6 / max(n, 1)
    us["total"] = sum(us.values())
    out = {k: round(v, 1) for k, v in us.items()}
    out["written_bytes"] = round((b["wchar"] - a["wchar"]) / max(n, 1))
    out["read_bytes"] = round((b["rchar"] - a["rchar"]) / max(n, 1))
    return out
ol_requests = sum(ol.get("statusCodeDistribution", {}).values())
res["server_per_request"] = {
    "healthz_per_request": per_request("healthz", h["requests"]),
    "rank_per_request": per_request("rank", rk["requests"]),
    "open_loop_per_request": per_request("open_loop", ol_requests),
    "feedback_per_event": per_request("feedback", fb["recorded"]),
}
res["targets"] = {
    "rank_rps_at_least_half_healthz": res["rank_saturation"]["rps"] >= res["healthz"]["rps"] / 2,
    "open_loop_p99_at_most_2ms": res["rank_open_loop"]["p99_ms"] <= 2.0,
    "feedback_at_least_100k_events_per_s": events_per_s >= 100_000,
    "rss_at_most_300mb_at_this_scale": hwm_mb <= 300,
}
os.makedirs(os.path.dirname(out), exist_ok=True)
with open(out, "w") as f:
    json.dump(res, f, indent=2)
    f.write("\n")

def yn(b):
    return "yes" if b else "NO"
t = res["targets"]
rows = [
    ("a. GET /healthz (wrk)", f"{res['healthz']['rps']:,.0f} req/s", f"{res['healthz']['p50_ms']} ms",
     f"{res['healthz']['p99_ms']} ms", "floor of the HTTP stack"),
    (f"b0. POST /v1/rank, cold: first {cold['captured']:,} calls", f"{res['rank_cold_start']['rps']:,.0f} req/s",
     f"{res['rank_cold_start']['p50_ms']} ms", f"{res['rank_cold_start']['p99_ms']} ms",
     f"{res['rank_cold_start']['seconds']} s to warm up"),
    ("b. POST /v1/rank, saturation (wrk)", f"{res['rank_saturation']['rps']:,.0f} req/s",
     f"{res['rank_saturation']['p50_ms']} ms", f"{res['rank_saturation']['p99_ms']} ms",
     f">= healthz/2: {yn(t['rank_rps_at_least_half_healthz'])}"),
    (f"c. POST /v1/rank, open loop at {$RATE:,}/s (oha)", f"{res['rank_open_loop']['achieved_rps']:,.0f} req/s",
     f"{res['rank_open_loop']['p50_ms']} ms", f"{res['rank_open_loop']['p99_ms']} ms",
     f"p99 <= 2 ms: {yn(t['open_loop_p99_at_most_2ms'])}"),
    (f"d. POST /v1/feedback, {$FEEDBACK_BATCH}/batch (wrk)", f"{res['feedback']['events_per_s']:,.0f} events/s",
     f"{res['feedback']['p50_ms']} ms", f"{res['feedback']['p99_ms']} ms",
     f">= 100k events/s: {yn(t['feedback_at_least_100k_events_per_s'])}"),
    ("e. resident memory after the run", f"RSS {res['memory']['vmrss_mb']} MB", f"HWM {res['memory']['vmhwm_mb']} MB",
     f"start {res['memory']['vmrss_at_start_mb']} MB",
     f"<= 300 MB: {yn(t['rss_at_most_300mb_at_this_scale'])} ({pool['users']} users, not 1M)"),
]
w = [max(len(r[i]) for r in rows + [("phase", "throughput", "p50", "p99", "target")]) for i in range(5)]
def line(r):
    return "  ".join(c.ljust(w[i]) for i, c in enumerate(r)).rstrip()
print()
thp_note = f"THP {thp}" + (f", MIMALLOC_ALLOW_THP={allow_thp}" if allow_thp is not None else "")
print(f"guardrank load test, {res['when']}, {cpu}, {os.cpu_count()} cores, {thp_note}; DURATION={$DURATION_S}s per phase")
print(f"rate limits raised to key {$RL_KEY_PER_S:,}/s (burst {$RL_KEY_BURST:,}), user {$RL_USER_PER_S:,}/s "
      f"(burst {$RL_USER_BURST:,}); durability: $DURABILITY_NAME")
print()
print(line(("phase", "throughput", "p50", "p99", "target")))
for r in rows:
    print(line(r))
print()
f = res["feedback"]
print(f"feedback: {f['recorded']:,} events recorded in {f['measured_s']} s ({f['requests_per_s']:,.0f} batches/s), "
      f"{f['duplicates']} duplicates, {f['non_2xx']} non-2xx; learner lag at the end {f['learner_lag_events_at_end']:,} events, "
      f"caught up after {f['learner_catchup_s']} s"
      + ("; POOL EXHAUSTED before the end (rate measured over the shorter window)" if f["pool_exhausted"] else ""))
print(f"rank bodies: {pool['bodies']} bodies, {pool['body_bytes_mean']} B mean, {pool['candidates_per_body']} candidates, "
      f"{pool['insecure_candidate_share']:.0%} insecure; server non-2xx on /v1: {res['server']['non_2xx_on_v1']}")
c = res["server_per_request"]
def cpu_line(name, v):
    return (f"  {name}: {v['total']:,.1f} us (async workers {v['async']:,.1f}, SQLite {v['sqlite']:,.1f}, "
            f"learner {v['learner']:,.1f}, other {v['other']:,.1f}); "
            f"{v['written_bytes']:,} B written, {v['read_bytes']:,} B read")
print("server cost per request: CPU time (user + system) by thread kind, and bytes through write and read")
print("calls (written: answers, WAL, checkpoints; read: files only, WAL and database):")
print(cpu_line("a. per /healthz request", c["healthz_per_request"]))
print(cpu_line("b. per rank request at saturation", c["rank_per_request"]))
print(cpu_line("c. per rank request, open loop", c["open_loop_per_request"]))
print(cpu_line("d. per feedback event", c["feedback_per_event"]))
print(f"results: {out}")
PY

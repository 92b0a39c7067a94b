#!/usr/bin/env bash
# Load test of several guardrank replicas sharing one PostgreSQL log (issue 6): starts REPLICAS
# servers on a fresh schema of the PostgreSQL at PG_URL, then measures with wrk, one wrk per
# replica running at the same time (a load balancer's even split):
#   r. POST /v1/rank at saturation, the body pool of scripts/loadtest.sh;
#   f. POST /v1/feedback in batches of 50 unique events, durable (acknowledged = committed to
#      PostgreSQL). The impressions come from a rank pre-pass spread over every replica, and
#      the batches mix them, so most feedback reaches a replica that did not rank its request.
# It ends by checking that every replica applied every event (same log position and the same
# model checksum on GET /admin/state). Summary to stdout and target/loadtest/replicas.json.
#
# Usage: scripts/loadtest_replicas.sh
#        DURATION=5s scripts/loadtest_replicas.sh        # a smoke run
# Environment [defaults]: PG_URL [postgres://postgres@127.0.0.1:5432/test]; REPLICAS [2];
# DURATION [20s] per measured phase; WARMUP [2s]; CONNECTIONS [64] in all, split evenly;
# IMPRESSIONS [40000] for the feedback pool (about 5.7 events each); FEEDBACK_ORDER [decisions]
# (as in scripts/loadtest.sh); SKIP_BUILD [0].
# Needs: bash, curl, python3 >= 3.11, psql; installs wrk (apt) if missing.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432/test}
REPLICAS=${REPLICAS:-2}
DURATION=${DURATION:-20s}
WARMUP=${WARMUP:-2s}
CONNECTIONS=${CONNECTIONS:-64}
IMPRESSIONS=${IMPRESSIONS:-40000}
SKIP_BUILD=${SKIP_BUILD:-0}
PER=$((CONNECTIONS / REPLICAS))

OUT=$ROOT/target/loadtest
WORK=$OUT/replicas
LUA=$ROOT/scripts/loadtest
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/guardrank
SCHEMA=loadtest_$(date +%s)_$$
STORE="$PG_URL?schema=$SCHEMA"

log() { printf '\n== %s\n' "$*" >&2; }
die() { printf '\nloadtest_replicas: FAILED: %s\n' "$*" >&2; exit 1; }
jget() { python3 -c $'import json, sys\nv = json.load(open(sys.argv[1]))\nfor k in sys.argv[2:]:\n    v = v[k]\nprint(v)' "$@"; }

command -v psql >/dev/null || die "psql is needed"
if ! command -v wrk >/dev/null; then
    log "installing wrk"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi
if [[ $SKIP_BUILD != 1 ]]; then
    log "cargo build --release"
    cargo build --release --quiet
fi
psql -q "$PG_URL" -c "SELECT 1" >/dev/null || die "PostgreSQL at $PG_URL is not reachable"

rm -rf "$WORK"
mkdir -p "$WORK"
DATA=$(mktemp -d -t guardrank-replicas.XXXXXX)
PIDS=()
BASES=()
cleanup() {
    local rc=$?
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    psql -q "$PG_URL" -c "DROP SCHEMA IF EXISTS $SCHEMA CASCADE" >/dev/null 2>&1 || true
    rm -rf "$DATA"
    ((rc == 0)) || echo "server logs: $WORK/server-*.log" >&2
}
trap cleanup EXIT

cat >"$DATA/guardrank.toml" <<EOF
# scripts/loadtest_replicas.sh: rate limits far above the test load; the rest at defaults.
rate_limit_key_per_s = 100000000.0
rate_limit_key_burst = 200000000.0
rate_limit_user_per_s = 10000000.0
rate_limit_user_burst = 20000000.0
EOF

log "keys on $SCHEMA"
PLUGIN_KEY=$("$BIN" keys create --scope plugin --store "$STORE" --config "$DATA/guardrank.toml" 2>/dev/null)
ADMIN_KEY=$("$BIN" keys create --scope admin --store "$STORE" --config "$DATA/guardrank.toml" 2>/dev/null)
[[ $PLUGIN_KEY == grk_* && $ADMIN_KEY == grk_* ]] || die "keys create did not print keys"
AUTH="Authorization: Bearer $PLUGIN_KEY"

log "starting $REPLICAS replicas"
for k in $(seq 0 $((REPLICAS - 1))); do
    mkdir -p "$DATA/r$k"
    "$BIN" serve --addr 127.0.0.1:0 --store "$STORE" --data-dir "$DATA/r$k" --config "$DATA/guardrank.toml" \
        >"$WORK/server-$k.log" 2>&1 &
    PIDS+=($!)
done
for k in $(seq 0 $((REPLICAS - 1))); do
    base=
    for _ in $(seq 1 300); do
        base=$(sed -n 's/^guardrank listening on \(http:[^ ]*\).*/\1/p' "$WORK/server-$k.log" | head -n1)
        [[ -n $base ]] && break
        sleep 0.1
    done
    [[ -n $base ]] || die "replica $k did not start: $(tail -n 5 "$WORK/server-$k.log")"
    for _ in $(seq 1 600); do curl -fsS "$base/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
    curl -fsS "$base/readyz" >/dev/null || die "replica $k did not become ready"
    BASES+=("$base")
    echo "replica $k at $base (pid ${PIDS[$k]})" >&2
done

log "rank bodies"
python3 scripts/loadtest_bodies.py rank --out "$WORK" >"$WORK/rank_pool.json"

# Runs one wrk per replica at once: wrk_all NAME LUA ARGS_BEFORE_URL... -- then per-replica
# script arguments are built by the caller through the ARGS_FOR function.
wrk_all() { # NAME DURATION LUA_SCRIPT PATH
    local name=$1 dur=$2 script=$3 path=$4 pids=()
    for k in $(seq 0 $((REPLICAS - 1))); do
        # shellcheck disable=SC2046
        wrk -t1 -c"$PER" -d"$dur" --latency -H "$AUTH" -s "$LUA/$script" "${BASES[$k]}$path" -- $(args_for "$name" "$k") \
            >"$WORK/$name-$k.txt" 2>&1 &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || die "wrk ($name) failed"; done
    for k in $(seq 0 $((REPLICAS - 1))); do
        grep '^LOADTEST_JSON ' "$WORK/$name-$k.txt" | sed 's/^LOADTEST_JSON //' >"$WORK/$name-$k.json" ||
            die "$name: wrk printed no summary (see $WORK/$name-$k.txt)"
        if grep -q 'Non-2xx or 3xx responses' "$WORK/$name-$k.txt"; then
            die "$name on replica $k: $(grep 'Non-2xx' "$WORK/$name-$k.txt" | xargs)"
        fi
    done
}

args_for() { # NAME REPLICA: the Lua script's arguments
    case $1 in
        rank*) echo "$WORK/rank_bodies.jsonl" ;;
        prepass) echo "$WORK/rank_bodies.jsonl $WORK/impressions_r$2 $(((IMPRESSIONS + REPLICAS - 1) / REPLICAS)) $2 $REPLICAS" ;;
        feedback) echo "$WORK/feedback_r$2 50" ;;
    esac
}

# The loops below that watch wrk use bash builtins only: they share the two cores with the
# replicas, and spawning find and wc ten times a second costs the servers measurably
# (BENCHMARKS.md, "Feedback commits").
exec {NAP_FD}<> <(:) # a descriptor that never has input: `read -t` on it waits like sleep
nap() { # SECONDS
    read -r -t "$1" -u "$NAP_FD" _ || true
}
count_done() { # GLOB (under $WORK): sets DONE_N to the number of files it matches
    local files=("$WORK"/$1)
    [[ -e ${files[0]} ]] || files=()
    DONE_N=${#files[@]}
}

log "r. POST /v1/rank: warm-up $WARMUP, then $REPLICAS x wrk -t1 -c$PER -d$DURATION"
wrk_all rank_warmup "$WARMUP" rank.lua /v1/rank
wrk_all rank "$DURATION" rank.lua /v1/rank

log "f. pre-pass: $IMPRESSIONS impressions ranked across the replicas"
wrk_all prepass 600s prepass.lua /v1/rank &
PRE=$!
for _ in $(seq 1 6000); do
    count_done 'impressions_r*.0.done'
    ((DONE_N >= REPLICAS)) && break
    nap 0.1
done
pkill -INT -P "$PRE" wrk 2>/dev/null || true
wait "$PRE" || die "pre-pass failed"
python3 scripts/loadtest_bodies.py feedback --meta "$WORK/rank_meta.json" \
    --ids "$WORK"/impressions_r*.0.tsv --out-prefix "$WORK/feedback" --threads "$REPLICAS" \
    --batch 50 --order "${FEEDBACK_ORDER:-decisions}" >"$WORK/feedback_pool.json"
for k in $(seq 0 $((REPLICAS - 1))); do ln -sf "$WORK/feedback.$k.jsonl" "$WORK/feedback_r$k.0.jsonl"; done
sleep 0.2 # the pre-pass's last impressions reach the store (impression_flush_ms = 50)

log "f. POST /v1/feedback: $REPLICAS x wrk -t1 -c$PER -d$DURATION"
wrk_all feedback "$DURATION" feedback.lua /v1/feedback &
FB=$!
for _ in $(seq 1 "$((10 * ${DURATION%s} + 600))"); do
    kill -0 "$FB" 2>/dev/null || break
    count_done 'feedback_r*.0.done'
    if ((DONE_N >= REPLICAS)); then pkill -INT -P "$FB" wrk 2>/dev/null || true; break; fi
    nap 0.1
done
wait "$FB" || die "feedback phase failed"

log "convergence: every replica applies every event"
for _ in $(seq 1 100); do
    sleep 0.2
    for k in $(seq 0 $((REPLICAS - 1))); do
        curl -fsS -H "Authorization: Bearer $ADMIN_KEY" "${BASES[$k]}/admin/state" >"$WORK/state-$k.json"
    done
    distinct=$(for k in $(seq 0 $((REPLICAS - 1))); do jget "$WORK/state-$k.json" state_checksum; done | sort -u | wc -l)
    ((distinct == 1)) && break
done
((distinct == 1)) || die "the replicas did not converge within 20 s: $(cat "$WORK"/state-*.json)"

python3 - "$WORK" "$REPLICAS" "$DURATION" <<'PY'
import json, sys, time, subprocess
work, n, duration = sys.argv[1], int(sys.argv[2]), sys.argv[3]
load = lambda name, k: json.load(open(f"{work}/{name}-{k}.json"))
rank = [load("rank", k) for k in range(n)]
fb = [load("feedback", k) for k in range(n)]
states = [load("state", k) for k in range(n)]
problems = []
for k, f in enumerate(fb):
    if f.get("non200", 0) or f.get("duplicates", 0) or f.get("bad_body", 0):
        problems.append(f"replica {k}: non200={f.get('non200')} duplicates={f.get('duplicates')} first={f.get('first_error', '')}")
recorded = sum(int(f.get("recorded", 0)) for f in fb)
fb_s = max(f["duration_us"] for f in fb) / 1e6
ms = lambda us: round(us / 1000, 3)
result = {
    "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "replicas": n,
    "store": "postgresql",
    "duration": duration,
    "git": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
    "rank": {"rps": round(sum(r["rps"] for r in rank), 1),
             "per_replica": [{"rps": round(r["rps"], 1), "p50_ms": ms(r["latency_p50_us"]), "p99_ms": ms(r["latency_p99_us"])} for r in rank]},
    "feedback": {"events_per_s": round(recorded / fb_s, 1), "recorded": recorded, "seconds": round(fb_s, 2),
                 "per_replica": [{"events": int(f.get("recorded", 0)), "p50_ms": ms(f["latency_p50_us"]), "p99_ms": ms(f["latency_p99_us"])} for f in fb]},
    "states": states,
}
json.dump(result, open(f"{work}/../replicas.json", "w"), indent=1)
print(f"\n{n} replicas on PostgreSQL, {duration} per phase, commit {result['git']}")
print(f"rank:     {result['rank']['rps']:,.0f} req/s in all; per replica " +
      "; ".join(f"{r['rps']:,.0f} req/s p50 {r['p50_ms']} ms p99 {r['p99_ms']} ms" for r in result["rank"]["per_replica"]))
print(f"feedback: {result['feedback']['events_per_s']:,.0f} events/s durable ({recorded:,} events in {fb_s:.1f} s); per replica " +
      "; ".join(f"p50 {r['p50_ms']} ms p99 {r['p99_ms']} ms" for r in result["feedback"]["per_replica"]))
print(f"state per replica: {json.dumps(states)}")
print(f"results: {work}/../replicas.json")
if problems:
    sys.exit("problems: " + "; ".join(problems))
PY

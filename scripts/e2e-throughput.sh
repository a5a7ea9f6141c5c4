#!/usr/bin/env bash
# End-to-end throughput as an operator runs botpipe: `botpipe collector` serving RECORDS records
# from CSV files (two botnet types, 30% of the records repeating an earlier IP) and `botpipe run`
# with the default configuration (2 workers, embedded queue) except the store URL and one
# endpoint with batch_size 5000, into a fresh database. Prints records/s from the first pull to
# the last stored row. docs/performance.md reports its figures.
#
# Usage: scripts/e2e-throughput.sh postgres|mysql|sqlite [RECORDS] [GEO_DATA_DIR]
#   RECORDS       default 200000
#   GEO_DATA_DIR  a data dir whose geo/ holds the files scripts/fetch-geodata.sh installs
#                 (default ./botpipe-data); without them enrichment is off (said in the output)
#   BOTPIPE       the binary (default target/release/botpipe; built if missing)
#   PG_ADMIN      default postgres://postgres@127.0.0.1:5432/postgres
#   MYSQL_ADMIN   default mysql://root@127.0.0.1:3306/mysql
#   WORKERS       overrides the default worker count (for the scaling figures)
#   BATCH         the endpoint's batch_size (default 5000, as the legacy puller pulled)
#   SAMPLE=1      also samples what the database sessions are doing (PostgreSQL wait events,
#                 MySQL thread states) every poll, and prints the distribution: where store
#                 time goes
# Needs python3 (the generator) and psql or mysql (to create the database and count rows).
set -euo pipefail

backend=${1:?usage: scripts/e2e-throughput.sh postgres|mysql|sqlite [RECORDS] [GEO_DATA_DIR]}
records=${2:-200000}
geo_dir=${3:-./botpipe-data}
bin=${BOTPIPE:-target/release/botpipe}
pg_admin=${PG_ADMIN:-postgres://postgres@127.0.0.1:5432/postgres}
mysql_admin=${MYSQL_ADMIN:-mysql://root@127.0.0.1:3306/mysql}

[ -x "$bin" ] || cargo build --release --quiet
work=$(mktemp -d)
collector_pid=
run_pid=
db="botpipe_e2e_$(date +%s)_$$"
cleanup() {
  [ -n "$run_pid" ] && kill "$run_pid" 2>/dev/null || true
  [ -n "$collector_pid" ] && kill "$collector_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  case $backend in
    postgres) psql -q "$pg_admin" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true ;;
    mysql) mysql -h 127.0.0.1 -uroot -e "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true ;;
  esac
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# 1. The collector's input: RECORDS lines over two types, 30% repeating an earlier IP, times
#    within the last hour (collector-local wall clock).
mkdir -p "$work/logs" "$work/data/geo"
python3 - "$records" "$work/logs" <<'EOF'
import random, sys, datetime
n, out = int(sys.argv[1]), sys.argv[2]
rng = random.Random(18)
firsts = [1, 2, 5, 14, 27, 36, 39, 42, 49, 58, 59, 60, 61, 101, 103, 106, 110, 111, 112, 113,
          114, 115, 116, 117, 118, 119, 120, 121, 122, 123, 124, 125, 175, 180, 182, 183, 202,
          210, 211, 218, 219, 220, 221, 222, 24, 31, 45, 62, 77, 81, 89, 91, 93, 95, 151, 176, 185]
now = datetime.datetime.now()
seen = []
files = {t: open(f"{out}/{t}.csv", "w") for t in ("mozi", "ramnit")}
for i in range(n):
    if seen and rng.random() < 0.30:
        ip = rng.choice(seen)
    else:
        ip = f"{rng.choice(firsts)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        seen.append(ip)
    t = now - datetime.timedelta(seconds=rng.randrange(3600))
    files["mozi" if i % 5 < 3 else "ramnit"].write(f"{t:%Y-%m-%d %H:%M:%S},{ip}\n")
EOF

distinct=$(python3 - "$work/logs" <<'EOF'
import sys
n = 0
for t in ("mozi", "ramnit"):
    n += len(set(open(f"{sys.argv[1]}/{t}.csv").read().splitlines()))
print(n)
EOF
)

# 2. The collector (it keeps one copy of a repeated line: wait for the distinct ones).
cport=$(free_port)
cat > "$work/collector.toml" <<EOF
listen = "127.0.0.1:$cport"
api_key = "e2e-key"
cache_path = "$work/collector-cache.sqlite"
[[sources]]
name = "mozi"
kind = "csv"
botnet_type = "mozi"
path = "$work/logs/mozi.csv"
[[sources]]
name = "ramnit"
kind = "csv"
botnet_type = "ramnit"
path = "$work/logs/ramnit.csv"
EOF
"$bin" collector --config "$work/collector.toml" > "$work/collector.log" 2>&1 &
collector_pid=$!
for _ in $(seq 1 600); do
  cached=$(curl -sf --noproxy '*' -H 'X-API-Key: e2e-key' "http://127.0.0.1:$cport/api/stats" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin).get("cached_records", 0))' 2>/dev/null || echo 0)
  [ "$cached" -ge "$distinct" ] && break
  sleep 0.5
done
echo "collector: $cached records cached"

# 3. A fresh database and botpipe's configuration: defaults except the store and one endpoint.
sample_sql=
case $backend in
  postgres)
    psql -q "$pg_admin" -c "CREATE DATABASE $db" >/dev/null
    store_url="${pg_admin%/*}/$db"
    count_sql() { psql -tA "$store_url" -c "$1" 2>/dev/null || echo 0; }
    sample_sql="SELECT COALESCE(wait_event_type || ':' || wait_event, 'CPU') FROM pg_stat_activity
                WHERE datname = current_database() AND state = 'active' AND pid <> pg_backend_pid()" ;;
  mysql)
    mysql -h 127.0.0.1 -uroot -e "CREATE DATABASE $db CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
    store_url="${mysql_admin%/*}/$db"
    count_sql() { mysql -h 127.0.0.1 -uroot -N "$db" -e "$1" 2>/dev/null || echo 0; }
    sample_sql="SELECT COALESCE(NULLIF(state, ''), command) FROM information_schema.processlist
                WHERE db = DATABASE() AND command <> 'Sleep' AND id <> CONNECTION_ID()" ;;
  sqlite)
    store_url="sqlite://$work/store.sqlite"
    count_sql() { python3 -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute(sys.argv[2]).fetchone()[0])' "$work/store.sqlite" "$1" 2>/dev/null || echo 0; } ;;
  *) echo "backend must be postgres, mysql or sqlite" >&2; exit 2 ;;
esac
if [ -d "$geo_dir/geo" ] && ls "$geo_dir"/geo/*.mmdb >/dev/null 2>&1; then
  cp "$geo_dir"/geo/*.mmdb "$geo_dir"/geo/*.csv "$geo_dir"/geo/*.ipdb "$work/data/geo/" 2>/dev/null || true
  geo="real geodata ($(ls "$work/data/geo" | tr '\n' ' '))"
else
  geo="no geodata (enrichment off)"
fi
hport=$(free_port)
cat > "$work/botpipe.toml" <<EOF
data_dir = "$work/data"
[http]
listen = "127.0.0.1:$hport"
[store]
url = "$store_url"
[endpoints.c2]
url = "http://127.0.0.1:$cport"
api_key = "e2e-key"
batch_size = ${BATCH:-5000}
EOF

# 4. Run until every distinct event is a communication row.
workers_flag=()
[ -n "${WORKERS:-}" ] && workers_flag=(--workers "$WORKERS")
start=$(date +%s.%N)
"$bin" --config "$work/botpipe.toml" --log-format json run "${workers_flag[@]}" > "$work/run.log" 2>&1 &
run_pid=$!
stored=0
while :; do
  stored=$(count_sql "SELECT (SELECT count(*) FROM botnet_communications_mozi) + (SELECT count(*) FROM botnet_communications_ramnit)")
  stored=${stored:-0}
  [ "$stored" -ge "$distinct" ] && break
  kill -0 "$run_pid" 2>/dev/null || { echo "botpipe run exited early; see its log:" >&2; tail -20 "$work/run.log" >&2; exit 1; }
  if [ "${SAMPLE:-0}" = 1 ] && [ -n "$sample_sql" ]; then
    count_sql "$sample_sql" >> "$work/samples.txt" || true
  fi
  sleep 0.2
done
end=$(date +%s.%N)
dead=$(count_sql "SELECT count(*) FROM botpipe_dead_letters")
retries=$(curl -s --noproxy '*' "http://127.0.0.1:$hport/metrics" | awk '/^botpipe_store_retries_total/ {s+=$2} END {print s+0}')
deadlocks=$(curl -s --noproxy '*' "http://127.0.0.1:$hport/metrics" | awk '/^botpipe_store_deadlocks_total/ {s+=$2} END {print s+0}')
metric_sum() { curl -s --noproxy '*' "http://127.0.0.1:$hport/metrics" | awk -v m="$1" '$1 ~ "^"m {s+=$2} END {print s+0}'; }
store_secs=$(metric_sum botpipe_store_batch_seconds_sum)
store_batches=$(metric_sum botpipe_store_batch_seconds_count)
cpu=$(ps -o cputime= -p "$run_pid" | awk -F: '{print ($1*3600)+($2*60)+$3}')
echo "store: $store_batches batches, $store_secs s in Store::apply (summed over workers); botpipe CPU ${cpu}s"
if [ -s "$work/samples.txt" ]; then
  echo "database sessions while running (share of samples):"
  sort "$work/samples.txt" | uniq -c | sort -rn | head -8 \
    | awk -v t="$(wc -l < "$work/samples.txt")" '{c=$1; $1=""; printf "  %5.1f%% %s\n", 100*c/t, $0}'
fi
python3 - "$records" "$distinct" "$start" "$end" "$backend" "$dead" "$retries" "$deadlocks" "$geo" "${WORKERS:-default}" "${BATCH:-5000}" <<'EOF'
import sys
n, distinct, start, end, backend, dead, retries, deadlocks, geo, workers, batch = sys.argv[1:]
secs = float(end) - float(start)
print(f"e2e {backend}: {int(n):,} records ({int(distinct):,} distinct events) stored in {secs:.1f} s "
      f"= {int(n)/secs:,.0f} records/s; workers {workers}; batch_size {batch}; dead letters {dead}; "
      f"store retries {retries}; deadlocks {deadlocks}; {geo}")
EOF

#!/usr/bin/env bash
# Installs and starts what the tests need on a Debian machine: PostgreSQL on 127.0.0.1:5432,
# MariaDB on 127.0.0.1:3306 and Redis on 127.0.0.1:6379, and gives the tests the admin access
# they use (see README, Tests). Idempotent: it installs only the packages that are missing,
# starts only a service that is down, and changes access only where the tests are refused.
# Run as root. `.ci/run` calls it before the tests.
set -euo pipefail

log() { printf '%s\n' "$*"; }

wait_for() { # name, check command...
  local name=$1; shift
  for _ in $(seq 1 60); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  echo "$name did not come up" >&2
  return 1
}

if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/services.sh installs and starts system services: run it as root" >&2
  exit 1
fi

# Install what is missing (the Debian package names; their dependencies bring the clients:
# pg_isready/psql, mariadb/mysqladmin, redis-cli).
missing=()
for pkg in postgresql mariadb-server redis-server; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi

# Start what is down. Plain commands rather than systemctl: CI machines and containers often
# run without systemd.
if ! pg_isready -h 127.0.0.1 -p 5432 >/dev/null 2>&1; then
  log "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n 1)" main start
  wait_for PostgreSQL pg_isready -h 127.0.0.1 -p 5432
fi
if ! mysqladmin --protocol=tcp -h 127.0.0.1 -P 3306 -uroot ping >/dev/null 2>&1 \
   && ! mysqladmin ping >/dev/null 2>&1; then
  log "starting MariaDB"
  install -d -o mysql -g mysql /run/mysqld
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
  wait_for MariaDB mysqladmin ping
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then
  log "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_for Redis sh -c 'redis-cli -h 127.0.0.1 -p 6379 ping | grep -q PONG'
fi

# Access. The tests connect as postgres over TCP without a password; Debian asks for one
# (scram-sha-256), so trust that one user from 127.0.0.1 (a test machine, not a server).
if ! psql -h 127.0.0.1 -U postgres -w -d postgres -c 'SELECT 1' >/dev/null 2>&1; then
  version="$(ls /etc/postgresql | sort -V | tail -n 1)"
  hba="/etc/postgresql/$version/main/pg_hba.conf"
  log "trusting postgres from 127.0.0.1 in $hba"
  sed -i '1i host all postgres 127.0.0.1/32 trust # botpipe tests (scripts/services.sh)' "$hba"
  pg_ctlcluster --skip-systemctl-redirect "$version" main reload
  psql -h 127.0.0.1 -U postgres -w -d postgres -c 'SELECT 1' >/dev/null
fi
# The tests use root over TCP without a password; where Debian lets root in only through the
# socket, they fall back to a dedicated user with the same rights (tests/it/helpers/db.rs).
if ! mariadb --protocol=tcp -h 127.0.0.1 -P 3306 -uroot -e 'SELECT 1' >/dev/null 2>&1; then
  log "creating the MariaDB user botpipe_test (root may not log in over TCP)"
  mariadb -uroot <<'SQL'
CREATE USER IF NOT EXISTS 'botpipe_test'@'127.0.0.1';
CREATE USER IF NOT EXISTS 'botpipe_test'@'localhost';
GRANT ALL PRIVILEGES ON *.* TO 'botpipe_test'@'127.0.0.1' WITH GRANT OPTION;
GRANT ALL PRIVILEGES ON *.* TO 'botpipe_test'@'localhost' WITH GRANT OPTION;
SQL
  mariadb --protocol=tcp -h 127.0.0.1 -P 3306 -ubotpipe_test -e 'SELECT 1' >/dev/null
fi

log "PostgreSQL, MariaDB and Redis are up"

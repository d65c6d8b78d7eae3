#!/usr/bin/env bash
# Make sure PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) answer,
# starting this machine's own when they do not. The tests isolate themselves
# inside them (their own database, their own key prefix).
set -euo pipefail

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if ! port_open 5432; then
  echo "services: starting PostgreSQL"
  version="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n1)"
  if [ -z "$version" ]; then
    version="$(ls /usr/lib/postgresql | sort -V | tail -n1)"
    as_root pg_createcluster "$version" main
  fi
  conf="/etc/postgresql/$version/main"
  # Trust local connections on loopback: a throwaway test cluster.
  if ! grep -q "fanz-test" "$conf/pg_hba.conf"; then
    as_root sh -c "printf '# fanz-test\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\nlocal all all trust\n' | cat - '$conf/pg_hba.conf' > '$conf/pg_hba.tmp' && mv '$conf/pg_hba.tmp' '$conf/pg_hba.conf'"
  fi
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || as_root pg_ctlcluster "$version" main start
  for _ in $(seq 1 30); do port_open 5432 && break; sleep 1; done
fi
if ! port_open 6379; then
  echo "services: starting Redis"
  mkdir -p /tmp/fanz-redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no --dir /tmp/fanz-redis \
    --logfile /tmp/fanz-redis/redis.log
  for _ in $(seq 1 30); do port_open 6379 && break; sleep 1; done
fi

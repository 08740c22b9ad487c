#!/usr/bin/env bash
# Start the local services the integration tests use, if they are down:
# PostgreSQL (5432), Redis (6379), RabbitMQ (5672). Waits until each answers.
set -u

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {  # name port seconds
  for _ in $(seq 1 "$3"); do port_open "$2" && return 0; sleep 1; done
  echo "services: $1 did not come up on port $2" >&2
  return 1
}

if ! port_open 5432; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    echo "services: starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
    wait_port PostgreSQL 5432 30 || true
  else
    echo "services: PostgreSQL is not installed; its tests will skip (or fail under CI=true)" >&2
  fi
fi

if ! port_open 6379; then
  if command -v redis-server >/dev/null 2>&1; then
    echo "services: starting Redis"
    mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
    wait_port Redis 6379 15 || true
  else
    echo "services: Redis is not installed; its tests will skip (or fail under CI=true)" >&2
  fi
fi

if ! port_open 5672; then
  if command -v rabbitmq-server >/dev/null 2>&1; then
    echo "services: starting RabbitMQ"
    rabbitmq-server -detached || true
    wait_port RabbitMQ 5672 90 || true
  else
    echo "services: RabbitMQ is not installed; its tests will skip (or fail under CI=true)" >&2
  fi
fi
exit 0

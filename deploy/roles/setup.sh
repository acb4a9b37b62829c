#!/bin/sh
# Give runway's roles to four RabbitMQ users in one namespace. Run it on the broker's host as
# root (or the rabbitmq user), with the runway CLI on PATH. Passwords come from the environment
# and are never printed.
set -eu
NS=${NS:-runway}
VHOST=${VHOST:-/}
for var in ADMIN_PASSWORD CI_PASSWORD WORKER_PASSWORD VIEWER_PASSWORD; do
    eval "test -n \"\${$var:-}\"" || { echo "set $var" >&2; exit 64; }
done
add() { rabbitmqctl add_user "$1" "$2" >/dev/null 2>&1 || rabbitmqctl change_password "$1" "$2" >/dev/null; }
add runway-admin "$ADMIN_PASSWORD"
add ci "$CI_PASSWORD"
add worker "$WORKER_PASSWORD"
add viewer "$VIEWER_PASSWORD"
runway roles admin     --user runway-admin --namespace "$NS" --vhost "$VHOST" --apply
runway roles submitter --user ci           --namespace "$NS" --vhost "$VHOST" --apply
runway roles runner    --user worker       --namespace "$NS" --vhost "$VHOST" --apply
runway roles observer  --user viewer       --namespace "$NS" --vhost "$VHOST" --apply
# The admin declares the topology once (any runway command does it when it is missing).
runway --server "amqp://runway-admin:$ADMIN_PASSWORD@localhost:5672/%2f" --namespace "$NS" job list >/dev/null
echo "namespace $NS ready: admin runway-admin, submitter ci, runner worker, observer viewer"

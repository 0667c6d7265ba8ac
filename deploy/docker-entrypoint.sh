#!/bin/sh
# The container's entrypoint: before `aina-dsr run`, bring the schema to this version with
# `aina-dsr db upgrade`; any other command is passed to aina-dsr as it is (`--help`, `check`).
# Several replicas on one PostgreSQL: set UPGRADE_ON_START=false on them and run
# `docker compose run --rm desk db upgrade` once per release, before they start.
set -eu
if [ "$#" -eq 0 ]; then
    set -- run
fi
if [ "$1" = "run" ] && [ "${UPGRADE_ON_START:-true}" = "true" ]; then
    aina-dsr db upgrade
fi
exec aina-dsr "$@"

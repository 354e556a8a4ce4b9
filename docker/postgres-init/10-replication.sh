#!/bin/bash
# Run once by the official image's entrypoint when it creates the cluster (compose.yaml mounts
# this directory at /docker-entrypoint-initdb.d): lets the `receive` and `basebackup`
# containers connect for replication with the password (the image's own pg_hba.conf line,
# `host all all all scram-sha-256`, does not cover replication connections).
# Checked here: `bash -n` (scripts/check-docker.sh). NOT run here: no Docker engine, so never
# inside the postgres image.
set -euo pipefail
echo "host replication all all scram-sha-256" >>"$PGDATA/pg_hba.conf"

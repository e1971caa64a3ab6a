#!/usr/bin/env bash
# The benchmarks. Each prints its figures; BENCHMARKS.md records them with this command.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
log "no benchmarks yet (issues 4, 5 and 7 add them)"

# Stagecast's entry points. Each target installs what it needs first (scripts/setup.sh is
# idempotent and caches slow tools under ~/.cache/stagecast). See README.md.
SHELL := /bin/bash
.DEFAULT_GOAL := help

.PHONY: help setup edge-build edge-dev demo test bench

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

setup: ## install toolchains, tools, npm packages, ONNX Runtime and the demo model
	@scripts/setup.sh

edge-build: setup ## build the edge Worker (Rust -> wasm32) into edge/build
	@scripts/edge-build.sh

edge-dev: edge-build ## serve only the edge, in the foreground (see README: configuration)
	@scripts/edge-dev.sh

demo: edge-build ## run the whole thing locally: edge, two CPU nodes in a pool, a sample submitted at the edge and followed to its result
	@scripts/demo.sh

test: setup ## every test of the project, one exit code (lint gates first, then the edge build)
	@scripts/test.sh

bench: edge-build ## the benchmarks; results go in BENCHMARKS.md
	@scripts/bench.sh

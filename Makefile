# dpersona: every target that runs something depends on `setup`, which is idempotent, so a fresh
# Debian 12 machine needs nothing but `make demo` or `make test`.
SHELL := /bin/bash
GO ?= go
# Debian's python3-torch belongs to /usr/bin/python3; the python3 first on PATH may be another
# interpreter. Pick the first one that imports torch (evaluated when a recipe runs, after setup).
PYTHON = $(or $(shell for p in /usr/bin/python3 python3; do if $$p -c 'import torch' >/dev/null 2>&1; then command -v $$p; break; fi; done),/usr/bin/python3)
ORT_VERSION := 1.27.0
export DPERSONA_ORT_LIB ?= $(CURDIR)/third_party/onnxruntime/libonnxruntime.so.$(ORT_VERSION)
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)

.PHONY: setup build test test-go test-python demo bench fuzz clean

setup:
	@bash scripts/setup.sh

build: setup
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o bin/dpersona ./cmd/dpersona

test: build
	$(GO) vet ./...
	bin/staticcheck ./...
	$(GO) mod tidy -diff
	$(MAKE) --no-print-directory test-go test-python

test-go:
	$(GO) test -count=1 -timeout 45m ./...

test-python:
	$(PYTHON) -m pytest -q -p no:cacheprovider training/tests

demo: build
	@bash scripts/demo.sh

bench: build
	@bash scripts/bench.sh

fuzz: setup
	@bash scripts/fuzz.sh

clean:
	rm -rf bin var

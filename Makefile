# ringtgt developer entry points (see README.md): setup, run, lint, test, fio, bench, bench-micro, clean.
# Stamps under .cache/stamps keep a repeated `make setup` to a dependency check when nothing changed.

SHELL := /bin/bash
.DEFAULT_GOAL := setup

VENV    := .venv
PY      := $(VENV)/bin/python
STAMPS  := .cache/stamps
FIO_BIN := $(CURDIR)/.cache/fio/bin/fio
export RINGTGT_FIO ?= $(FIO_BIN)

PYTEST_ARGS ?= tests
CONFIG ?=

# Build: compiler, liburing, librbd (the RBD backstore), Python headers, venv.  Tests: libiscsi tools, qemu-img
# with iscsi://, ip (netns), valgrind (a worker under it, as perf/callgrind_per_io.py runs one).  (fio's own build
# dependencies are installed by scripts/build-fio.sh.)
SYSTEM_PACKAGES := gcc pkg-config liburing-dev librbd-dev librados-dev python3-dev python3-venv \
                   libiscsi-bin qemu-utils qemu-block-extra iproute2 valgrind

# The RBD tests start a one-node Ceph cluster (tests/ceph_cluster.py): a monitor, an OSD, the ceph and rbd tools.
CEPH_PACKAGES := ceph-mon ceph-osd ceph-common

# `make bench` compares against Debian's tgtd (its bs_rbd on the Ceph cluster of the rbd suite), and SPDK's iscsi_tgt
# with BENCH_ARGS="--spdk DIR" (an SPDK build).
BENCH_PACKAGES := tgt tgt-rbd $(CEPH_PACKAGES)

# The kernel-initiator suite (tests/e2e/test_kernel_initiator.py, tests/guest.py) boots Debian's kernel in QEMU over
# this root with virtme-ng (PyPI, test extra), which needs a static busybox; in the guest: open-iscsi, sg3-utils,
# dm-multipath (multipath-tools, udev), LIO's targetcli for `make bench` (it wants a system D-Bus), and Debian's
# generic fio (TCG's CPU model lacks instructions a host-tuned fio build may use).
GUEST_PACKAGES := qemu-system-x86 linux-image-amd64 busybox-static udev kmod open-iscsi sg3-utils multipath-tools \
                  targetcli-fb dbus fio e2fsprogs

BENCH_ARGS ?=
BENCH_JSON ?= .cache/bench.json

# The compiled ring and librbd calls, and the data path compiled with mypyc (target/compiled.py lists its modules):
# rebuilt when a source changes (any of the packages mypy reads for it: a compiled module holds what it assumed of
# the modules it imports), or when a .so is missing.
COMPILED_SOURCES := $(shell python3 target/compiled.py)
FFI_SOURCES := build_ffi.py $(shell find target coordinator ioring -name '*.py') \
               $(wildcard ioring/_cdefs.h ioring/_ffi_src.c target/backstore/_librbd_cdefs.h target/backstore/_librbd_src.c)
COMPILED_MISSING := $(strip $(foreach source,$(COMPILED_SOURCES),$(if $(wildcard $(basename $(source)).cpython-*.so),,$(source))))
ifeq ($(and $(wildcard ioring/_liburing*.so),$(wildcard target/backstore/_librbd*.so),$(wildcard target/_compiled__mypyc*.so),\
            $(if $(COMPILED_MISSING),,all)),)
.PHONY: $(STAMPS)/ffi
endif

.PHONY: setup run lint test fio bench bench-micro system-packages guest-packages clean

setup: $(STAMPS)/ffi

run: setup
	$(VENV)/bin/ringtgt serve $(if $(CONFIG),--config $(CONFIG))

lint: setup
	$(VENV)/bin/ruff check
	$(VENV)/bin/mypy

test: setup lint $(RINGTGT_FIO) guest-packages
	@scripts/apt-ensure.sh $(CEPH_PACKAGES)
	$(PY) -m pytest -q $(PYTEST_ARGS)

.PHONY: unit
unit: setup
	$(PY) -m pytest -q -m "not e2e" tests

fio: $(RINGTGT_FIO)

bench: setup $(RINGTGT_FIO) guest-packages
	@scripts/apt-ensure.sh $(BENCH_PACKAGES)
	$(PY) perf/bench.py --json $(BENCH_JSON) $(BENCH_ARGS)

bench-micro: setup
	$(PY) -m pytest -q perf/micro --benchmark-only

system-packages:
	@scripts/apt-ensure.sh $(SYSTEM_PACKAGES)

guest-packages:
	@scripts/apt-ensure.sh $(GUEST_PACKAGES)

$(PY): | system-packages
	python3 -m venv $(VENV)

$(STAMPS)/pip: pyproject.toml setup.py | $(PY) system-packages
	$(PY) -m pip install -q 'setuptools>=68' wheel 'cffi>=1.15'
	$(PY) -m pip install -q --no-build-isolation -e '.[test]'
	@mkdir -p $(@D) && touch $@

$(STAMPS)/ffi: $(FFI_SOURCES) $(STAMPS)/pip
	$(PY) build_ffi.py
	@mkdir -p $(@D) && touch $@

$(FIO_BIN):
	scripts/build-fio.sh $(dir $(@D))

clean:
	rm -rf $(STAMPS) build *.egg-info .mypy_cache .ruff_cache ioring/_liburing*.so ioring/_liburing.c ioring/_liburing.o \
	       target/backstore/_librbd.c target/backstore/_librbd.o
	find target ioring -name '*.cpython-*.so' -delete	# librbd's calls, the data path's compiled modules (target/compiled.py)

# smx: the two commands of the README, and a few helpers.
#
#   make run    install everything, run smx on the embedded default configuration
#   make test   install everything, run the whole test suite (trial, black, mypy)
#   make bench  install everything, run the benchmarks against Postfix (by hand)

VENV   := .venv
BIN    := $(VENV)/bin
RUNDIR := var

.PHONY: all install run test check trial lint bench clean doc

all: test

install:
	./tools/bootstrap.sh

# exec: the shell make starts becomes twistd, so that the pid in
# $(RUNDIR)/smx.pid is the child of make, signals reach smx and nothing else,
# and SIGTERM or Ctrl-C end smx with status 0 (not "make: *** Error 143")
run: install
	mkdir -p $(RUNDIR)
	$(BIN)/smx default-config --directory $(RUNDIR)
	cd $(RUNDIR) && exec ../$(BIN)/twistd -n --pidfile=smx.pid smx --config smx.conf

test: install
	$(MAKE) check

check: trial lint

trial:
	$(BIN)/trial -j2 smx

lint:
	$(BIN)/black --check smx twisted/plugins $(wildcard bench)
	$(BIN)/mypy smx

doc: install
	$(BIN)/smx config --reference > doc/configuration.md

bench: install
	$(BIN)/pip install -q --config-settings editable_mode=compat -e '.[bench]'
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) _trial_temp* build *.egg-info

# The two commands of the README: `make demo` (main job) and `make test`. Both install first.
PYTHON ?= python3
EXTRAS ?= synth,piper,eval,serve,dev

.PHONY: install demo test

install:
	bash scripts/install-system.sh
	$(PYTHON) -m pip install -q -e '.[$(EXTRAS)]'

demo: install
	$(PYTHON) -m voxlm demo

test: install
	$(PYTHON) -m pytest -q

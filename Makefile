# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
DEMO    = $(BIN)/bluegreen
DEMO_CONFIG = examples/local/bluegreen.yml

.PHONY: demo test test-all bench bench-routers bench-canary bench-servers bench-lock soak schema lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test,kubernetes,routers,servers,aws,dns]'
	touch $@

demo: $(VENV)/.installed
	@$(BIN)/python examples/demo.py $(DEMO_CONFIG)

# Modules in parallel (-n): the suites mostly wait on proxies, containers and CI tools, not on the CPU.
# A module runs whole on one worker (loadfile; tests/conftest.py keeps the act files on one), so its labs and images are built once.
WORKERS ?= 4
test: $(VENV)/.installed
	$(BIN)/pytest -n $(WORKERS) --dist loadfile

# Everything, as CI runs it: sets up Docker, act and gitlab-ci-local, and no test may skip.
test-all:
	bash .ci/run

# Switch under load, bluegreen against a naive Caddy reload; `make bench-routers` for every router kind.
bench: $(VENV)/.installed
	$(BIN)/python bench/switch_under_load.py

# Every router kind under the same load: bluegreen's switch against the router's raw switch by hand
# (a few minutes; ROUTERS=caddy,haproxy for some of them).
ROUTERS ?= caddy,haproxy,envoy,traefik,nginx
bench-routers: $(VENV)/.installed
	$(BIN)/python bench/routers.py --routers $(ROUTERS)

# Canary steps 1, 5, 25, 50, 100 % under load: the observed split per weighted router, +-2 pp, 0 failed
# (about 15 s; CANARY_ROUTERS=haproxy for one of them).
CANARY_ROUTERS ?= haproxy,envoy,traefik,nginx
bench-canary: $(VENV)/.installed
	$(BIN)/python bench/canary.py --routers $(CANARY_ROUTERS)

# Deploy time for 1, 4 and 8 app hosts over SSH (containers with a real sshd), behind one HAProxy; 8 hosts at most
# 2x the time of 1 (about 1 min; needs Docker).
bench-servers: $(VENV)/.installed
	$(BIN)/python bench/servers.py

# How long a deploy that meets a held lock takes to exit 3: 6 deploys started together, 5 rounds; the median and
# max of the locked-out runs (under a minute; the figure test_concurrency.py no longer bounds tightly).
LOCK_RUNS ?= 6
bench-lock: $(VENV)/.installed
	$(BIN)/python bench/lock_contention.py --runs $(LOCK_RUNS)

# 200 deploy/rollback cycles under load, then leak checks (~10-17 min on 2 cores; CYCLES=5 for a quick run).
CYCLES ?= 200
soak: $(VENV)/.installed
	$(BIN)/python bench/soak.py --cycles $(CYCLES)

schema: $(VENV)/.installed
	$(BIN)/bluegreen schema > schema/bluegreen.schema.json

clean:
	rm -rf $(VENV) .bluegreen examples/local/.bluegreen bluegreen-report.json

# The two commands a new user types: `make run` and `make test`. Both install what they need first.
# `make test-fast` is the loop for working on the code: unit tests of the pure logic, no root, Docker or browser.
# `make ui` embeds ui/ (the web UI's sources) into portainer.py; `make lint` runs ruff and ESLint.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
PYTEST_ARGS ?=
# What `make test-fast` imports (conftest.py imports docker and requests; its fixtures start nothing until used).
FAST_TEST_MODULES := aiohttp, yaml, cryptography, docker, requests, pytest, pytest_timeout, hypothesis
export DEBIAN_FRONTEND := noninteractive

.PHONY: run test test-fast deps deps-postgresql test-deps test-fast-deps testbed engine bench base-image image ui lint lint-deps

# `make run DATABASE=postgresql://... ARGS="--secrets-key-file KEY"` (or PORTAINER_DATABASE set) keeps the store in
# PostgreSQL and installs its driver first; without it nothing more is installed.
run: deps $(if $(DATABASE)$(PORTAINER_DATABASE),deps-postgresql)
	$(PYTHON) portainer.py $(if $(DATABASE),--database $(DATABASE)) $(ARGS)

deps:
	@$(PYTHON) -c "import aiohttp, yaml, cryptography" 2>/dev/null || $(PIP) install -q -r requirements.txt \
	  || (apt-get update -qq && apt-get install -y -qq python3-aiohttp python3-yaml python3-cryptography)
	@# Optional: LDAP (ldap3) and OpenID Connect (PyJWT) sign-in, the uvloop event loop. The server runs without
	@# them and names the package when an administrator turns the method on.
	@$(PYTHON) -c "import ldap3, jwt, uvloop" 2>/dev/null || $(PIP) install -q -r requirements-optional.txt \
	  || (apt-get update -qq && apt-get install -y -qq python3-ldap3 python3-jwt python3-uvloop) \
	  || echo "ldap3, PyJWT or uvloop not installed: LDAP or OpenID Connect sign-in is unavailable, the server runs on asyncio's loop"

# The PostgreSQL driver, only for servers started with --database.
deps-postgresql:
	@$(PYTHON) -c "import asyncpg" 2>/dev/null || $(PIP) install -q asyncpg \
	  || (apt-get update -qq && apt-get install -y -qq python3-asyncpg)

test-deps:
	@command -v dockerd >/dev/null && [ -x /bin/busybox ] && command -v chromium >/dev/null \
	  && command -v iptables >/dev/null && command -v nsenter >/dev/null && command -v debootstrap >/dev/null \
	  && command -v docker-compose >/dev/null && command -v docker-registry >/dev/null && command -v htpasswd >/dev/null \
	  && [ -x /usr/sbin/slapd ] && command -v ldapadd >/dev/null \
	  && [ -x /usr/lib/postgresql/15/bin/initdb ] && command -v haproxy >/dev/null \
	  && command -v git >/dev/null && command -v nginx >/dev/null && command -v fcgiwrap >/dev/null \
	  && [ -x /usr/sbin/sshd ] \
	  || (apt-get update -qq && apt-get install -y -qq docker.io busybox-static chromium iptables iproute2 util-linux curl \
	      debootstrap docker-compose docker-registry apache2-utils slapd ldap-utils postgresql haproxy \
	      git nginx-light fcgiwrap openssh-server)
	@$(PYTHON) -c "import $(FAST_TEST_MODULES), playwright, ldap3, jwt, asyncpg" 2>/dev/null || $(PIP) install -q -r requirements-test.txt
	@command -v st >/dev/null || $(PIP) install -q schemathesis

# Python packages only, no apt: what `make test-fast` needs.
test-fast-deps:
	@$(PYTHON) -c "import $(FAST_TEST_MODULES)" 2>/dev/null || $(PIP) install -q -r requirements-test.txt

# A Docker engine on /var/run/docker.sock (started when none answers) and the busybox:local image tests use.
engine:
	@if ! curl -sf --unix-socket /var/run/docker.sock http://docker/_ping >/dev/null 2>&1; then \
	  rm -f /var/run/docker.pid; \
	  (dockerd --storage-driver=vfs >/tmp/portainer-py-dockerd.log 2>&1 &); \
	  for i in $$(seq 1 60); do curl -sf --unix-socket /var/run/docker.sock http://docker/_ping >/dev/null 2>&1 && break; sleep 0.5; done; \
	fi
	@curl -sf --unix-socket /var/run/docker.sock http://docker/_ping >/dev/null || (cat /tmp/portainer-py-dockerd.log; exit 1)
	@docker image inspect busybox:local >/dev/null 2>&1 || ( \
	  rm -rf /tmp/portainer-py-bb && mkdir -p /tmp/portainer-py-bb/root/bin /tmp/portainer-py-bb/root/tmp && \
	  cp /bin/busybox /tmp/portainer-py-bb/root/bin/ && \
	  for a in $$(/bin/busybox --list); do [ "$$a" = busybox ] || ln -sf busybox /tmp/portainer-py-bb/root/bin/$$a; done && \
	  tar -C /tmp/portainer-py-bb/root -cf /tmp/portainer-py-bb/bb.tar . && \
	  docker import /tmp/portainer-py-bb/bb.tar busybox:local >/dev/null)

testbed: test-deps engine

# Seconds, in-process: compose, cron, backup crypto, signatures, tunnel frames, config, paths (test_fast_*.py).
# Only the plugins these tests use are loaded: the others installed (schemathesis...) cost seconds at start.
# The UI's JavaScript unit tests (ui/tests/) run with node's own test runner: no npm package needed.
test-fast: test-fast-deps
	PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 $(PYTHON) -m pytest -q -p pytest_timeout -p _hypothesis_pytestplugin test_fast_*.py
	node --test ui/tests/

# Write ui/ into portainer.py's generated section (test_fast_ui.py fails until this is run after a UI change).
ui:
	$(PYTHON) ui/embed.py

# ruff (ruff.toml) on the Python files, ESLint (eslint.config.js, pinned in package-lock.json) on ui/.
lint: lint-deps
	$(PYTHON) -m ruff check .
	npx --no-install eslint ui eslint.config.js

lint-deps:
	@$(PYTHON) -m ruff --version >/dev/null 2>&1 || $(PIP) install -q ruff
	@[ -d node_modules/eslint ] || npm ci --no-audit --no-fund

# The fast loop first, so a broken unit fails in seconds; then everything (the fast tests again: seconds).
test: test-fast testbed
	$(PYTHON) -m pytest $(PYTEST_ARGS)

bench: testbed
	$(PYTHON) bench.py $(ARGS)

# A local base image for the Dockerfile (no registry can be reached): Debian with python3 and the runtime packages.
BASE_IMAGE ?= local/python-base:bookworm
base-image:
	@docker image inspect $(BASE_IMAGE) >/dev/null 2>&1 || ( \
	  command -v debootstrap >/dev/null || apt-get install -y -qq debootstrap; \
	  mirror="$$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
	    | awk '/^URIs:/{print $$2; exit} /^deb /{for (i = 2; i <= NF; i++) if ($$i ~ /:\/\//) {print $$i; exit}}')"; \
	  [ -n "$$mirror" ] || { echo "base-image: no Debian mirror in apt's sources (/etc/apt/sources.list*)"; exit 1; }; \
	  rm -rf /tmp/portainer-py-rootfs && \
	  debootstrap --variant=minbase --include=python3,python3-aiohttp,python3-yaml,python3-cffi-backend,python3-cryptography \
	    bookworm /tmp/portainer-py-rootfs "$$mirror" >/tmp/portainer-py-debootstrap.log 2>&1 && \
	  tar -C /tmp/portainer-py-rootfs -c . | docker import - $(BASE_IMAGE) >/dev/null && rm -rf /tmp/portainer-py-rootfs)

image: base-image
	docker build --build-arg BASE=$(BASE_IMAGE) -t portainer-py:latest .

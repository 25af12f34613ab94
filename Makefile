# Remote installation over ssh, from the packages `tools/build-debs` makes (docs/install.md#remote-install):
#
#   make debs
#   make install-control HOST=root@control-box PORT=8080 TIMEOUT=180
#   make install-agent HOST=root@node-1 CONTROL_URL=http://10.0.0.2:8080 [DOCKER_RUNTIME=runc] [NODE_ID=node-1] [DRIVER=exec]
#   make install-seeder HOST=root@seeder-1 CONTROL_URL=http://10.0.0.2:8080
#   make agent-restart HOST=root@node-1
#   make logs-agent HOST=root@node-1
#   make status HOST=root@node-1
#
# Running a target again changes nothing; with newer packages it upgrades in place (the agent's running
# tasks are adopted by the new agent). The agent's token is made on CONTROL_HOST (default: root@ the
# host of CONTROL_URL), bound to NODE_ID (default: the node's hostname). DEBS= names another directory
# of packages, APT_OPTIONS= options of the remote apt-get (--no-install-recommends: without docker.io
# and postgresql), SSH= the ssh command (e.g. "ssh -i KEY"). The build itself (compiling, tests) is meson's: see README.md.

HOST ?=
PORT ?= 8080
TIMEOUT ?= 120
CONTROL_URL ?=
DOCKER_RUNTIME ?=
DRIVER ?=
NODE_ID ?=
export DEBS CONTROL_HOST APT_OPTIONS SSH

REMOTE := $(CURDIR)/tools/remote-install

.PHONY: debs install-control install-agent install-seeder agent-restart logs-agent status

debs:
	tools/build-debs

install-control:
	$(REMOTE) control '$(HOST)' '$(PORT)' '$(TIMEOUT)'

install-agent:
	$(REMOTE) agent '$(HOST)' '$(CONTROL_URL)' '$(DOCKER_RUNTIME)' '$(NODE_ID)' '$(TIMEOUT)' '$(DRIVER)'

install-seeder:
	$(REMOTE) seeder '$(HOST)' '$(CONTROL_URL)' '$(TIMEOUT)'

agent-restart:
	$(REMOTE) agent-restart '$(HOST)'

logs-agent:
	$(REMOTE) logs-agent '$(HOST)'

status:
	$(REMOTE) status '$(HOST)'

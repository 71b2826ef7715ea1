#!/bin/sh
# Puts edgeprune's agent where the ssh transport looks for it, so that a session starts without uploading it:
# ${XDG_CACHE_HOME:-$HOME/.cache}/edgeprune/agent-<hash> (edgeprune/devices/ssh.py), here a link to DIR.
# The hash is the transport's (_agent_sha): sha256 over each agent file's name, a NUL and the sha256 of its content
# in hex, agent.py last, cut to 16 hex digits. tests/test_docker.py runs this script and checks the two agree.
# Usage: sh install-agent.sh DIR   (DIR holds targets/agent*.py); prints the link it made.
set -eu
[ $# -eq 1 ] || { echo "usage: sh install-agent.sh DIR" >&2; exit 2; }
dir=$(cd "$1" && pwd)
[ -f "$dir/agent.py" ] || { echo "install-agent.sh: no agent.py in $dir" >&2; exit 2; }
cd "$dir"
others=$(for f in agent*.py; do [ "$f" = agent.py ] || echo "$f"; done | LC_ALL=C sort)
hash=$(for f in $others agent.py; do
         printf '%s\0%s' "$f" "$(sha256sum "$f" | cut -c1-64)"
       done | sha256sum | cut -c1-16)
base="${XDG_CACHE_HOME:-$HOME/.cache}/edgeprune"
mkdir -p "$base"
ln -sfn "$dir" "$base/agent-$hash"
echo "$base/agent-$hash"

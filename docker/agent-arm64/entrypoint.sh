#!/bin/sh
# sshd for edgeprune's ssh transport: keys only, no passwords, root logs in with a key from
# /root/.ssh/authorized_keys (mount yours read-only). The host key is made on first start, never shipped in the image.
set -eu
key=/etc/ssh/ssh_host_ed25519_key
[ -f "$key" ] || ssh-keygen -q -t ed25519 -N "" -C "edgeprune-agent" -f "$key"
if [ ! -s /root/.ssh/authorized_keys ]; then
  echo "edgeprune-agent-sshd: no /root/.ssh/authorized_keys; mount your public key there (-v ~/.ssh/id_ed25519.pub:/root/.ssh/authorized_keys:ro)" >&2
  exit 2
fi
mkdir -p /run/sshd
exec /usr/sbin/sshd -D -e -h "$key" \
  -o "Port=${EDGEPRUNE_SSH_PORT}" -o "ListenAddress=${EDGEPRUNE_SSH_LISTEN}" \
  -o PasswordAuthentication=no -o KbdInteractiveAuthentication=no -o UsePAM=no \
  -o PermitRootLogin=prohibit-password -o StrictModes=no "$@"

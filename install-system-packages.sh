#!/bin/sh
# What the tests need beside Python packages, for a root run on a fresh Debian machine (CI);
# otherwise this says what to install and carries on:
# - libfuse 3 and fusermount3 (Debian's fuse3) for the `pfs mount` tests, and rsync and git,
#   which they run on the mount;
# - etcd (Debian's etcd-server, 3.4) for the metadata engine on etcd and the metaserver
#   failover tests: unpacked into /opt/pfs-etcd (apt-get download + dpkg -x), not installed,
#   since installing it starts a system etcd on port 2379. Tests and `pfs up --ha` find it there
#   (or through PFS_ETCD, or on the PATH).
set -e
ETCD_DIR=/opt/pfs-etcd
need_fuse=true
if command -v fusermount3 >/dev/null 2>&1 && ldconfig -p | grep -q 'libfuse3\.so\.3' \
        && command -v rsync >/dev/null 2>&1 && command -v git >/dev/null 2>&1; then
    need_fuse=false
fi
need_etcd=true
if [ -x "$ETCD_DIR/usr/bin/etcd" ] || command -v etcd >/dev/null 2>&1; then
    need_etcd=false
fi
if ! $need_fuse && ! $need_etcd; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    if $need_fuse; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fuse3 rsync git >/dev/null
    fi
    if $need_etcd; then
        download=$(mktemp -d)
        (cd "$download" && apt-get download -qq etcd-server 2>/dev/null)
        mkdir -p "$ETCD_DIR"
        dpkg -x "$download"/etcd-server_*.deb "$ETCD_DIR"
        rm -rf "$download"
    fi
else
    $need_fuse && echo "install-system-packages.sh: install libfuse 3, rsync and git (Debian: apt-get install fuse3 rsync git) for the mount tests" >&2
    $need_etcd && echo "install-system-packages.sh: put etcd 3.4+ on the PATH (Debian: apt-get download etcd-server; dpkg -x etcd-server_*.deb $ETCD_DIR) for the etcd tests" >&2
fi
exit 0

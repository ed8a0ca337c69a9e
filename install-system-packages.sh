#!/bin/sh
# What the tests need beside Python packages: libfuse 3 and fusermount3 (Debian's fuse3) for the
# `pfs mount` tests, and rsync and git, which they run on the mount. Installed with apt-get where
# missing and we are root (CI runs as root on a fresh Debian machine); otherwise this says what
# to install and carries on.
set -e
if command -v fusermount3 >/dev/null 2>&1 && ldconfig -p | grep -q 'libfuse3\.so\.3' \
        && command -v rsync >/dev/null 2>&1 && command -v git >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fuse3 rsync git >/dev/null
else
    echo "install-system-packages.sh: install libfuse 3, rsync and git (Debian: apt-get install fuse3 rsync git) for the mount tests" >&2
fi

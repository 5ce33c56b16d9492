#!/usr/bin/env bash
# Builds the interop guest for test/helpers/vm.ts: a stock Debian kernel (the image that the
# linux-image-amd64 metapackage currently points at, downloaded, never installed) and a tiny
# base initramfs with busybox-static, the host's iproute2 `ip`, the kernel modules the tests
# need (ip6_tunnel, ipip, sit, 8021q and what they depend on) and an /init that runs a per-boot scenario script and then a
# command loop on the serial console.
#
# Everything is cached under <repo>/.cache/vm/; a second run does no work. Prints the
# directory holding `vmlinuz` and `base.cpio.gz` (and `kernel-release`) on stdout.
#
#   scripts/vm/build-image.sh
#   FLOWGATE_VM_KERNEL_PACKAGE=linux-image-6.1.0-56-amd64 scripts/vm/build-image.sh
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
readonly REPO
readonly CACHE="$REPO/.cache/vm"
readonly SELF="$REPO/scripts/vm/build-image.sh"
readonly HOST_PACKAGES=(busybox-static cpio qemu-system-x86 kmod iproute2 gcc libc6-dev)
# Modules and not built-in in Debian's 6.1 kernel (IPv6 itself is built in): ip6_tunnel for
# ip6tnl (ipip6, ip6ip6), ipip and sit for the IPv4-underlay tunnels (with tunnel4 and
# ip_tunnel), 8021q for VLAN sub-interfaces (802.1Q and 802.1ad). veth and dummy give the guest
# a host behind the tunnel. Their dependencies (garp, mrp, stp, llc, ...) are resolved from
# modules.dep; the listed ones are there so that the image fails to build rather than a
# scenario failing to boot if a later kernel renames one.
readonly GUEST_MODULES=(virtio_pci virtio_net tunnel6 ip6_tunnel tunnel4 ip_tunnel ipip sit 8021q dummy veth)

log() { printf 'build-image: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

apt_retry_after_update() {
  "$@" >&2 && return 0
  log "'$*' failed; refreshing the package lists and retrying"
  apt-get update -q >&2
  "$@" >&2
}

ensure_host_packages() {
  local missing=() pkg
  for pkg in "${HOST_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" -eq 0 ] || die "missing Debian packages (${missing[*]}) and not root: install them with apt-get"
  log "installing Debian packages: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt_retry_after_update \
    apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# The metapackage's dependency names the current ABI's image package. Resolving it costs most
# of a second (apt-cache rebuilds its cache each time here), so the answer is remembered until
# the package lists change.
resolve_kernel_package() {
  if [ -n "${FLOWGATE_VM_KERNEL_PACKAGE:-}" ]; then
    echo "$FLOWGATE_VM_KERNEL_PACKAGE"
    return
  fi
  local memo="$CACHE/kernel-package" lists_key pkg
  lists_key=$(stat -c %Y /var/lib/apt/lists 2>/dev/null || echo none)
  if [ -f "$memo" ] && [ "$(sed -n 1p "$memo")" = "$lists_key" ]; then
    sed -n 2p "$memo"
    return
  fi
  pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
  if [ -z "$pkg" ]; then
    log "linux-image-amd64 is unknown to apt; refreshing the package lists"
    apt-get update -q >&2
    lists_key=$(stat -c %Y /var/lib/apt/lists)
    pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
  fi
  [ -n "$pkg" ] || die "could not resolve which kernel image linux-image-amd64 depends on"
  printf '%s\n%s\n' "$lists_key" "$pkg" > "$memo.tmp" && mv "$memo.tmp" "$memo"
  echo "$pkg"
}

cached_deb() {
  find "$CACHE/debs" -maxdepth 1 -name "${1}_*.deb" | sort -V | tail -1
}

download_kernel_deb() {
  local pkg=$1 deb
  mkdir -p "$CACHE/debs"
  deb=$(cached_deb "$pkg")
  if [ -z "$deb" ]; then
    log "downloading $pkg"
    # apt-get download writes into the current directory.
    (cd "$CACHE/debs" && apt_retry_after_update apt-get download -q "$pkg")
    deb=$(cached_deb "$pkg")
    [ -n "$deb" ] || die "apt-get download $pkg left no .deb in $CACHE/debs"
  fi
  echo "$deb"
}

# PID 1 of the guest. Markers start with @@FGVM- so that test/helpers/vm.ts can find them
# among kernel messages; keep the two files in step.
write_init() {
  cat > "$1" <<'INIT'
#!/bin/sh
export PATH=/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /run /tmp /var
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
ln -s /run /var/run

halt_with() {
  echo "@@FGVM-FAILED $*"
  poweroff -f
}

while read -r module args; do
  # shellcheck disable=SC2086 # module parameters are words
  insmod "/lib/modules/$module" $args || halt_with "insmod $module"
done < /etc/fgvm/modules

hostname fgvm
ip link set lo up
# The host writes the scenario (addresses, the ip6tnl tunnel, the host behind it) into a
# second cpio archive appended to this one; xtrace shows each step on the console so that a
# failed boot explains itself.
if [ -f /fgvm/scenario.sh ]; then
  sh -ex -c '. /etc/fgvm/profile; . /fgvm/scenario.sh' || halt_with "scenario exited with status $?"
fi

# From here on the console carries the command protocol; kernel messages would split its lines.
echo 1 > /proc/sys/kernel/printk
stty -echo -onlcr 2>/dev/null
echo "@@FGVM-READY $(uname -r)"

# Command loop: the host sends "@@FGVM-CMD <id>", the command as base64 lines, then
# "@@FGVM-RUN <id>"; the guest answers "@@FGVM-BEGIN <id>", the combined output as base64,
# "@@FGVM-END <id> <exit status>". base64 both ways keeps arbitrary bytes and long lines
# intact through the tty. Commands must not read the console: their stdin is /dev/null.
while IFS= read -r line; do
  case "$line" in
    "@@FGVM-CMD "*)
      : > /tmp/fgvm-cmd.b64
      ;;
    "@@FGVM-RUN "*)
      id=${line#@@FGVM-RUN }
      if base64 -d /tmp/fgvm-cmd.b64 > /tmp/fgvm-cmd; then
        (cd / && sh -c '. /etc/fgvm/profile && . /tmp/fgvm-cmd') < /dev/null > /tmp/fgvm-out 2>&1
        status=$?
      else
        echo "the command did not arrive intact as base64" > /tmp/fgvm-out
        status=255
      fi
      echo "@@FGVM-BEGIN $id"
      base64 /tmp/fgvm-out
      echo "@@FGVM-END $id $status"
      ;;
    *)
      echo "$line" >> /tmp/fgvm-cmd.b64
      ;;
  esac
done
halt_with "console closed"
INIT
  chmod 755 "$1"
}

# Sourced before the scenario and every command.
write_profile() {
  cat > "$1" <<'PROFILE'
export PATH=/sbin:/bin
# Debian's busybox-static runs its own applet for a name before searching PATH, and its `ip`
# knows no ip6tnl, netns or -json; send the name to iproute2. Applets that run a command
# (timeout, xargs, nsenter) still pick the applet: give them /sbin/ip.
ip() { /sbin/ip "$@"; }
PROFILE
}

# Small guest-side TCP services for the tests, run by `nc -ll -p PORT -e SCRIPT` (busybox nc
# with -ll forks one SCRIPT per connection, its stdin/stdout being the socket).
write_tcp_services() {
  local bin=$1
  cat > "$bin/fgvm-tcp-echo" <<'EOF'
#!/bin/sh
exec cat
EOF
  # Counts what it received: one line "<bytes>" per connection in /tmp/fgvm-sink.<port>.
  cat > "$bin/fgvm-tcp-sink" <<'EOF'
#!/bin/sh
wc -c >> "/tmp/fgvm-sink.$1"
EOF
  cat > "$bin/fgvm-tcp-source" <<'EOF'
#!/bin/sh
head -c "$1" /dev/zero
EOF
  chmod 755 "$bin"/fgvm-tcp-*
}

# fgvm-send6 ADDRESS NEXTHEADER: sends its stdin as the payload of one IPv6 packet with that
# next header, through a raw socket. Linux's ip6tnl never fragments the outer packet of an
# IPv4 inner packet (ip4ip6_tnl_xmit() answers one too big with fragmentation needed, DF or
# not, and skb_scrub_packet() leaves ip6_fragment() nothing it may fragment), so the
# interop test sends a tunnel packet this way and the guest's IPv6 stack fragments it to the
# path MTU, as RFC 2473 section 7 has a tunnel entry point do. The source is here so that
# the image's stamp (this script's hash) covers it.
write_send6() {
  local root=$1 src="$BUILD_DIR/fgvm-send6.c"
  cat > "$src" <<'EOF'
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
  static unsigned char payload[65535];
  struct sockaddr_in6 to = {.sin6_family = AF_INET6};
  size_t len = 0;
  ssize_t n;
  int fd;
  if (argc != 3 || inet_pton(AF_INET6, argv[1], &to.sin6_addr) != 1) {
    fprintf(stderr, "usage: fgvm-send6 ADDRESS NEXTHEADER < payload\n");
    return 2;
  }
  while (len < sizeof(payload) && (n = read(0, payload + len, sizeof(payload) - len)) > 0) len += (size_t)n;
  fd = socket(AF_INET6, SOCK_RAW, atoi(argv[2]));
  if (fd < 0 || sendto(fd, payload, len, 0, (struct sockaddr *)&to, sizeof(to)) != (ssize_t)len) {
    perror("fgvm-send6");
    return 1;
  }
  return 0;
}
EOF
  # Its one library, libc, is in the image for /sbin/ip already.
  gcc -O2 -Wall -Werror -o "$root/bin/fgvm-send6" "$src"
}

copy_with_libraries() {
  local root=$1 binary=$2 lib
  install -D -m 755 "$binary" "$root$binary"
  # ldd prints "name => /path (addr)" for libraries and "/path (addr)" for the loader.
  for lib in $(ldd "$binary" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do
    [ -e "$root$lib" ] || install -D -m 755 "$(readlink -f "$lib")" "$root$lib"
  done
}

build_base_initramfs() {
  local deb=$1 out_dir=$2 release=$3 root tree module path file
  # Global, for the EXIT trap: the extracted package is ~400 MB.
  BUILD_DIR=$(mktemp -d "$CACHE/build.XXXXXX")
  trap 'rm -rf "$BUILD_DIR"' EXIT
  tree="$BUILD_DIR/kernel"
  root="$BUILD_DIR/root"

  log "extracting $(basename "$deb")"
  dpkg-deb -x "$deb" "$tree"
  # The package ships no modules.dep (depmod runs at install time); make one for this tree.
  depmod -b "$tree" "$release"

  mkdir -p "$root"/{bin,sbin,dev,proc,sys,run,tmp,etc/fgvm,lib/modules,fgvm}
  install -m 755 /bin/busybox "$root/bin/busybox"
  for path in $("$root/bin/busybox" --list); do
    [ "$path" = busybox ] || ln -s busybox "$root/bin/$path"
  done
  # iproute2 rather than busybox's ip: the tests need ip6tnl options and `ip netns`.
  rm -f "$root/bin/ip"
  copy_with_libraries "$root" /sbin/ip
  # Without a console node the kernel starts /init with no stdin/stdout.
  if [ "$(id -u)" -eq 0 ]; then
    mknod -m 600 "$root/dev/console" c 5 1
  fi

  : > "$root/etc/fgvm/modules"
  for module in "${GUEST_MODULES[@]}"; do
    # -C /dev/null keeps the host's modprobe.d options (e.g. numdummies=0) out of the guest.
    modprobe -C /dev/null -d "$tree" -S "$release" --show-depends "$module" |
      while read -r kind path _; do
        [ "$kind" = insmod ] || continue
        file=$(basename "$path")
        grep -qxF "$file" "$root/etc/fgvm/modules" && continue
        install -m 644 "$path" "$root/lib/modules/$file"
        echo "$file" >> "$root/etc/fgvm/modules"
      done
  done
  for module in "${GUEST_MODULES[@]}"; do
    # modprobe names modules with underscores; their files may use either.
    grep -qx "${module}.ko\|${module//_/-}.ko" "$root/etc/fgvm/modules" || die "${module}.ko not found in $(basename "$deb")"
  done

  write_init "$root/init"
  write_profile "$root/etc/fgvm/profile"
  write_tcp_services "$root/bin"
  write_send6 "$root"

  mkdir -p "$out_dir"
  install -m 644 "$tree/boot/vmlinuz-$release" "$out_dir/vmlinuz.tmp"
  (cd "$root" && find . -mindepth 1 -print0 | LC_ALL=C sort -z |
    cpio --null --create --format=newc --owner=0:0 --reproducible --quiet) |
    gzip -9n > "$out_dir/base.cpio.gz.tmp"
  mv "$out_dir/vmlinuz.tmp" "$out_dir/vmlinuz"
  mv "$out_dir/base.cpio.gz.tmp" "$out_dir/base.cpio.gz"
  echo "$release" > "$out_dir/kernel-release"
  rm -rf "$BUILD_DIR"
  trap - EXIT
}

main() {
  mkdir -p "$CACHE"
  # Two test runs starting at once must not build into each other's files.
  exec 9> "$CACHE/.lock"
  flock 9
  # Left by a build that was killed.
  rm -rf "$CACHE"/build.*

  ensure_host_packages
  local pkg out_dir stamp deb release
  pkg=$(resolve_kernel_package)
  # Everything the base image is made of; a change to any of it rebuilds.
  stamp="$pkg $(sha256sum "$SELF" | cut -d' ' -f1) $(dpkg-query -W -f='${Package}=${Version} ' busybox-static iproute2 libc6)"
  out_dir="$CACHE/$pkg"
  if [ -f "$out_dir/stamp" ] && [ "$(cat "$out_dir/stamp")" = "$stamp" ] &&
     [ -f "$out_dir/vmlinuz" ] && [ -f "$out_dir/base.cpio.gz" ]; then
    echo "$out_dir"
    return
  fi

  deb=$(download_kernel_deb "$pkg")
  release=${pkg#linux-image-}
  log "building the base initramfs for $release"
  build_base_initramfs "$deb" "$out_dir" "$release"
  echo "$stamp" > "$out_dir/stamp"
  # Packages of kernels no longer current are 70 MB each; their small images may stay in use.
  find "$CACHE/debs" -maxdepth 1 -name '*.deb' ! -name "${pkg}_*" -delete
  log "built $out_dir ($(du -h "$out_dir/base.cpio.gz" | cut -f1) initramfs)"
  echo "$out_dir"
}

main "$@"

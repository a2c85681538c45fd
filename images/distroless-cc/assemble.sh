#!/bin/bash
# assemble.sh OUT: copies the files of the runtime packages (as dpkg lists them) into OUT, with the
# merged-/usr symlinks, the generated CA bundle, passwd/group for root/nobody/nonroot and dpkg status
# entries per package (what distroless ships for image scanners).
set -euo pipefail
out="$1"
pkgs=(base-files netbase tzdata ca-certificates libc6 libgcc-s1 libssl3 libstdc++6)
mkdir -p "$out"/usr/{bin,lib,lib64,sbin}
for l in bin lib lib64 sbin; do cp -a "/$l" "$out/$l"; done
for pkg in "${pkgs[@]}"; do
  dpkg -L "$pkg" | while read -r f; do
    if [[ -d "$f" && ! -L "$f" ]]; then
      mkdir -p "$out$f"
    elif [[ -e "$f" || -L "$f" ]]; then
      mkdir -p "$out$(dirname "$f")"
      cp -a "$f" "$out$f"
    fi
  done
  mkdir -p "$out/var/lib/dpkg/status.d"
  dpkg -s "$pkg" >"$out/var/lib/dpkg/status.d/$pkg"
done
cp -a /etc/ssl "$out/etc/"
rm -rf "$out"/usr/share/{doc,man,info,lintian,locale}
printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$out/etc/passwd"
printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' >"$out/etc/group"
printf 'hosts: files dns\n' >"$out/etc/nsswitch.conf"
mkdir -p "$out/home/nonroot" "$out/tmp" "$out/root"
chown 65532:65532 "$out/home/nonroot"
chmod 1777 "$out/tmp"
chmod 0700 "$out/root"

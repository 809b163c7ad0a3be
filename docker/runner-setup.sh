#!/usr/bin/env bash
# Makes a Debian bookworm root filesystem into the runner image's, from inside it (as root). The
# one recipe of the runner image: docker/runner.Dockerfile runs it in RUN steps, scripts/images
# runs it in a chroot of a debootstrapped root filesystem.
#
#   runner-setup.sh packages PACKAGES_FILE   install the toolchains (one package a line, # comments),
#                                            without docs, man pages or locales; make /work
#   runner-setup.sh warm LANGUAGES_TOML      fill the warm caches config/languages.toml names
#                                            (Go's standard library) under /var/cache/kiln/warm
set -euo pipefail

say() { echo "runner-setup: $*" >&2; }

packages() {
  local list=$1
  # Docs, man pages and locales never land (as in Debian's slim images); copyrights stay.
  cat >/etc/dpkg/dpkg.cfg.d/kiln-slim <<'EOF'
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
path-exclude=/usr/share/lintian/*
EOF
  # Nothing starts services while packages install.
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
  chmod 755 /usr/sbin/policy-rc.d
  local pkgs
  pkgs=$(sed -e 's/#.*//' "$list" | tr -s ' \t\n' ' ')
  say "installing $pkgs"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
  apt-get clean
  rm -f /usr/sbin/policy-rc.d
  # What the base system brought before the excludes, and what apt and dpkg leave behind.
  find /usr/share/doc -mindepth 1 -not -name copyright -not -type d -delete
  find /usr/share/doc -mindepth 1 -type d -empty -delete
  rm -rf /usr/share/man/* /usr/share/info/* /usr/share/lintian/*
  find /usr/share/locale -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
  rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/cache/debconf/*-old /var/lib/dpkg/*-old \
    /var/log/apt /var/log/*.log /var/cache/ldconfig/aux-cache
  # The work dir (a pod's emptyDir is mounted over it) belongs to the one user, 65534.
  mkdir -p /work
  chown 65534:65534 /work
}

# Kiln fills these once per host at start (src/warm.rs); an image fills them once at build, with
# the same command and environment, under the folder Kiln's default root names when
# XDG_CACHE_HOME=/var/cache: /var/cache/kiln/warm/<language>-<version>, marked by .kiln-warm.
warm() {
  python3 - "$1" <<'PY'
import os, re, shutil, subprocess, sys, tomllib

ROOT = "/var/cache/kiln/warm"

def version_of(text):
    # As extract_version in src/languages.rs: the first N.N[.N...].
    for m in re.finditer(r"\d[\d.]*", text):
        v = m.group().rstrip(".")
        if "." in v:
            return v
    return None

with open(sys.argv[1], "rb") as f:
    languages = tomllib.load(f)["language"]
for lang in languages:
    warm = lang.get("warm_cache")
    if not warm or not lang.get("enabled", True):
        continue
    bins = {}
    for name in lang["binaries"]:
        found = shutil.which(name)
        if found:
            bins[name] = os.path.realpath(found)
    if len(bins) < len(lang["binaries"]):
        continue
    fill = lambda argv: [re.sub(r"\{([^}]+)\}", lambda m: bins.get(m[1], m[0]), a) for a in argv]
    probe = subprocess.run(fill(lang["version"]), capture_output=True, text=True,
                           env={"GOTOOLCHAIN": "local", "PATH": os.environ["PATH"]})
    version = version_of(probe.stdout + probe.stderr)
    if not version:
        sys.exit(f"runner-setup: no version for {lang['name']}: {probe.stdout + probe.stderr!r}")
    folder = os.path.join(ROOT, f"{lang['name']}-{version}")
    os.makedirs(folder, exist_ok=True)
    # The environment Kiln gives the language (resolve in src/languages.rs), then the cache's.
    path = [os.path.dirname(b) for b in bins.values()] + ["/usr/local/bin", "/usr/bin", "/bin"]
    env = {"PATH": ":".join(dict.fromkeys(path)), "HOME": "/tmp", "TMPDIR": "/tmp",
           "LANG": "C.UTF-8", **lang.get("env", {}), warm["env"]: folder}
    print(f"runner-setup: filling {folder}: {' '.join(fill(warm['command']))}", file=sys.stderr)
    subprocess.run(fill(warm["command"]), env=env, cwd=folder, check=True)
    with open(os.path.join(folder, ".kiln-warm"), "w") as f:
        f.write(version)
PY
  # What the warm commands wrote outside their caches (GOPATH under /tmp).
  rm -rf /tmp/go /root/.cache
  chmod -R a+rX /var/cache/kiln
}

case "${1:-}" in
  packages) packages "$2" ;;
  warm) warm "$2" ;;
  *) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac

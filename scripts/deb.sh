#!/usr/bin/env bash
# Builds the Debian package: the release binary (without the test-only failpoints), then the
# assets generated from it (man page, completions) and the packaged config and unit, then
# `cargo deb --no-build`. Prints the .deb's path. Needs cargo-deb (`cargo install cargo-deb`).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin retentiond
bin=target/release/retentiond
out=target/deb-assets
rm -rf "$out"
mkdir -p "$out"
"$bin" man >"$out/retentiond.8"
gzip -9nf "$out/retentiond.8"
"$bin" completions bash >"$out/retentiond.bash"
"$bin" completions zsh >"$out/_retentiond"
"$bin" completions fish >"$out/retentiond.fish"
# The binary is in /usr/bin, not /usr/local/bin as for a hand install.
sed 's|/usr/local/bin/retentiond|/usr/bin/retentiond|g' systemd/retentiond.service >"$out/retentiond.service"
# The example config with its paths where a package puts them: the ledger in the unit's
# StateDirectory, the application's data under /var/lib/app (the unit's ReadWritePaths).
sed -e 's|sqlite://var/ledger.db|sqlite:///var/lib/retentiond/ledger.db|' \
    -e 's|sqlite://var/|sqlite:///var/lib/app/|g' \
    -e 's|"var/|"/var/lib/app/|g' \
    config/retentiond.toml >"$out/retentiond.toml"
if grep -nE '(sqlite://|")var/' "$out/retentiond.toml"; then
    echo "deb.sh: relative paths left in the packaged config" >&2
    exit 1
fi
rm -f target/debian/retentiond_*.deb
cargo deb --no-build --no-strip --output target/debian/ >&2
ls target/debian/retentiond_*.deb

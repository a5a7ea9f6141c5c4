//! [`Tailer`]: which bytes of a file source's files to read next, surviving rotation,
//! truncation, partial lines and restarts.
//!
//! A file is known by its identity ([`FileId`]: device and inode), not its name. Each scan
//! globs the source's pattern and stats the matches; a file is read only when its size differs
//! from its saved offset, so an idle scan costs one directory listing and one `stat` per file.
//! - **Rotation** (rename, then a new file under the old name): the new inode is a new file read
//!   from the start; the renamed inode keeps its offset and is found again by identity in its
//!   directory, so lines written just before the rename are still read. A file is forgotten only
//!   when it is gone from its directory.
//! - **Truncation** (`copytruncate`): a size below the offset restarts the file at 0. A file
//!   truncated and regrown past the offset between two scans, or replaced under a reused inode,
//!   is caught by comparing its first bytes (`head`) with the saved ones.
//! - **Partial last line**: only bytes up to the last newline are consumed; the rest is read
//!   again, whole, once its newline arrives.
//! - **Restart**: positions come from the cache, where they were saved in the same transaction
//!   as the records read up to them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::cache::{FileId, FilePosition};
use super::config::FilePattern;

/// Bytes of a file's start kept to recognise it.
pub const HEAD_LEN: usize = 64;
/// Most bytes read per chunk. A "line" this long without a newline is skipped whole
/// ([`Line::Oversized`]) so one broken file cannot stall its source.
pub const MAX_CHUNK_BYTES: usize = 4 << 20;

/// Why a file could not be read this scan; it is tried again on the next one.
#[derive(Debug, thiserror::Error)]
#[error("source {source_name}: {op} {}: {error}", path.display())]
pub struct TailError {
    /// The source.
    pub source_name: String,
    /// The file or pattern.
    pub path: PathBuf,
    /// What was being done.
    pub op: &'static str,
    /// The cause.
    #[source]
    pub error: std::io::Error,
}

/// One complete line read, or an over-long run without a newline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A line without its newline (and without a trailing `\r`).
    Text(String),
    /// [`MAX_CHUNK_BYTES`] without a newline, skipped.
    Oversized,
}

/// Why a file was read again from its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reset {
    /// It is shorter than the saved offset.
    Truncated,
    /// Its first bytes changed: another file under the same inode, or truncated and regrown.
    Replaced,
}

impl Reset {
    /// Both reasons, for registering their counters.
    pub const ALL: [Self; 2] = [Self::Truncated, Self::Replaced];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Truncated => "truncated",
            Self::Replaced => "replaced",
        }
    }
}

/// Lines read from one file and the position just after them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Complete lines, in file order (blank lines left out).
    pub lines: Vec<Line>,
    /// Where the next read starts; save it with the records of `lines`.
    pub next: FilePosition,
    /// Set when this chunk restarted the file from 0.
    pub reset: Option<Reset>,
}

/// The outcome of a scan: files with unread bytes, and files that are gone.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Scan {
    /// Files to read, rotated-away ones first, then by path.
    pub to_read: Vec<FileId>,
    /// Known files that no longer exist; forget their positions.
    pub gone: Vec<FileId>,
}

/// The files of one source and how far each has been read.
#[derive(Debug)]
pub struct Tailer {
    source: String,
    glob: String,
    ignore_older_than: Option<Duration>,
    known: BTreeMap<FileId, FilePosition>,
}

fn file_id(m: &std::fs::Metadata) -> FileId {
    FileId {
        dev: m.dev(),
        ino: m.ino(),
    }
}

impl Tailer {
    /// A tailer for `files`, resuming from `saved` positions.
    pub fn new(
        source: &str,
        files: &FilePattern,
        ignore_older_than: Option<Duration>,
        saved: Vec<FilePosition>,
    ) -> Self {
        Self {
            source: source.to_owned(),
            glob: files.glob.clone(),
            ignore_older_than,
            known: saved.into_iter().map(|p| (p.id, p)).collect(),
        }
    }

    /// The saved position of a file.
    pub fn position(&self, id: FileId) -> Option<&FilePosition> {
        self.known.get(&id)
    }

    /// Lists the pattern's files and finds the known ones that moved away.
    ///
    /// # Errors
    /// Only when the pattern itself is rejected (it was validated, so in practice never);
    /// unreadable entries are skipped.
    pub fn scan(&mut self) -> Result<Scan, TailError> {
        let matches = glob::glob(&self.glob).map_err(|e| TailError {
            source_name: self.source.clone(),
            path: PathBuf::from(&self.glob),
            op: "globbing",
            error: std::io::Error::new(std::io::ErrorKind::InvalidInput, e.msg),
        })?;
        let mut seen = BTreeSet::new();
        let mut current = Vec::new();
        for path in matches.flatten() {
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            let id = file_id(&meta);
            // A hard link or symlink to a file already listed.
            if !seen.insert(id) {
                continue;
            }
            let len = meta.len();
            match self.known.get_mut(&id) {
                Some(pos) => {
                    pos.path = path.clone();
                    if len != pos.offset {
                        current.push((path, id));
                    }
                }
                None => {
                    let too_old = self.ignore_older_than.is_some_and(|max_age| {
                        meta.modified()
                            .ok()
                            .and_then(|m| SystemTime::now().duration_since(m).ok())
                            .is_some_and(|age| age > max_age)
                    });
                    if too_old {
                        continue;
                    }
                    self.known.insert(
                        id,
                        FilePosition {
                            id,
                            path: path.clone(),
                            offset: 0,
                            head: Vec::new(),
                        },
                    );
                    if len > 0 {
                        current.push((path, id));
                    }
                }
            }
        }

        // Known files the pattern no longer lists: rotated (renamed) or deleted. Look for them
        // by identity in the directory they were last seen in, one listing per directory.
        let mut listings: HashMap<PathBuf, Option<DirListing>> = HashMap::new();
        let mut rotated = Vec::new();
        let mut gone = Vec::new();
        for (id, pos) in self.known.iter_mut().filter(|(id, _)| !seen.contains(id)) {
            let dir = pos
                .path
                .parent()
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
            let listing = listings
                .entry(dir.clone())
                .or_insert_with(|| list_dir(&dir));
            match listing {
                // The directory cannot be listed: keep the position, never re-read from scratch.
                None => {}
                Some(files) => match files.get(id) {
                    Some((path, len)) => {
                        pos.path = path.clone();
                        if *len != pos.offset {
                            rotated.push((path.clone(), *id));
                        }
                    }
                    None => gone.push(*id),
                },
            }
        }
        for id in &gone {
            self.known.remove(id);
        }
        rotated.sort();
        current.sort();
        Ok(Scan {
            to_read: rotated
                .into_iter()
                .chain(current)
                .map(|(_, id)| id)
                .collect(),
            gone,
        })
    }

    /// Reads up to `max_lines` complete lines of a file from its position. `None` when there is
    /// nothing complete to read, or the file moved since the scan (the next scan finds it).
    ///
    /// # Errors
    /// When the file cannot be opened or read.
    pub fn read_chunk(&self, id: FileId, max_lines: usize) -> Result<Option<Chunk>, TailError> {
        let Some(pos) = self.known.get(&id) else {
            return Ok(None);
        };
        let err = |op: &'static str| {
            let source_name = self.source.clone();
            let path = pos.path.clone();
            move |error| TailError {
                source_name,
                path,
                op,
                error,
            }
        };
        let file = match File::open(&pos.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(err("opening")(e)),
        };
        let meta = file.metadata().map_err(err("reading metadata of"))?;
        if file_id(&meta) != id {
            return Ok(None);
        }
        let len = meta.len();

        let mut reset = None;
        if len < pos.offset {
            reset = Some(Reset::Truncated);
        } else if !pos.head.is_empty() {
            let mut head = vec![0u8; pos.head.len()];
            file.read_exact_at(&mut head, 0)
                .map_err(err("reading the start of"))?;
            if head != pos.head {
                reset = Some(Reset::Replaced);
            }
        }
        let start = if reset.is_some() { 0 } else { pos.offset };

        let want = usize::try_from(len - start)
            .unwrap_or(usize::MAX)
            .min(MAX_CHUNK_BYTES);
        let mut buf = vec![0u8; want];
        file.read_exact_at(&mut buf, start)
            .map_err(err("reading"))?;

        let mut lines = Vec::new();
        let mut consumed = 0usize;
        let mut complete = 0usize;
        while complete < max_lines {
            let Some(nl) = buf[consumed..].iter().position(|b| *b == b'\n') else {
                break;
            };
            let raw = &buf[consumed..consumed + nl];
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            consumed += nl + 1;
            complete += 1;
            if !raw.iter().all(u8::is_ascii_whitespace) {
                lines.push(Line::Text(String::from_utf8_lossy(raw).into_owned()));
            }
        }
        if complete == 0 && want == MAX_CHUNK_BYTES {
            lines.push(Line::Oversized);
            consumed = want;
        }
        if consumed == 0 && reset.is_none() {
            return Ok(None);
        }

        let offset = start + consumed as u64;
        let head_len = usize::try_from(offset).unwrap_or(usize::MAX).min(HEAD_LEN);
        let head = if start == 0 {
            buf[..head_len].to_vec()
        } else if pos.head.len() < head_len {
            let mut head = vec![0u8; head_len];
            file.read_exact_at(&mut head, 0)
                .map_err(err("reading the start of"))?;
            head
        } else {
            pos.head.clone()
        };
        Ok(Some(Chunk {
            lines,
            next: FilePosition {
                id,
                path: pos.path.clone(),
                offset,
                head,
            },
            reset,
        }))
    }

    /// Records a position once its chunk is committed.
    pub fn advance(&mut self, next: FilePosition) {
        self.known.insert(next.id, next);
    }
}

/// A directory's regular files by identity: where each is and its size.
type DirListing = HashMap<FileId, (PathBuf, u64)>;

/// Every regular file in `dir` by identity, or `None` when the directory cannot be listed.
fn list_dir(dir: &Path) -> Option<DirListing> {
    let entries = std::fs::read_dir(dir).ok()?;
    Some(
        entries
            .flatten()
            .filter_map(|e| {
                let meta = e.metadata().ok().filter(std::fs::Metadata::is_file)?;
                Some((file_id(&meta), (e.path(), meta.len())))
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn append(path: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    fn tailer(dir: &Path, pattern: &str, saved: Vec<FilePosition>) -> Tailer {
        let p = FilePattern::parse(&dir.join(pattern).to_string_lossy()).unwrap();
        Tailer::new("t", &p, None, saved)
    }

    /// Scans and reads everything, committing each chunk; returns the text lines.
    fn drain(t: &mut Tailer) -> Vec<String> {
        let mut out = Vec::new();
        let scan = t.scan().unwrap();
        for id in scan.to_read {
            while let Some(chunk) = t.read_chunk(id, 3).unwrap() {
                for l in &chunk.lines {
                    if let Line::Text(s) = l {
                        out.push(s.clone());
                    }
                }
                t.advance(chunk.next);
            }
        }
        out
    }

    fn saved(t: &Tailer) -> Vec<FilePosition> {
        t.known.values().cloned().collect()
    }

    #[test]
    fn partial_last_line_waits_for_its_newline() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.log");
        append(&f, "one\ntw");
        let mut t = tailer(dir.path(), "a.log", vec![]);
        assert_eq!(drain(&mut t), ["one"]);
        assert_eq!(drain(&mut t), Vec::<String>::new());
        append(&f, "o\r\nthree\n\n");
        assert_eq!(drain(&mut t), ["two", "three"]);
    }

    #[test]
    fn rename_rotation_reads_the_old_tail_and_the_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("online.log");
        append(&f, "a1\na2\n");
        let mut t = tailer(dir.path(), "online.log", vec![]);
        assert_eq!(drain(&mut t), ["a1", "a2"]);
        // Written after the last scan, then rotated away before the next one.
        append(&f, "a3\n");
        std::fs::rename(&f, dir.path().join("online.log.1")).unwrap();
        append(&f, "b1\n");
        assert_eq!(drain(&mut t), ["a3", "b1"]);
        // The writer still had the old file open.
        append(&dir.path().join("online.log.1"), "a4\n");
        append(&f, "b2\n");
        assert_eq!(drain(&mut t), ["a4", "b2"]);
        // Deleted: forgotten.
        std::fs::remove_file(dir.path().join("online.log.1")).unwrap();
        let scan = t.scan().unwrap();
        assert_eq!(scan.gone.len(), 1);
        assert_eq!(t.known.len(), 1);
    }

    #[test]
    fn truncation_restarts_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.log");
        append(&f, "first line\nsecond line\n");
        let mut t = tailer(dir.path(), "a.log", vec![]);
        assert_eq!(drain(&mut t).len(), 2);
        std::fs::write(&f, "x\n").unwrap();
        let id = t.scan().unwrap().to_read[0];
        let chunk = t.read_chunk(id, 10).unwrap().unwrap();
        assert_eq!(chunk.reset, Some(Reset::Truncated));
        assert_eq!(chunk.lines, [Line::Text("x".into())]);
    }

    #[test]
    fn truncated_and_regrown_past_the_offset_is_noticed_by_its_head() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.log");
        append(&f, "2026-01-01 00:00:00,1.1.1.1\n");
        let mut t = tailer(dir.path(), "a.log", vec![]);
        assert_eq!(drain(&mut t).len(), 1);
        std::fs::write(
            &f,
            "2026-01-01 00:00:05,2.2.2.2\n2026-01-01 00:00:06,3.3.3.3\n",
        )
        .unwrap();
        let id = t.scan().unwrap().to_read[0];
        let chunk = t.read_chunk(id, 10).unwrap().unwrap();
        assert_eq!(chunk.reset, Some(Reset::Replaced));
        assert_eq!(chunk.lines.len(), 2);
    }

    #[test]
    fn restart_in_the_middle_of_a_file_resumes_at_the_saved_offset() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.log");
        append(&f, "l1\nl2\nl3\nl4\nl5\n");
        let mut t = tailer(dir.path(), "a.log", vec![]);
        let id = t.scan().unwrap().to_read[0];
        let chunk = t.read_chunk(id, 2).unwrap().unwrap();
        assert_eq!(chunk.lines.len(), 2);
        t.advance(chunk.next);
        // "Crash": a new tailer from the saved positions.
        let mut t = tailer(dir.path(), "a.log", saved(&t));
        assert_eq!(drain(&mut t), ["l3", "l4", "l5"]);
    }

    #[test]
    fn new_files_are_picked_up_and_old_ones_can_be_ignored() {
        let dir = tempfile::tempdir().unwrap();
        append(&dir.path().join("test_2026-01-16_15.log"), "x\n");
        let mut t = tailer(dir.path(), "test_{datetime}.log", vec![]);
        assert_eq!(drain(&mut t), ["x"]);
        append(&dir.path().join("test_2026-01-16_16.log"), "y\n");
        append(&dir.path().join("other.log"), "z\n");
        assert_eq!(drain(&mut t), ["y"]);

        let p = FilePattern::parse(&dir.path().join("*.log").to_string_lossy()).unwrap();
        let mut t = Tailer::new("t", &p, Some(Duration::from_secs(3600)), vec![]);
        let old = File::options()
            .write(true)
            .open(dir.path().join("other.log"))
            .unwrap();
        old.set_modified(SystemTime::now() - Duration::from_secs(7200))
            .unwrap();
        let mut lines = drain(&mut t);
        lines.sort();
        assert_eq!(lines, ["x", "y"]);
    }

    #[test]
    fn an_endless_line_is_skipped_not_stuck() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.log");
        std::fs::write(&f, vec![b'x'; MAX_CHUNK_BYTES + 10]).unwrap();
        append(&f, "\nok\n");
        let mut t = tailer(dir.path(), "a.log", vec![]);
        let id = t.scan().unwrap().to_read[0];
        let chunk = t.read_chunk(id, 10).unwrap().unwrap();
        assert_eq!(chunk.lines, [Line::Oversized]);
        t.advance(chunk.next);
        // The rest of the long line, then the good one.
        let chunk = t.read_chunk(id, 10).unwrap().unwrap();
        assert_eq!(
            chunk.lines,
            [Line::Text("x".repeat(10)), Line::Text("ok".into())]
        );
    }

    #[test]
    fn an_idle_scan_reads_nothing() {
        let dir = tempfile::tempdir().unwrap();
        append(&dir.path().join("a.log"), "1\n");
        let mut t = tailer(dir.path(), "*.log", vec![]);
        drain(&mut t);
        assert_eq!(t.scan().unwrap(), Scan::default());
    }
}

//! The unit of hand-off: a [`Batch`] of valid records plus the dead letters found while parsing
//! them, so that rejects become durable with the batch instead of being written from the pull loop.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Record;

/// A unique id for one handed-off batch, used in logs and for idempotent spool draining.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BatchId(pub String);

impl BatchId {
    /// A fresh random id.
    pub fn new() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }

    /// An id derived from the batch's input, `parts`: the same input (a push that its relay
    /// sent again after a 503) gives the same id, so the store, which keys dead letters by
    /// batch and position, keeps its dead letters once.
    pub fn derived<'p>(parts: impl IntoIterator<Item = &'p [u8]>) -> Self {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for p in parts {
            // Length-prefixed, so that ["ab", "c"] and ["a", "bc"] differ.
            h.update((p.len() as u64).to_le_bytes());
            h.update(p);
        }
        let digest = h.finalize();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        Self(uuid::Uuid::from_bytes(bytes).to_string())
    }
}

impl Default for BatchId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for BatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Records pulled or pushed together, handed to the queue as one durable entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// Unique id of this batch.
    pub id: BatchId,
    /// Where it came from: an endpoint name, or `push:<relay>`.
    pub source: String,
    /// When botpipe received it.
    pub received_at: DateTime<Utc>,
    /// The valid records.
    pub records: Vec<Record>,
    /// Records of this batch that failed validation; the worker stores them with the batch.
    #[serde(default)]
    pub dead_letters: Vec<DeadLetter>,
}

impl Batch {
    /// A new batch from `source` received now.
    pub fn new(
        source: impl Into<String>,
        records: Vec<Record>,
        dead_letters: Vec<DeadLetter>,
    ) -> Self {
        Self {
            id: BatchId::new(),
            source: source.into(),
            received_at: Utc::now(),
            records,
            dead_letters,
        }
    }

    /// Encodes the batch for a queue entry.
    ///
    /// # Errors
    /// Never in practice: every field serialises.
    pub fn encode(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    /// Decodes a queue entry.
    ///
    /// # Errors
    /// When the bytes are not an encoded batch (a corrupt or foreign queue entry).
    pub fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// Why a record was rejected. A closed set: it is a metric label and a column value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// Not a JSON object, or a field of the wrong JSON type.
    InvalidJson,
    /// `ip`, `timestamp` or `botnet_type` missing.
    MissingField,
    /// Not an IP address, or not a public one.
    BadIp,
    /// A timestamp in no accepted format, or out of range.
    BadTimestamp,
    /// A botnet type that cannot name a table.
    InvalidBotnetType,
    /// A well-formed botnet type that configuration does not allow.
    UnknownBotnetType,
    /// A `log_type` other than `online` or `cleanup`.
    BadLogType,
    /// The database refused the row permanently (a value out of range, too long, …).
    StoreRejected,
}

impl RejectReason {
    /// Every reason, for metrics descriptions and status output.
    pub const ALL: [RejectReason; 8] = [
        Self::InvalidJson,
        Self::MissingField,
        Self::BadIp,
        Self::BadTimestamp,
        Self::InvalidBotnetType,
        Self::UnknownBotnetType,
        Self::BadLogType,
        Self::StoreRejected,
    ];

    /// The snake_case name used as label and column value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidJson => "invalid_json",
            Self::MissingField => "missing_field",
            Self::BadIp => "bad_ip",
            Self::BadTimestamp => "bad_timestamp",
            Self::InvalidBotnetType => "invalid_botnet_type",
            Self::UnknownBotnetType => "unknown_botnet_type",
            Self::BadLogType => "bad_log_type",
            Self::StoreRejected => "store_rejected",
        }
    }

    /// Parses a stored reason name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejected record, kept whole so an operator can inspect and replay it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Endpoint name or `push:<relay>`.
    pub source: String,
    /// Why it was rejected.
    pub reason: RejectReason,
    /// A human-readable detail, e.g. the offending value.
    pub detail: String,
    /// The record's raw JSON text, exactly as received.
    pub raw: String,
    /// When botpipe rejected it.
    pub rejected_at: DateTime<Utc>,
}

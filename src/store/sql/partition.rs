//! Write partitions: a stable hash of a node's IP picks the partition whose lock a transaction
//! must hold to write that node's rows (see the parent module for why).
//!
//! The hash must be the same in every botpipe process on a database and across versions that
//! run side by side: it is computed from the address bytes alone, with a fixed multiplier, not
//! with the standard library's randomly seeded hasher. Changing it or [`WRITE_PARTITIONS`]
//! needs every process on the database upgraded together (mixed versions would only lose the
//! deadlock guarantee; the retries would still store everything).

use std::net::IpAddr;

use super::super::merge::TypePlan;
use super::super::EnrichedBatch;
use crate::record::{BotnetType, NodeIp};

/// Partitions per database. Enough that a handful of concurrent writers rarely want the same
/// one at the same time; few enough that a 5,000-record batch still writes a few hundred rows
/// per statement (measured in `docs/performance.md`).
pub const WRITE_PARTITIONS: u32 = 8;

/// Records a transaction gathers (whole partitions, taken without waiting) before it stops
/// taking more: a 1,000-record batch is then one transaction, a 5,000-record batch two, and a
/// second writer finds the other half free.
pub const TX_TARGET_RECORDS: usize = 2500;

/// The partition of `ip`.
pub fn partition_of(ip: NodeIp) -> u32 {
    let folded = match ip.addr() {
        IpAddr::V4(v4) => u64::from(u32::from(v4)),
        IpAddr::V6(v6) => {
            let n = u128::from(v6);
            (n as u64) ^ ((n >> 64) as u64)
        }
    };
    // Fibonacci hashing: neighbouring addresses land in different partitions.
    let mixed = folded.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((mixed >> 32) % u64::from(WRITE_PARTITIONS)) as u32
}

/// What one partition's transaction writes.
#[derive(Debug)]
pub(crate) struct Part<'a> {
    /// The partition.
    pub id: u32,
    /// The batch's plans restricted to this partition's IPs (types with none are left out).
    pub plans: Vec<TypePlan<'a>>,
    /// Indexes of the batch's records in this partition, in batch order (for isolation).
    pub records: Vec<usize>,
}

/// Splits `plans` (of `batch`) by partition; partitions without rows are left out.
pub(crate) fn split<'a>(batch: &EnrichedBatch, plans: &[TypePlan<'a>]) -> Vec<Part<'a>> {
    let mut parts: Vec<Part<'a>> = (0..WRITE_PARTITIONS)
        .map(|id| Part {
            id,
            plans: Vec::new(),
            records: Vec::new(),
        })
        .collect();
    for p in plans {
        let mut per: Vec<TypePlan<'a>> = (0..WRITE_PARTITIONS)
            .map(|_| TypePlan {
                botnet_type: p.botnet_type.clone(),
                nodes: Vec::new(),
                communications: Vec::new(),
            })
            .collect();
        for n in &p.nodes {
            if let Some(t) = per.get_mut(partition_of(n.ip) as usize) {
                t.nodes.push(n.clone());
            }
        }
        for c in &p.communications {
            if let Some(t) = per.get_mut(partition_of(c.ip) as usize) {
                t.communications.push(c.clone());
            }
        }
        for (part, t) in parts.iter_mut().zip(per) {
            if !t.nodes.is_empty() {
                part.plans.push(t);
            }
        }
    }
    for (i, r) in batch.batch.records.iter().enumerate() {
        if let Some(part) = parts.get_mut(partition_of(r.ip) as usize) {
            part.records.push(i);
        }
    }
    parts.retain(|p| !p.records.is_empty());
    parts
}

/// The plans of `parts` together: per type, their nodes and communications.
pub(crate) fn merge<'a>(parts: &[&Part<'a>]) -> Vec<TypePlan<'a>> {
    let mut by_type: std::collections::BTreeMap<&BotnetType, TypePlan<'a>> = Default::default();
    for p in parts.iter().flat_map(|part| &part.plans) {
        let t = by_type.entry(&p.botnet_type).or_insert_with(|| TypePlan {
            botnet_type: p.botnet_type.clone(),
            nodes: Vec::new(),
            communications: Vec::new(),
        });
        t.nodes.extend(p.nodes.iter().cloned());
        t.communications.extend(p.communications.iter().cloned());
    }
    by_type.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enrich::Geo;
    use crate::record::{Batch, LogType, Record};
    use crate::store::merge::plan;

    #[test]
    fn partitions_are_stable_and_spread() {
        let ip = NodeIp::parse("8.8.8.8").unwrap();
        assert_eq!(partition_of(ip), partition_of(ip));
        let mut seen = [0u32; WRITE_PARTITIONS as usize];
        for i in 0..8000u32 {
            let ip = NodeIp::from_ip(IpAddr::V4((0x0808_0000 + i).into())).unwrap();
            seen[partition_of(ip) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 700), "{seen:?}");
    }

    #[test]
    fn split_keeps_every_row_once_and_a_node_with_its_communications() {
        let t = BotnetType::parse("mozi").unwrap();
        let records: Vec<Record> = (0..200u32)
            .map(|i| Record {
                ip: NodeIp::from_ip(IpAddr::V4((0x0101_0100 + i % 50).into())).unwrap(),
                timestamp: chrono::DateTime::from_timestamp(1_700_000_000 + i64::from(i), 0)
                    .unwrap(),
                botnet_type: t.clone(),
                log_type: if i % 3 == 0 {
                    LogType::Cleanup
                } else {
                    LogType::Online
                },
                seq_id: None,
            })
            .collect();
        let batch = EnrichedBatch {
            geo: vec![Geo::unknown(); records.len()],
            batch: Batch::new("t", records, vec![]),
        };
        let plans = plan(&batch);
        let parts = split(&batch, &plans);
        let nodes: usize = parts
            .iter()
            .flat_map(|p| &p.plans)
            .map(|p| p.nodes.len())
            .sum();
        let comms: usize = parts
            .iter()
            .flat_map(|p| &p.plans)
            .map(|p| p.communications.len())
            .sum();
        let records: usize = parts.iter().map(|p| p.records.len()).sum();
        let all: Vec<&Part<'_>> = parts.iter().collect();
        let merged = merge(&all);
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].nodes.len(), 50);
        assert_eq!(merged[0].communications.len(), 200);
        assert_eq!(nodes, 50);
        assert_eq!(comms, 200);
        assert_eq!(records, 200);
        for part in &parts {
            for p in &part.plans {
                assert!(p.nodes.iter().all(|n| partition_of(n.ip) == part.id));
                assert!(p
                    .communications
                    .iter()
                    .all(|c| partition_of(c.ip) == part.id));
            }
        }
    }
}

//! Test batches of valid records.

use botpipe::record::{Batch, BotnetType, LogType, NodeIp, Record, SeqId};

/// A batch of `n` distinct valid records from `source`.
pub fn test_batch(source: &str, n: usize) -> Batch {
    let records = (0..n)
        .map(|i| Record {
            ip: NodeIp::parse(&format!(
                "1.{}.{}.{}",
                2 + i / 62_500,
                (i / 250) % 250,
                i % 250 + 1
            ))
            .unwrap(),
            timestamp: chrono::Utc::now(),
            botnet_type: BotnetType::parse("mozi").unwrap(),
            log_type: LogType::Online,
            seq_id: Some(SeqId(i as u64 + 1)),
        })
        .collect();
    Batch::new(source, records, vec![])
}

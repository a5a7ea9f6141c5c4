-- botpipe's dead letters on MySQL/MariaDB.
CREATE TABLE IF NOT EXISTS botpipe_dead_letters (
    id BIGINT AUTO_INCREMENT PRIMARY KEY,
    source TEXT NOT NULL,
    reason VARCHAR(32) NOT NULL,
    detail MEDIUMTEXT NOT NULL,
    raw LONGTEXT NOT NULL,
    batch_id VARCHAR(64),
    rejected_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    stored_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    INDEX idx_botpipe_dead_letters_reason (reason)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci

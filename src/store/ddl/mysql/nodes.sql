-- The nodes table of one botnet type on MySQL/MariaDB (the legacy shape plus cleaned_time and
-- a wider ip). {nodes} is filled in.
CREATE TABLE IF NOT EXISTS {nodes} (
    id INT AUTO_INCREMENT PRIMARY KEY,
    ip VARCHAR(45) NOT NULL,
    longitude FLOAT, latitude FLOAT,
    country VARCHAR(50), province VARCHAR(50), city VARCHAR(50), continent VARCHAR(50),
    isp VARCHAR(255), asn VARCHAR(50),
    status ENUM('active','inactive','cleaned') DEFAULT 'active',
    active_time TIMESTAMP NULL DEFAULT NULL,
    first_seen TIMESTAMP NULL DEFAULT NULL,
    last_seen TIMESTAMP NULL DEFAULT NULL,
    cleaned_time TIMESTAMP NULL DEFAULT NULL,
    communication_count INT DEFAULT 0,
    created_time TIMESTAMP NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP NULL DEFAULT NULL,
    is_china BOOLEAN DEFAULT FALSE,
    INDEX idx_location (country, province, city), INDEX idx_status (status),
    INDEX idx_first_seen (first_seen), INDEX idx_last_seen (last_seen),
    INDEX idx_cleaned_time (cleaned_time), INDEX idx_is_china (is_china),
    UNIQUE KEY idx_unique_ip (ip)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci

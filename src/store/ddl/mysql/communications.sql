-- The communications table of one botnet type on MySQL/MariaDB. {nodes}, {communications} and
-- {type} are filled in.
CREATE TABLE IF NOT EXISTS {communications} (
    id BIGINT AUTO_INCREMENT PRIMARY KEY,
    node_id INT NOT NULL,
    ip VARCHAR(45) NOT NULL,
    communication_time TIMESTAMP NOT NULL,
    received_at TIMESTAMP NULL DEFAULT CURRENT_TIMESTAMP,
    longitude FLOAT, latitude FLOAT,
    country VARCHAR(50), province VARCHAR(50), city VARCHAR(50), continent VARCHAR(50),
    isp VARCHAR(255), asn VARCHAR(50),
    event_type VARCHAR(50),
    status VARCHAR(50) DEFAULT 'active',
    is_china BOOLEAN DEFAULT FALSE,
    UNIQUE KEY idx_unique_communication (ip, communication_time, event_type),
    INDEX idx_node_id (node_id), INDEX idx_communication_time (communication_time),
    INDEX idx_location (country, province, city),
    CONSTRAINT fk_node_{type} FOREIGN KEY (node_id) REFERENCES {nodes}(id) ON DELETE RESTRICT
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci

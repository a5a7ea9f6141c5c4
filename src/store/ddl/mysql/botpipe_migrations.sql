-- botpipe's migration history on MySQL/MariaDB.
CREATE TABLE IF NOT EXISTS botpipe_schema_migrations (
    scope VARCHAR(64) NOT NULL,
    version INT NOT NULL,
    description VARCHAR(255) NOT NULL,
    applied_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (scope, version)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci

-- Secret listing in byte order, by prefix and from the previous page's last path. The primary key
-- orders paths by the database's collation, in which a prefix need not be one contiguous range
-- and `starts_with` is no index condition: each page walked the key from the tenant's first path
-- (listing every secret was quadratic in their number). Deleted secrets are not listed.
CREATE INDEX secrets_listing ON secrets (tenant_id, path COLLATE "C") WHERE deleted_at IS NULL;

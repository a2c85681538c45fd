-- pgbench write ceiling: the single-row insert aside's POST /data performs, same shape and size.
INSERT INTO records (key, value, created_at, updated_at)
VALUES ('pgbench:' || gen_random_uuid()::text,
        '{"n":4242,"name":"record 4242","tags":["alpha","beta","gamma"],"ok":true}'::jsonb,
        now(), now())
RETURNING id, key, value, created_at, updated_at;

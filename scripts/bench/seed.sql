-- The benchmark records: ids 1..:n on an empty table (scripts/bench.sh, bench/profile.sh, bench/ab.sh),
-- each ~60 bytes of JSON, key bench:<9-digit n>. Run as: psql -v n=N -f scripts/bench/seed.sql URL
INSERT INTO records (key, value, created_at, updated_at)
SELECT 'bench:' || lpad(n::text, 9, '0'),
       jsonb_build_object('n', n, 'name', 'record ' || n, 'tags', jsonb_build_array('alpha', 'beta', 'gamma'), 'ok', true),
       now(), now()
FROM generate_series(1, :n) AS n;
ANALYZE records;

-- q10, log to file system: every bid (auction, bidder, price, time, extra) written to CSV files
-- partitioned by the UTC date and hour of its event time, DIR/dt=YYYY-MM-DD/hm=HH/, each
-- partition marked with a _SUCCESS file once the watermark passes its end.
--
-- run_query.py replaces ${OUTPUT_DIR} with a temporary directory it creates and removes.
-- Differences from Flink's Nexmark q10: a partition is an hour (`hm` is 'HH', as Eddy's), not a
-- minute ('HH:mm'), and it is committed when the watermark passes its end (partition time + 1 h),
-- as Eddy commits it. Differences from Eddy: Flink writes CSV (Eddy, Parquet) and rolls files by
-- its default policy (128 MB or 30 min), where Eddy keeps one file open per worker and partition.
-- Flink's `dt`/`hm` are directory names, not columns of the files, as Eddy's.
CREATE TEMPORARY TABLE nexmark_q10 (
    auction BIGINT, bidder BIGINT, price BIGINT, date_time TIMESTAMP(3), extra STRING,
    dt STRING, hm STRING
) PARTITIONED BY (dt, hm) WITH (
    'connector' = 'filesystem',
    'path' = '${OUTPUT_DIR}',
    'format' = 'csv',
    'sink.partition-commit.trigger' = 'partition-time',
    'partition.time-extractor.timestamp-pattern' = '$dt $hm:00:00',
    'sink.partition-commit.delay' = '1 h',
    'sink.partition-commit.watermark-time-zone' = 'UTC',
    'sink.partition-commit.policy.kind' = 'success-file'
);

INSERT INTO nexmark_q10
SELECT auction, bidder, price, CAST(ts AS TIMESTAMP(3)), extra,
       DATE_FORMAT(ts, 'yyyy-MM-dd'), DATE_FORMAT(ts, 'HH')
FROM bid;

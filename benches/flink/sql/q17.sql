-- q17, auction statistics report: for each auction and UTC day, how many bids, in total and per
-- price rank (rank 1 below 10 000, rank 2 from 10 000 to below 1 000 000, rank 3 the rest), and
-- the prices' minimum, maximum, average (AVG of a BIGINT: an integer, rounded down) and sum.
--
-- Flink's Nexmark q17 is an unbounded `GROUP BY auction, DATE_FORMAT(dateTime, 'yyyy-MM-dd')`,
-- an updating result. Eddy emits each (auction, day) once, final, when the watermark passes the
-- day's end; so here each day is a 1-day tumbling event-time window (UTC days), an append-only
-- result with Eddy's rows.
CREATE TEMPORARY TABLE nexmark_q17 (
    auction BIGINT, `day` STRING,
    total_bids BIGINT, rank1_bids BIGINT, rank2_bids BIGINT, rank3_bids BIGINT,
    min_price BIGINT, max_price BIGINT, avg_price BIGINT, sum_price BIGINT
) WITH ('connector' = 'blackhole');

INSERT INTO nexmark_q17
SELECT auction,
       DATE_FORMAT(window_start, 'yyyy-MM-dd') AS `day`,
       COUNT(*) AS total_bids,
       COUNT(*) FILTER (WHERE price < 10000) AS rank1_bids,
       COUNT(*) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_bids,
       COUNT(*) FILTER (WHERE price >= 1000000) AS rank3_bids,
       MIN(price) AS min_price,
       MAX(price) AS max_price,
       AVG(price) AS avg_price,
       SUM(price) AS sum_price
FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(ts), INTERVAL '1' DAY))
GROUP BY auction, window_start, window_end;

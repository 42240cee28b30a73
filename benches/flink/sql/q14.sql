-- q14, calculation: the bids whose price in euros (price × 0.908) lies strictly between
-- 1 000 000 and 50 000 000, with that price, whether they were made in the day (08:00-18:59),
-- at night (20:00-06:59) or at another time (UTC hours), and how many 'c's `extra` holds.
--
-- Flink's Nexmark q14 counts the 'c's with a Java UDF (count_char); a Python UDF would need
-- Beam, which is not installed, so the count is the length lost by removing every 'c', the same
-- number. Eddy's price is an f64, Flink's a DECIMAL(23, 3); both test the range exactly.
CREATE TEMPORARY TABLE nexmark_q14 (
    auction BIGINT, bidder BIGINT, price DECIMAL(23, 3), bid_time_type STRING,
    date_time BIGINT, extra STRING, c_counts BIGINT
) WITH ('connector' = 'blackhole');

INSERT INTO nexmark_q14
SELECT auction, bidder, 0.908 * price AS price,
       CASE
           WHEN HOUR(ts) >= 8 AND HOUR(ts) <= 18 THEN 'dayTime'
           WHEN HOUR(ts) <= 6 OR HOUR(ts) >= 20 THEN 'nightTime'
           ELSE 'otherTime'
       END AS bid_time_type,
       date_time, extra,
       CHAR_LENGTH(extra) - CHAR_LENGTH(REPLACE(extra, 'c', '')) AS c_counts
FROM bid
WHERE 0.908 * price > 1000000 AND 0.908 * price < 50000000;

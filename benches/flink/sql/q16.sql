-- q16, channel statistics report: for each channel and UTC day, q15's counters (bids, distinct
-- bidders and distinct auctions, in total and per price rank) and the latest minute of the day
-- with a bid on that channel ('HH:mm').
--
-- Flink's Nexmark q16 is an unbounded `GROUP BY channel, DATE_FORMAT(dateTime, 'yyyy-MM-dd')`,
-- an updating result. Eddy emits each (channel, day) once, final, when the watermark passes the
-- day's end; so here each day is a 1-day tumbling event-time window (UTC days), an append-only
-- result with Eddy's rows.
CREATE TEMPORARY TABLE nexmark_q16 (
    channel STRING, `day` STRING, `minute` STRING,
    total_bids BIGINT, rank1_bids BIGINT, rank2_bids BIGINT, rank3_bids BIGINT,
    total_bidders BIGINT, rank1_bidders BIGINT, rank2_bidders BIGINT, rank3_bidders BIGINT,
    total_auctions BIGINT, rank1_auctions BIGINT, rank2_auctions BIGINT, rank3_auctions BIGINT
) WITH ('connector' = 'blackhole');

INSERT INTO nexmark_q16
SELECT channel,
       DATE_FORMAT(window_start, 'yyyy-MM-dd') AS `day`,
       MAX(DATE_FORMAT(ts, 'HH:mm')) AS `minute`,
       COUNT(*) AS total_bids,
       COUNT(*) FILTER (WHERE price < 10000) AS rank1_bids,
       COUNT(*) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_bids,
       COUNT(*) FILTER (WHERE price >= 1000000) AS rank3_bids,
       COUNT(DISTINCT bidder) AS total_bidders,
       COUNT(DISTINCT bidder) FILTER (WHERE price < 10000) AS rank1_bidders,
       COUNT(DISTINCT bidder) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_bidders,
       COUNT(DISTINCT bidder) FILTER (WHERE price >= 1000000) AS rank3_bidders,
       COUNT(DISTINCT auction) AS total_auctions,
       COUNT(DISTINCT auction) FILTER (WHERE price < 10000) AS rank1_auctions,
       COUNT(DISTINCT auction) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_auctions,
       COUNT(DISTINCT auction) FILTER (WHERE price >= 1000000) AS rank3_auctions
FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(ts), INTERVAL '1' DAY))
GROUP BY channel, window_start, window_end;

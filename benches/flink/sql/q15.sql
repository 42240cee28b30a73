-- q15, bidding statistics report: for each UTC day, how many bids, distinct bidders and
-- distinct auctions, in total and per price rank (rank 1 below 10 000, rank 2 from 10 000 to
-- below 1 000 000, rank 3 the rest).
--
-- Flink's Nexmark q15 is an unbounded `GROUP BY DATE_FORMAT(dateTime, 'yyyy-MM-dd')`, an
-- updating result revised with every bid. Eddy emits each day once, final, when the watermark
-- passes the day's end; so here each day is a 1-day tumbling event-time window (UTC days, as
-- table.local-time-zone is UTC), an append-only result with Eddy's rows. Distinct counts are
-- exact on both sides.
CREATE TEMPORARY TABLE nexmark_q15 (
    `day` STRING,
    total_bids BIGINT, rank1_bids BIGINT, rank2_bids BIGINT, rank3_bids BIGINT,
    total_bidders BIGINT, rank1_bidders BIGINT, rank2_bidders BIGINT, rank3_bidders BIGINT,
    total_auctions BIGINT, rank1_auctions BIGINT, rank2_auctions BIGINT, rank3_auctions BIGINT
) WITH ('connector' = 'blackhole');

INSERT INTO nexmark_q15
SELECT DATE_FORMAT(window_start, 'yyyy-MM-dd') AS `day`,
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
GROUP BY window_start, window_end;

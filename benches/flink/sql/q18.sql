-- q18, find last bid: each bidder's last bid on each auction (by event time). An updating
-- result: when a later bid of a (bidder, auction) pair arrives, the previous one is retracted.
--
-- As Flink's Nexmark q18, a ROW_NUMBER over the event-time attribute, descending (Flink runs it
-- as a keep-last-row deduplication). Differences from Eddy: among two bids of a pair in the same
-- millisecond Flink keeps the later arrival, Eddy the smaller row (lower price, then channel,
-- url, extra), so the final rows are as many but such a pair may keep a different bid.
CREATE TEMPORARY TABLE nexmark_q18 (
    auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING,
    date_time BIGINT, extra STRING
) WITH ('connector' = 'blackhole');

INSERT INTO nexmark_q18
SELECT auction, bidder, price, channel, url, date_time, extra
FROM (
    SELECT *, ROW_NUMBER() OVER (PARTITION BY bidder, auction ORDER BY ts DESC) AS rank_number
    FROM bid
)
WHERE rank_number <= 1;

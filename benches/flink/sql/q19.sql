-- q19, auction top-10 price: each auction's 10 highest bids, with their rank (1 to 10). An
-- updating result: a bid entering an auction's top 10 retracts the rows whose rank changed and
-- the bid pushed out.
--
-- As Flink's Nexmark q19 (ROW_NUMBER by price descending, rank_number <= 10), with Eddy's order
-- among equal prices: the earlier bid first. Differences from Eddy: among bids of equal price
-- and time Flink's order is arrival order, Eddy's the smaller row (bidder, channel, url, extra);
-- the final rows are as many either way.
CREATE TEMPORARY TABLE nexmark_q19 (
    auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING,
    date_time BIGINT, extra STRING, rank_number BIGINT
) WITH ('connector' = 'blackhole');

INSERT INTO nexmark_q19
SELECT auction, bidder, price, channel, url, date_time, extra, rank_number
FROM (
    SELECT *,
           ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC, date_time ASC)
               AS rank_number
    FROM bid
)
WHERE rank_number <= 10;

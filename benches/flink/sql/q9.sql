-- q9, winning bids: each auction with its highest bid made while it was open (earliest first
-- among equal prices): an updating join and top-1.
--
-- Flink's Nexmark q9 ranks by `price DESC, dateTime ASC`. Flink 2.3.0 plans a top-1 ROW_NUMBER
-- over an append-only input with two ORDER BY columns as insert-only (changelogMode [I]) while
-- it emits each new winner as an UPDATE_AFTER with no UPDATE_BEFORE for the old one, so a
-- change-log reader keeps every interim winner (2546 rows for 1115 auctions over 20 000 events
-- at 10 000 events/s). One ORDER BY column gets the right change log: here the same order as
-- one DECIMAL key, price × 10^13 − date_time, descending (epoch ms are below 10^13). Eddy
-- breaks the remaining ties (same price and ms) by bidder, then extra; Flink by arrival.
CREATE TEMPORARY TABLE nexmark_q9 (
    id BIGINT, item_name STRING, description STRING, initial_bid BIGINT, reserve BIGINT,
    date_time BIGINT, expires BIGINT, seller BIGINT, category BIGINT, extra STRING,
    auction BIGINT, bidder BIGINT, price BIGINT, bid_date_time BIGINT, bid_extra STRING
) WITH ('connector' = 'blackhole');

INSERT INTO nexmark_q9
SELECT id, item_name, description, initial_bid, reserve, date_time, expires, seller, category,
       extra, auction, bidder, price, bid_date_time, bid_extra
FROM (
    SELECT A.id, A.item_name, A.description, A.initial_bid, A.reserve, A.date_time, A.expires,
           A.seller, A.category, A.extra, B.auction, B.bidder, B.price,
           B.date_time AS bid_date_time, B.extra AS bid_extra,
           ROW_NUMBER() OVER (
               PARTITION BY A.id
               ORDER BY CAST(B.price AS DECIMAL(38, 0)) * 10000000000000 - B.date_time DESC
           ) AS rownum
    FROM auction AS A, bid AS B
    WHERE A.id = B.auction AND B.date_time BETWEEN A.date_time AND A.expires
)
WHERE rownum <= 1;

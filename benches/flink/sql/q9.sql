-- q9, winning bids: each auction with its highest bid made while it was open (earliest first
-- among equal prices): an updating join and top-1.
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
           ROW_NUMBER() OVER (PARTITION BY A.id ORDER BY B.price DESC, B.date_time ASC) AS rownum
    FROM auction AS A, bid AS B
    WHERE A.id = B.auction AND B.date_time BETWEEN A.date_time AND A.expires
)
WHERE rownum <= 1;

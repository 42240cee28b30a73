-- q7, highest bid: in each 10-second tumbling window, the bids with the highest price.
CREATE TEMPORARY TABLE nexmark_q7 (
    auction BIGINT, price BIGINT, bidder BIGINT, ts TIMESTAMP_LTZ(3), extra STRING
) WITH ('connector' = 'blackhole');

INSERT INTO nexmark_q7
SELECT B.auction, B.price, B.bidder, B.ts, B.extra
FROM bid AS B
JOIN (
    SELECT MAX(price) AS maxprice, window_end AS ts
    FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(ts), INTERVAL '10' SECOND))
    GROUP BY window_start, window_end
) AS B1
ON B.price = B1.maxprice
WHERE B.ts BETWEEN B1.ts - INTERVAL '10' SECOND AND B1.ts;

-- q7, highest bid: in each 10-second tumbling window, the bids with the highest price.
--
-- Flink's Nexmark q7 keeps the bids `BETWEEN` the window's end − 10 s and its end, both
-- included, so a bid at the very ms a window ends (the next window's first) with the ended
-- window's top price would be reported for both; here the window is [end − 10 s, end), as Eddy's.
CREATE TEMPORARY TABLE nexmark_q7 (
    auction BIGINT, price BIGINT, bidder BIGINT, date_time BIGINT, extra STRING
) WITH ('connector' = 'blackhole');

INSERT INTO nexmark_q7
SELECT B.auction, B.price, B.bidder, B.date_time, B.extra
FROM bid AS B
JOIN (
    SELECT MAX(price) AS maxprice, window_end AS ts
    FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(ts), INTERVAL '10' SECOND))
    GROUP BY window_start, window_end
) AS B1
ON B.price = B1.maxprice
WHERE B.ts >= B1.ts - INTERVAL '10' SECOND AND B.ts < B1.ts;

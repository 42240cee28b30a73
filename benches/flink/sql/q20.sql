-- q20, expand bid with auction: every bid on an auction in category 10, with all the bid's and
-- the auction's columns.
--
-- As Flink's Nexmark q20: a regular inner join, append-only here (both inputs are), each bid
-- joined whichever of it and its auction arrives first. Flink keeps every bid and every
-- category-10 auction in its join state; Eddy keeps one entry per auction id (the category-10
-- auctions' columns, a marker for the others) and the bids whose auction it has not seen yet.
CREATE TEMPORARY TABLE nexmark_q20 (
    auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING,
    bid_date_time BIGINT, bid_extra STRING,
    item_name STRING, description STRING, initial_bid BIGINT, reserve BIGINT,
    auction_date_time BIGINT, expires BIGINT, seller BIGINT, category BIGINT,
    auction_extra STRING
) WITH ('connector' = 'blackhole');

INSERT INTO nexmark_q20
SELECT B.auction, B.bidder, B.price, B.channel, B.url, B.date_time, B.extra,
       A.item_name, A.description, A.initial_bid, A.reserve, A.date_time, A.expires, A.seller,
       A.category, A.extra
FROM bid AS B INNER JOIN auction AS A ON B.auction = A.id
WHERE A.category = 10;

-- q6, average selling price by seller: for each seller, the average closing price of its last
-- 10 closed auctions (fewer while it has closed fewer). An auction's closing price is its
-- winning bid's (the highest bid made while it was open, as q9); "last" is by expiry, then id.
-- An updating result: one row per seller, retracted and re-inserted as it changes.
--
-- Flink's Nexmark q6 (`AVG(final) OVER (PARTITION BY seller ORDER BY dateTime ROWS BETWEEN
-- 10 PRECEDING AND CURRENT ROW)`) does not run in Flink: an OVER window cannot read the
-- updating result of the winning-bid aggregate. This is Eddy's q6 instead, as Flink SQL can say
-- it: the winning prices (an updating aggregate over the regular join), a top-10 per seller by
-- expiry and id (ROW_NUMBER over an updating input), and their average (AVG of a BIGINT is an
-- integer, rounded down, as Eddy's). The final rows are Eddy's; the change log is not: Flink
-- revises an auction's price with every higher bid while it is open and so revises the seller's
-- average, where Eddy changes a seller's row once per auction, when the watermark passes the
-- auction's expiry.
CREATE TEMPORARY TABLE nexmark_q6 (seller BIGINT, avg_price BIGINT)
WITH ('connector' = 'blackhole');

INSERT INTO nexmark_q6
SELECT seller, AVG(final) AS avg_price
FROM (
    SELECT seller, final,
           ROW_NUMBER() OVER (PARTITION BY seller ORDER BY expires DESC, id DESC) AS rownum
    FROM (
        SELECT A.id, A.seller, A.expires, MAX(B.price) AS final
        FROM auction AS A, bid AS B
        WHERE A.id = B.auction AND B.date_time BETWEEN A.date_time AND A.expires
        GROUP BY A.id, A.seller, A.expires
    )
)
WHERE rownum <= 10
GROUP BY seller;

-- q13, bounded side input join: every bid with the value a side table holds for
-- `auction % 10000`; bids whose key is not in the table are dropped (an inner join).
--
-- run_query.py creates `side_input` (`key`, `value`) from a CSV file it writes: keys 0..9999,
-- each valued by its decimal string, Eddy's default table. Flink's Nexmark q13 joins
-- `FOR SYSTEM_TIME AS OF` the bid's processing time, a lookup, which needs a lookup source; the
-- filesystem connector is not one. So this is an event-time temporal join against the table as
-- a versioned table (primary key `key`, every row valid from epoch 0): each bid is joined when
-- the watermark passes it with the one version of its key. The rows are Eddy's; the state is
-- the table plus the bids the watermark has not passed yet (Eddy keeps only the table).
CREATE TEMPORARY TABLE nexmark_q13 (
    auction BIGINT, bidder BIGINT, price BIGINT, date_time BIGINT, `value` STRING
) WITH ('connector' = 'blackhole');

INSERT INTO nexmark_q13
SELECT B.auction, B.bidder, B.price, B.date_time, S.`value`
FROM bid AS B
JOIN side_input FOR SYSTEM_TIME AS OF B.ts AS S
ON MOD(B.auction, 10000) = S.`key`;

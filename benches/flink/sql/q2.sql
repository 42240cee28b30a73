-- q2, selection: the auction and price of the bids whose auction id is a multiple of 123.
CREATE TEMPORARY TABLE nexmark_q2 (auction BIGINT, price BIGINT) WITH ('connector' = 'blackhole');

INSERT INTO nexmark_q2
SELECT auction, price FROM bid WHERE MOD(auction, 123) = 0;

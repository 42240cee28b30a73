-- q0, pass-through: every bid, unchanged.
CREATE TEMPORARY TABLE nexmark_q0 (
    auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING,
    date_time BIGINT, extra STRING
) WITH ('connector' = 'blackhole');

INSERT INTO nexmark_q0
SELECT auction, bidder, price, channel, url, date_time, extra FROM bid;

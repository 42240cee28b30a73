-- q21, add channel id: every bid with a channel id, when it has one: Apple 0, Google 1,
-- Facebook 2 and Baidu 3 (names compared in lower case), else the `channel_id=` parameter of the
-- bid's URL (the first one at the URL's start or after a '&', up to the next '&'); bids with
-- neither are dropped. As Flink's Nexmark q21; Eddy finds the parameter without a regex.
CREATE TEMPORARY TABLE nexmark_q21 (
    auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, channel_id STRING
) WITH ('connector' = 'blackhole');

INSERT INTO nexmark_q21
SELECT auction, bidder, price, channel,
       CASE
           WHEN LOWER(channel) = 'apple' THEN '0'
           WHEN LOWER(channel) = 'google' THEN '1'
           WHEN LOWER(channel) = 'facebook' THEN '2'
           WHEN LOWER(channel) = 'baidu' THEN '3'
           ELSE REGEXP_EXTRACT(url, '(&|^)channel_id=([^&]*)', 2)
       END AS channel_id
FROM bid
WHERE REGEXP_EXTRACT(url, '(&|^)channel_id=([^&]*)', 2) IS NOT NULL
   OR LOWER(channel) IN ('apple', 'google', 'facebook', 'baidu');

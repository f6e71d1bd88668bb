-- Success-rate views. Each reads its tables with FINAL, so replays and repeated sends count once.

-- Every send with what came back for it: its RECEIPT (by send_id; for the account-level APP
-- send, a RECEIPT from any of the message's device sends) and the READ of its message on its
-- channel (a READ from any device of the account counts for APP). `delivery` marks the sends
-- that reach a person or device: not probes, not the account-level APP record (its devices'
-- sends are the deliveries).
CREATE VIEW IF NOT EXISTS send_acks AS
SELECT
    s.send_id AS send_id, s.message_id AS message_id, s.account_id AS account_id,
    s.channel AS channel, s.device_id AS device_id, s.route AS route, s.reason AS reason,
    s.attempt AS attempt, s.importance AS importance, s.sent_at AS sent_at,
    s.reason != 'PROBE' AND NOT (s.channel = 'APP' AND s.device_id = '') AS delivery,
    r.send_id != '' OR (s.channel = 'APP' AND s.device_id = '' AND ar.message_id != '')
        AS received,
    if(received, if(r.send_id != '', r.receipt_at, ar.receipt_at), NULL) AS receipt_at,
    rd.message_id != '' AS read,
    if(read, rd.read_at, NULL) AS read_at
FROM (SELECT * FROM sends FINAL) AS s
LEFT JOIN
(
    SELECT send_id, min(acked_at) AS receipt_at
    FROM acks FINAL WHERE kind = 'RECEIPT' AND send_id != '' GROUP BY send_id
) AS r ON r.send_id = s.send_id
LEFT JOIN
(
    SELECT account_id, message_id, min(acked_at) AS receipt_at
    FROM acks FINAL WHERE kind = 'RECEIPT' AND channel = 'APP' GROUP BY account_id, message_id
) AS ar ON ar.account_id = s.account_id AND ar.message_id = s.message_id
LEFT JOIN
(
    SELECT account_id, message_id, channel, min(acked_at) AS read_at
    FROM acks FINAL WHERE kind = 'READ' GROUP BY account_id, message_id, channel
) AS rd ON rd.account_id = s.account_id AND rd.message_id = s.message_id
       AND rd.channel = s.channel;

-- Per channel and hour of sending: the channel sends Method A decided (FANOUT, PRIMARY,
-- ESCALATION), how many were received and read, and their rates.
CREATE VIEW IF NOT EXISTS channel_hourly AS
SELECT
    toStartOfHour(sent_at) AS hour, channel,
    count() AS sends, countIf(received) AS receipts, countIf(read) AS reads,
    receipts / sends AS receipt_rate, reads / sends AS read_rate
FROM send_acks WHERE reason IN ('FANOUT', 'PRIMARY', 'ESCALATION')
GROUP BY hour, channel;

-- Per push route and hour of sending (APP sends to devices, probes excluded).
CREATE VIEW IF NOT EXISTS route_hourly AS
SELECT
    toStartOfHour(sent_at) AS hour, route,
    count() AS sends, countIf(received) AS receipts, countIf(read) AS reads,
    receipts / sends AS receipt_rate, reads / sends AS read_rate
FROM send_acks WHERE channel = 'APP' AND route != '' AND delivery
GROUP BY hour, route;

-- Per device and route: Method B's measure, probes acknowledged by a RECEIPT over probes sent.
CREATE VIEW IF NOT EXISTS device_routes AS
SELECT
    device_id, any(account_id) AS account_id, route,
    countIf(reason = 'PROBE') AS probes, countIf(reason = 'PROBE' AND received) AS probes_acked,
    if(probes = 0, NULL, probes_acked / probes) AS success_rate,
    countIf(reason != 'PROBE') AS sends, countIf(reason != 'PROBE' AND received) AS receipts,
    max(sent_at) AS last_sent_at
FROM send_acks WHERE channel = 'APP' AND route != ''
GROUP BY device_id, route;

-- Per manufacturer, model and route across every device: what the fleet receives on.
CREATE VIEW IF NOT EXISTS manufacturer_routes AS
SELECT
    d.manufacturer AS manufacturer, d.model AS model, a.route AS route,
    uniqExact(a.device_id) AS devices, count() AS sends, countIf(a.received) AS receipts,
    receipts / sends AS success_rate,
    countIf(a.reason = 'PROBE') AS probes, countIf(a.reason = 'PROBE' AND a.received) AS probes_acked
FROM send_acks AS a
INNER JOIN (SELECT device_id, manufacturer, model FROM devices FINAL) AS d
    ON d.device_id = a.device_id
WHERE a.channel = 'APP' AND a.route != ''
GROUP BY manufacturer, model, route;

-- Per message: its channel sends (Method A's decisions), SMS among them, device deliveries,
-- channels used, first channel read, time to first read, escalated or not, and deliveries
-- made after it was already read.
CREATE VIEW IF NOT EXISTS message_summary AS
SELECT
    q.account_id AS account_id, q.message_id AS message_id, q.importance AS importance,
    q.campaign_id AS campaign_id, q.created_at AS created_at,
    s.sends AS sends, s.sms_sends AS sms_sends, s.device_sends AS device_sends,
    s.channels AS channels,
    rd.message_id != '' AS read,
    if(read, rd.first_read_channel, NULL) AS first_read_channel,
    if(read, rd.first_read_at, NULL) AS first_read_at,
    if(read, dateDiff('millisecond', q.created_at, rd.first_read_at), NULL) AS time_to_read_ms,
    e.escalations > 0 AS escalated,
    if(read, s2.after_read, 0) AS sends_after_read
FROM (SELECT * FROM requests FINAL) AS q
LEFT JOIN
(
    SELECT account_id, message_id,
           countIf(reason IN ('FANOUT', 'PRIMARY', 'ESCALATION')) AS sends,
           countIf(channel = 'SMS') AS sms_sends,
           countIf(reason IN ('ORIGINAL_ROUTE', 'FALLBACK_ROUTE')) AS device_sends,
           groupUniqArray(channel) AS channels
    FROM sends FINAL WHERE reason != 'PROBE' GROUP BY account_id, message_id
) AS s ON s.account_id = q.account_id AND s.message_id = q.message_id
LEFT JOIN
(
    SELECT account_id, message_id, min(acked_at) AS first_read_at,
           argMin(channel, acked_at) AS first_read_channel
    FROM acks FINAL WHERE kind = 'READ' GROUP BY account_id, message_id
) AS rd ON rd.account_id = q.account_id AND rd.message_id = q.message_id
LEFT JOIN
(
    SELECT account_id, message_id, count() AS escalations
    FROM escalations FINAL GROUP BY account_id, message_id
) AS e ON e.account_id = q.account_id AND e.message_id = q.message_id
LEFT JOIN
(
    SELECT x.account_id, x.message_id, countIf(x.sent_at > y.first_read) AS after_read
    FROM (SELECT account_id, message_id, sent_at FROM sends FINAL
          WHERE reason != 'PROBE' AND NOT (channel = 'APP' AND device_id = '')) AS x
    INNER JOIN
    (
        SELECT account_id, message_id, min(acked_at) AS first_read
        FROM acks FINAL WHERE kind = 'READ' GROUP BY account_id, message_id
    ) AS y ON y.account_id = x.account_id AND y.message_id = x.message_id
    GROUP BY x.account_id, x.message_id
) AS s2 ON s2.account_id = q.account_id AND s2.message_id = q.message_id;

-- Per campaign: messages requested, devices targeted and acknowledged, ratio, the decision,
-- and the fallback sends it caused.
CREATE VIEW IF NOT EXISTS campaign_summary AS
SELECT
    c.campaign_id AS campaign_id, m.messages AS messages, c.targeted AS targeted,
    c.acked AS acked, c.ratio AS ratio, c.threshold AS threshold, c.fallback AS fallback,
    f.fallback_sends AS fallback_sends, c.decided_at AS decided_at
FROM (SELECT * FROM campaign_decisions FINAL) AS c
LEFT JOIN
(
    SELECT assumeNotNull(campaign_id) AS campaign_id, count() AS messages
    FROM requests FINAL WHERE campaign_id IS NOT NULL GROUP BY campaign_id
) AS m ON m.campaign_id = c.campaign_id
LEFT JOIN
(
    SELECT assumeNotNull(q.campaign_id) AS campaign_id, count() AS fallback_sends
    FROM (SELECT * FROM sends FINAL WHERE reason = 'FALLBACK_ROUTE') AS s
    INNER JOIN (SELECT account_id, message_id, campaign_id FROM requests FINAL
                WHERE campaign_id IS NOT NULL) AS q
        ON q.account_id = s.account_id AND q.message_id = s.message_id
    GROUP BY campaign_id
) AS f ON f.campaign_id = c.campaign_id;

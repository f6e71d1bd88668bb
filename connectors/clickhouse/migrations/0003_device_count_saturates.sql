-- requests.device_count is a UInt16 derived from the request's device_ids: a request naming
-- more than 65535 devices (from a producer that skipped the SDK's caps) wrapped around (70000
-- became 4464). It saturates at 65535 instead; the caps (README "Limits") allow 100.

ALTER TABLE requests MODIFY COLUMN device_count UInt16 DEFAULT least(length(device_ids), 65535);

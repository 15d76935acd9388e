-- Tier evaluation may give every client a new tier in one run (a first run, a new ladder). Such an update costs
-- little when it is HOT: the new row version goes on the same page and no index gains an entry. That needs two
-- things, measured on a million clients (`scripts/bench --only batch`): no index on a column the update changes,
-- and room on the page. Without them a first run spent 31 to 35 s writing six index entries per client; with
-- them, 20 to 25 s, nearly every update HOT.
--  * clients_tier goes: no query looks clients up by tier alone (the client list filters its creation-ordered
--    walk; reports count all clients), and a tier code's rename cascades by a scan, a rare staff action.
--  * Pages are filled to half: a page's every client can then move in one run. A client row is small (a
--    million take 250 MB); reads by id are unchanged. Pages written before this keep their fill until their
--    rows first move and VACUUM reclaims the old versions.
DROP INDEX clients_tier;
ALTER TABLE clients SET (fillfactor = 50);

-- Redis's own clock, as exchange.lua's claim needs it when the daemon sent no time: a claim parked behind
-- a watch (adaptive_scheduler.arrivals) runs when a job lands, maybe hours after it was sent.

-- RQ's ISO text of a time ("%Y-%m-%dT%H:%M:%S.ffffffZ", UTC). Redis's Lua has no os.date: the date
-- comes from the day count (H. Hinnant's civil_from_days).
local function rq_iso(whole, micros)
  local days = math.floor(whole / 86400)
  local of_day = whole - days * 86400
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local day = doy - math.floor((153 * mp + 2) / 5) + 1
  local month = mp < 10 and mp + 3 or mp - 9
  local year = yoe + era * 400 + (month <= 2 and 1 or 0)
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d.%06dZ', year, month, day,
    math.floor(of_day / 3600), math.floor(of_day % 3600 / 60), of_day % 60, micros)
end

-- now: unix seconds and RQ's ISO text
local function server_time()
  local t = redis.call('TIME')
  local whole, micros = tonumber(t[1]), tonumber(t[2])
  return whole + micros / 1000000, rq_iso(whole, micros)
end

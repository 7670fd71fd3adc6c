-- Admission of byproduct events against each session's ingest state, atomically (one script run).
--
-- ARGV[1] = mode: "all" (admit every event or none) or "prefix" (stop at the first bad event and
-- admit those before it); ARGV[2] = TTL of the state in seconds; then 8 values per event:
-- session_id, event_id, seq, t_ms, project_id, is_session_start ("1"/"0"), owner (the annotator a
-- session_start names; "" otherwise), actor (the annotator the caller is limited to; "" for any).
--
-- State per session (hash tag {sid} keeps a session's keys on one node):
--   bp:{sid}:m  hash   p = project, o = owner (annotator), max = highest seq, tmax = its t_ms,
--                      n = distinct events, miss = JSON list of missing [first, last] seq ranges below max
--   bp:{sid}:q  zset   member event_id, score seq   (which id holds a seq, which seq an id holds)
--   bp:{sid}:e  hash   event_id -> t_ms            (neighbour times for out-of-order events)
--
-- Returns {statuses, gaps}: a status per event, "N" (new), "D" (duplicate: same id at the same
-- seq) or "E|field|REASON|message"; gaps = {sid, json ranges, ...} for touched sessions with gaps.

local mode, ttl = ARGV[1], tonumber(ARGV[2])
local count = (#ARGV - 2) / 8
local meta, pend, pend_eid, pend_seq, order = {}, {}, {}, {}, {}

local function key(sid, suffix) return 'bp:{' .. sid .. '}:' .. suffix end

local function load(sid)
  local m = meta[sid]
  if m then return m end
  local v = redis.call('HMGET', key(sid, 'm'), 'p', 'max', 'tmax', 'miss', 'n', 'o')
  m = {p = v[1], max = tonumber(v[2]) or 0, tmax = tonumber(v[3]) or 0,
       miss = v[4] and cjson.decode(v[4]) or {}, n = tonumber(v[5]) or 0, o = v[6] or ''}
  meta[sid], pend[sid], pend_eid[sid], pend_seq[sid] = m, {}, {}, {}
  order[#order + 1] = sid
  return m
end

local function seq_of(sid, eid)
  local s = pend_eid[sid][eid]
  if s then return s end
  local score = redis.call('ZSCORE', key(sid, 'q'), eid)
  return score and tonumber(score) or nil
end

local function eid_at(sid, seq)
  local e = pend_seq[sid][seq]
  if e then return e end
  return redis.call('ZRANGEBYSCORE', key(sid, 'q'), seq, seq, 'LIMIT', 0, 1)[1]
end

-- t_ms of the nearest stored or pending event below (dir = -1) or above (dir = 1) seq, or nil.
local function neighbour_t(sid, seq, dir)
  local r
  if dir < 0 then
    r = redis.call('ZREVRANGEBYSCORE', key(sid, 'q'), '(' .. seq, '-inf', 'WITHSCORES', 'LIMIT', 0, 1)
  else
    r = redis.call('ZRANGEBYSCORE', key(sid, 'q'), '(' .. seq, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  end
  local best_seq, best_t = nil, nil
  if r[1] then
    best_seq = tonumber(r[2])
    best_t = tonumber(redis.call('HGET', key(sid, 'e'), r[1]))
  end
  for _, p in ipairs(pend[sid]) do
    if (dir < 0 and p[1] < seq and (not best_seq or p[1] > best_seq))
        or (dir > 0 and p[1] > seq and (not best_seq or p[1] < best_seq)) then
      best_seq, best_t = p[1], p[3]
    end
  end
  return best_t, best_seq
end

local function fill_gap(m, seq)
  if seq > m.max then
    if seq > m.max + 1 then m.miss[#m.miss + 1] = {m.max + 1, seq - 1} end
    return
  end
  for i, r in ipairs(m.miss) do
    if r[1] <= seq and seq <= r[2] then
      table.remove(m.miss, i)
      if r[1] < seq then table.insert(m.miss, i, {r[1], seq - 1}); i = i + 1 end
      if seq < r[2] then table.insert(m.miss, i, {seq + 1, r[2]}) end
      return
    end
  end
end

local function admit(sid, eid, seq, t, project, start, owner, actor)
  local m = load(sid)
  if not m.p and not start then
    return 'E|session_id|UNKNOWN_SESSION|session ' .. sid .. ' has no recorded session_start (seq 1)'
  end
  if m.p and m.p ~= project then
    return 'E|project_id|PROJECT_MISMATCH|session ' .. sid .. ' belongs to another project'
  end
  if actor ~= '' and ((m.p and m.o ~= actor) or (not m.p and owner ~= actor)) then
    return 'E|session_id|NOT_SESSION_OWNER|session ' .. sid .. ' belongs to another annotator'
  end
  local held = seq_of(sid, eid)
  if held then
    if held == seq then return 'D' end
    return 'E|event_id|EVENT_ID_REUSED|event_id already recorded at seq ' .. string.format('%d', held)
  end
  local previous_t, next_t, previous_seq, next_seq
  if seq > m.max then
    if m.max > 0 then previous_t, previous_seq = m.tmax, m.max end
  else
    if eid_at(sid, seq) then
      return 'E|seq|SEQ_CONFLICT|seq ' .. string.format('%d', seq) .. ' already holds another event_id'
    end
    previous_t, previous_seq = neighbour_t(sid, seq, -1)
    next_t, next_seq = neighbour_t(sid, seq, 1)
  end
  if previous_t and t < previous_t then
    return string.format('E|t_ms|TIME_BACKWARDS|t_ms %d is before t_ms %d of seq %d', t, previous_t, previous_seq)
  end
  if next_t and t > next_t then
    return string.format('E|t_ms|TIME_BACKWARDS|t_ms %d is after t_ms %d of seq %d', t, next_t, next_seq)
  end
  if start then m.p, m.o = project, owner end
  fill_gap(m, seq)
  if seq > m.max then m.max, m.tmax = seq, t end
  m.n = m.n + 1
  local p = pend[sid]
  p[#p + 1] = {seq, eid, t}
  pend_eid[sid][eid] = seq
  pend_seq[sid][seq] = eid
  return 'N'
end

local statuses, failed = {}, false
for i = 0, count - 1 do
  local b = 3 + i * 8
  local status = admit(ARGV[b], ARGV[b + 1], tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3]), ARGV[b + 4],
                       ARGV[b + 5] == '1', ARGV[b + 6], ARGV[b + 7])
  statuses[#statuses + 1] = status
  if string.sub(status, 1, 1) == 'E' then
    failed = true
    if mode == 'prefix' then break end
  end
end

if failed and mode == 'all' then return {statuses, {}} end

local gaps = {}
for _, sid in ipairs(order) do
  local m, p = meta[sid], pend[sid]
  if #p > 0 then
    for first = 1, #p, 1000 do
      local zargs, hargs = {}, {}
      for j = first, math.min(first + 999, #p) do
        zargs[#zargs + 1] = p[j][1]; zargs[#zargs + 1] = p[j][2]
        hargs[#hargs + 1] = p[j][2]; hargs[#hargs + 1] = p[j][3]
      end
      redis.call('ZADD', key(sid, 'q'), unpack(zargs))
      redis.call('HSET', key(sid, 'e'), unpack(hargs))
    end
    redis.call('HSET', key(sid, 'm'), 'p', m.p, 'o', m.o, 'max', string.format('%d', m.max),
               'tmax', string.format('%d', m.tmax), 'n', m.n, 'miss', cjson.encode(m.miss))
  end
  if m.p then
    for _, suffix in ipairs({'m', 'q', 'e'}) do redis.call('EXPIRE', key(sid, suffix), ttl) end
  end
  if #m.miss > 0 then gaps[#gaps + 1] = sid; gaps[#gaps + 1] = cjson.encode(m.miss) end
end
return {statuses, gaps}

-- Create zip children: each child hash is written and LPUSHed onto the child queue only when
-- its key does not exist yet, so a fan-out retried after a crash creates no duplicates.
-- KEYS[1] child queue       {queue}
-- ARGV[1] n_common          number of common field/value pairs that follow
-- ARGV[2 .. 1+2n]           common field1, value1, ... (inherited fields, parent, status, ...)
-- ARGV[2+2n ..]             triples: child key, input_file_name, original_name
-- Reply: number of children created now (existing ones are left alone, not pushed again)
local nc = tonumber(ARGV[1])
local common = {}
for i = 2, 1 + 2 * nc do common[#common + 1] = ARGV[i] end
local created = 0
for i = 2 + 2 * nc, #ARGV, 3 do
  local k = ARGV[i]
  if redis.call('EXISTS', k) == 0 then
    redis.call('HSET', k, 'input_file_name', ARGV[i + 1], 'original_name', ARGV[i + 2], unpack(common))
    redis.call('LPUSH', KEYS[1], k)
    created = created + 1
  end
end
return created

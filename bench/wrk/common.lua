-- Shared by every scenario script (each one starts with dofile of this file).
-- Scenario scripts take their arguments after wrk's "--": args[1] a file of tokens, one a
-- line ("-" for none), args[2] wrk's thread count; the rest is theirs.
--
-- done() prints one line, WRKJSON {...}, that bench/harness.py reads back: the request
-- count, latency percentiles in microseconds, wrk's own error counts and "bad", the
-- responses a scenario's response() refused (a global per thread, read through thread:get),
-- and "first_bad", the status and start of the body of the first of them.

local threads = {}
local next_id = 0
bad = 0
first_bad = ""

-- Count a refused response; keep the first one's status and body for the report.
function refuse(status, body)
  if bad == 0 then
    first_bad = status .. " " .. string.gsub(string.sub(body or "", 1, 160), '[^%w%s_:,.-]', "")
  end
  bad = bad + 1
end

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

-- This thread's share of a file's lines (line i goes to thread i mod nthreads).
function read_lines(path, nthreads)
  local lines, i = {}, 0
  if path == nil or path == "-" then
    return lines
  end
  for line in io.lines(path) do
    if line ~= "" then
      if i % nthreads == id then
        lines[#lines + 1] = line
      end
      i = i + 1
    end
  end
  return lines
end

-- A function that returns the lines in turn, over and over; nil when there are none.
function cycler(lines)
  local n = 0
  return function()
    if #lines == 0 then
      return nil
    end
    n = n % #lines + 1
    return lines[n]
  end
end

function done(summary, latency, requests)
  local refused, first = 0, ""
  for _, thread in ipairs(threads) do
    refused = refused + (thread:get("bad") or 0)
    if first == "" then
      first = thread:get("first_bad") or ""
    end
  end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"max_us":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,' ..
    '"status_errors":%d,"timeouts":%d,"bad":%d,"first_bad":"%s"}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, e.connect, e.read, e.write, e.status, e.timeout,
    refused, first))
end

-- Fetch one URL and print its body: the classic asyncio/aiohttp example,
--
--   async def fetch_url(url):
--       async with aiohttp.ClientSession() as session:
--           async with session.get(url) as response:
--               return await response.text()
--   asyncio.run(fetch_url("https://example.com"))
--
-- in lunio:
--
--   lua5.4 examples/fetch_url.lua http://127.0.0.1:8080/small.txt
local lunio = require "lunio"

local function fetch_url(url)
  local session <close> = lunio.http.Session()
  local response <close> = session:get(url)
  return response:text()
end

local url = arg and arg[1]
if not url then
  io.stderr:write("usage: fetch_url.lua URL\n")
  os.exit(2)
end

local ok, result = lunio.pcall(lunio.run, fetch_url, url)
if not ok then
  -- a lunio error prints as "kind: message" plus a traceback; keep the first
  local msg = lunio.is_error(result) and (result.kind .. ": " .. result.message)
    or tostring(result)
  io.stderr:write("fetch_url: ", msg, "\n")
  os.exit(1)
end
io.write(result)

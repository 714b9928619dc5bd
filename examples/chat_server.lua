-- A chat server: every line a client sends goes to every other client.
--
--   lua5.4 examples/chat_server.lua [port]     (default 8008; 0 = any free port)
--
-- Chat from a few terminals with `nc 127.0.0.1 8008`: the first line you
-- send is your name. "/who" lists who is here, "/quit" leaves.
--
-- Each client has a task that reads its lines (the connection handler) and
-- a task that writes its outbox, a bounded Queue. Broadcasting only puts
-- into outboxes, so a client that stops reading cannot stall the others:
-- when its outbox is full it is disconnected.
local lunio = require "lunio"

local port = math.tointeger(tonumber(arg[1] or "8008"))
if not port then
  io.stderr:write("usage: chat_server.lua [port]\n")
  os.exit(2)
end

local OUTBOX = 100 -- lines a client may fall behind before it is dropped

local clients = {} -- name -> client {name=, stream=, outbox=}

local function send(client, line)
  local ok = lunio.pcall(client.outbox.put_nowait, client.outbox, line .. "\n")
  if not ok then -- "queue_full": this client does not keep up
    client.stream:abort()
  end
end

local function broadcast(from, line)
  for _, client in pairs(clients) do
    if client ~= from then send(client, line) end
  end
end

-- Writes the outbox until it is shut down and empty (where iter() ends
-- the loop). A client that went away, or was dropped, makes write raise:
-- nothing more to do for it either.
local function writer(client)
  lunio.pcall(function()
    for line in client.outbox:iter() do
      client.stream:write(line)
    end
  end)
end

local function names()
  local list = {}
  for n in pairs(clients) do list[#list + 1] = n end
  table.sort(list)
  return list
end

local function ask_name(stream)
  stream:write("Welcome! Your name: ")
  while true do
    local name = stream:read_line()
    if name == nil then return nil end
    name = name:gsub("^%s+", ""):gsub("%s+$", "")
    if name:match("^[%w_%-]+$") and not clients[name] then return name end
    stream:write("Taken or not a name (letters, digits, _ and -). Your name: ")
  end
end

local function handle(stream)
  local name = ask_name(stream)
  if not name then return end
  local client = { name = name, stream = stream, outbox = lunio.Queue(OUTBOX) }
  local tg <close> = lunio.TaskGroup()
  tg:spawn(writer, client)
  send(client, ("* hello %s, %d other(s) here; /who, /quit"):format(name, #names()))
  clients[name] = client
  broadcast(client, "* " .. name .. " joins")
  local ok, err = lunio.pcall(function()
    for line in stream:lines() do
      if line == "/quit" then break
      elseif line == "/who" then
        send(client, "* here: " .. table.concat(names(), ", "))
      elseif line ~= "" then
        broadcast(client, name .. ": " .. line)
      end
    end
  end)
  clients[name] = nil
  broadcast(client, "* " .. name .. " leaves")
  client.outbox:shutdown() -- the writer sends what is queued, then ends
  if not ok then print(("%s: %s"):format(name, tostring(err))) end
end

local ok, err = pcall(lunio.run, function()
  local server <close> = lunio.start_server(handle, nil, port)
  print(("chat server on port %d"):format(server.port))
  io.stdout:flush()
  server:serve_forever()
end)
if not ok and not lunio.is_error(err, "interrupted") then error(err, 0) end
print("stopped")

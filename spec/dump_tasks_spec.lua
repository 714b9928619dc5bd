-- lunio.dump_tasks() (lua/lunio/init.lua): every task not done, with its
-- name, state, creation site (when the core records it) and where it waits.
local lunio = require "lunio"
local h = require "helper"
local async = h.async

local SRC = debug.getinfo(1, "S").short_src

-- The dump split into blocks: {head = "name (state)", lines = {...}}.
local function blocks(text)
  local header, list, cur = nil, {}, nil
  for line in text:gmatch("[^\n]+") do
    if header == nil then
      header = line
    elseif line:sub(1, 1) ~= " " then
      cur = { head = line, lines = {} }
      list[#list + 1] = cur
    else
      cur.lines[#cur.lines + 1] = line
    end
  end
  return header, list
end

describe("lunio.dump_tasks", function()
  it("lists every task not done: name, state, where it waits", async(function()
    local sleeper = lunio.spawn(function()
      lunio.sleep(10) -- waits here
    end)
    local sleep_line = debug.getinfo(1, "l").currentline - 2
    sleeper:set_name("sleeper")
    local ev = lunio.Event()
    local waiter = lunio.spawn(function() ev:wait() end)
    local wait_line = debug.getinfo(1, "l").currentline - 1
    lunio.sleep(0)
    local fresh = lunio.spawn(print) -- not started yet

    local text = lunio.dump_tasks()
    assert.is_string(text)
    local header, list = blocks(text)
    assert.equal("4 task(s)", header)
    local by_head = {}
    for _, b in ipairs(list) do by_head[b.head] = b.lines end

    local me = by_head[lunio.current_task().name .. " (running)"]
    assert.is_table(me, text)
    assert.equal("  waiting at: running now", me[2])

    local s = by_head["sleeper (waiting)"]
    assert.is_table(s, text)
    assert.equal("  waiting at:", s[2])
    -- (the name Lua finds for the C function depends on table order)
    assert.matches("^    %[C%]: in function 'lunio[%w%.]*%.sleep'$", s[3])
    assert.equal(("    %s:%d: in function <%s:%d>"):format(SRC, sleep_line, SRC,
      sleep_line - 1), s[4])
    assert.is_nil(s[5]) -- no "[C]: in ?" tail

    local w = by_head[waiter.name .. " (waiting)"]
    assert.is_table(w, text)
    local found = false
    for _, l in ipairs(w) do
      if l:find(("%s:%d:"):format(SRC, wait_line), 1, true) then found = true end
    end
    assert.is_true(found, text)

    local f = by_head[fresh.name .. " (pending)"]
    assert.is_table(f, text)
    assert.equal("  waiting at: not started yet", f[2])

    sleeper:cancel()
    waiter:cancel()
    lunio.wait({ sleeper, waiter, fresh })
  end))

  it("says where each task was created when the core records it", async(function()
    local t = lunio.spawn(lunio.sleep, 10)
    local line = debug.getinfo(1, "l").currentline - 1
    lunio.sleep(0)
    local _, list = blocks(lunio.dump_tasks())
    local mine
    for _, b in ipairs(list) do
      if b.head == t.name .. " (waiting)" then mine = b.lines end
    end
    if t.created_at ~= nil and t:created_at() then
      -- the core recorded it (debug mode): the traceback of the spawn
      assert.equal("  created at:", mine[1])
      local where = table.concat(mine, "\n")
      assert.truthy(where:find(("%s:%d:"):format(SRC, line), 1, true), where)
    elseif t.created_at ~= nil then
      assert.equal("  created at: unknown (recorded with LUNIO_DEBUG=1)", mine[1])
    else
      assert.equal("  created at: unknown", mine[1])
    end
    t:cancel()
    lunio.wait({ t })
  end))

  it("outside a loop dumps the default loop's tasks; takes a loop", function()
    assert.matches("^%d+ task%(s%)", lunio.dump_tasks())
    local loop = lunio.new_loop()
    local t = loop:create_task(print)
    local header, list = blocks(lunio.dump_tasks(loop))
    assert.equal("1 task(s)", header)
    assert.equal(t.name .. " (pending)", list[1].head)
    assert.equal("  waiting at: not started yet", list[1].lines[#list[1].lines])
    loop:close()
    assert.has_error(function() lunio.dump_tasks(42) end,
      "bad argument #1 to 'dump_tasks' (lunio.Loop expected, got number)")
  end)
end)
